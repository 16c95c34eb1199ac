"""User-facing errors: one line, naming the file/field and what was expected."""


class StudyError(Exception):
    """Base class; the CLI prints ``str(exc)`` on one line and exits with status 2."""


class ManifestError(StudyError):
    pass


class WeightsMissing(StudyError):
    pass


class WeightsRefused(WeightsMissing):
    """A weight file is present but not proven safe to hand to pyiqa (bench.metrics.verify)."""


class WeightsUnreadable(WeightsMissing):
    """A weight file is present but damaged (truncated download, disk full): torch cannot read it at
    all, so it is not a safety refusal; the metric is unavailable (bench.metrics.verify)."""


class UnknownMetric(StudyError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class StoreError(StudyError):
    pass
