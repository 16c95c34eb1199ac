"""Output helpers shared by the subcommands."""

from __future__ import annotations

import json


def _print_table(df, as_json: bool) -> None:
    if as_json:
        print(json.dumps(json.loads(df.to_json(orient="records")), indent=1))
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", 500, "display.max_columns", 50, "display.width", 200,
                               "display.float_format", "{:.4f}".format):
            print(df.to_string(index=False))


# --- metrics / weights ----------------------------------------------------------------------


def _ci(v, lo, hi) -> str:
    import math

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return f"{v:.3f}"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def agreement_text(df) -> str:
    """The agreement table for people: one value with its 95% CI per cell (`0.903 [0.813, 0.952]`),
    aligned, within 120 columns. ``--json`` / ``--csv`` keep every column."""
    import pandas as pd

    show = pd.DataFrame({
        "dataset": [f"{d if len(d) <= 24 else d[:23] + '~'}{'*' if s else ''}"
                    for d, s in zip(df["dataset"].astype(str), df["synthetic"])],
        "split": df["split"], "metric": df["metric"], "n": df["n_decided"],
        "strict acc [95% CI]": [_ci(*r) for r in zip(df["strict_acc"], df["strict_ci_lo"], df["strict_ci_hi"])],
        "tie-half acc": [_ci(*r) for r in zip(df["tie_half_acc"], df["tie_half_ci_lo"], df["tie_half_ci_hi"])],
        "vote agreement": [_ci(*r) for r in zip(df["vote_agreement"], df["vote_ci_lo"], df["vote_ci_hi"])],
        "ties": df["n_metric_ties"],
    })
    show["metric"] = [v if len(v) <= 22 else v[:21] + "~" for v in show["metric"].astype(str)]  # never the numbers
    return show.to_string(index=False)


def _summary_lines(summaries) -> list[str]:
    """The scoring engine's summary (unavailable metrics on one line); imported late to keep start-up light."""
    from bench.scoring.report import summary_lines

    return summary_lines(summaries)


def _score_opts(a, **more) -> dict:
    """{"options": ScoreOptions}: the scoring flags every scoring command has (and ``more`` of its own), resolved
    and checked once before any work."""
    from bench.scoring.options import ScoreOptions, Shard

    return {"options": ScoreOptions.resolve(device=a.device, batch_size=a.batch_size, workers=a.workers,
                                            shard=Shard.parse(a.shard), max_pixels=a.max_pixels, **more)}


def positive_int(text: str) -> int:
    """argparse type: an integer > 0 (``--n-pairs -3`` is refused by the parser, not run on 9 pairs)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0 (seeds, worker counts, retries)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; expected an integer >= 0")
    return value
