"""Full-reference evaluation protocols: which pyiqa options and border crop an FR score uses.

``hggt`` (default) is HGGT's SR evaluation (PosNegGTSR ``scripts/metrics/calculate_multigt_labeled_*.py``,
summarised in method.md §6): **crop border 4, RGB** for every FR metric. pyiqa's own defaults
differ and are easy to mix up: ``ssim`` is Y-channel (``ssimc`` is RGB), ``psnr`` is RGB
(``psnry`` is Y), and nothing is cropped. So under ``hggt``:

* ``psnr`` and ``ssim`` get pyiqa's native options ``crop_border=4, test_y_channel=False``
  (``psnry``/``ssimc`` keep their channel and get ``crop_border=4``);
* FR metrics whose pyiqa arch has no ``crop_border`` option (lpips, stlpips, dists, ...) get
  the same 4-pixel border removed from both images by the engine before the call
  (``engine_crop_border`` in the config).

``pyiqa`` uses pyiqa's defaults unchanged (no crop). The protocol name and every option go
into the metric configuration, hence into the score key: scores of different protocols never
mix. User kwargs override the protocol's.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import StudyError

HGGT_CROP = 4
PROTOCOLS = ("hggt", "pyiqa")
# FR metrics whose pyiqa arch takes crop_border (pyiqa 0.1.16 archs/psnr_arch.py::PSNR,
# archs/ssim_arch.py::SSIM); checked against the arch signatures by tests/test_scoring_fr.py.
NATIVE_CROP = ("psnr", "psnry", "ssim", "ssimc")
_CHANNEL = {"psnr": False, "ssim": False}  # test_y_channel under the RGB protocol


def fr_options(name: str, protocol: str = "hggt", user_kwargs: dict | None = None) -> tuple[dict, int]:
    """(pyiqa kwargs, engine border crop) for FR metric ``name`` under ``protocol``."""
    if protocol not in PROTOCOLS:
        raise StudyError(f"FR protocol '{protocol}': expected one of {', '.join(PROTOCOLS)}")
    user = dict(user_kwargs or {})
    if protocol == "pyiqa":
        return user, 0
    if name in NATIVE_CROP:
        kwargs = {"crop_border": HGGT_CROP}
        if name in _CHANNEL:
            kwargs["test_y_channel"] = _CHANNEL[name]
        return {**kwargs, **user}, 0
    return user, HGGT_CROP


def strip_border(x, crop: int):
    """``x`` (..., H, W) without its ``crop``-pixel border (the engine's border crop; 0: unchanged)."""
    return x[..., crop:-crop, crop:-crop] if crop else x


@dataclass(frozen=True)
class ConfiguredMetric:
    """A metric as every part of the suite computes it: the table's spec, its pyiqa options and the border the
    caller removes from both images first (``crop``; pyiqa's own ``crop_border`` is in ``kwargs`` where the arch
    has one). The engine's plan, validation and the crop grids build it with ``configured``, so one metric name
    gives one number everywhere."""
    spec: object  # bench.metrics.table.MetricSpec
    kwargs: dict
    crop: int

    def create(self, device: str = "cpu"):
        from bench.metrics import factory

        return factory.create(self.spec, device, kwargs=dict(self.kwargs))

    def border(self, x):
        """``x`` (..., H, W) without the ``crop``-pixel border."""
        return strip_border(x, self.crop)


def configured(metric, protocol: str = "hggt", user_kwargs: dict | None = None,
               crop_border: int | None = None) -> ConfiguredMetric:
    """``metric`` (a name or a MetricSpec) under the FR ``protocol`` (FR metrics; NR ones take ``user_kwargs``
    only). ``crop_border``: another border than the protocol's (validation's ``val.crop_border``)."""
    from bench.metrics.table import get

    spec = get(metric) if isinstance(metric, str) else metric
    if spec.mode != "FR":
        return ConfiguredMetric(spec, dict(user_kwargs or {}), 0)
    kwargs, crop = fr_options(spec.name, protocol, user_kwargs)
    if crop_border is not None:
        if spec.name in NATIVE_CROP:
            kwargs["crop_border"] = crop_border
        else:
            crop = crop_border
    return ConfiguredMetric(spec, kwargs, crop)
