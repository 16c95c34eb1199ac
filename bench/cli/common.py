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


def _summary_lines(summaries) -> list[str]:
    """The scoring engine's summary (unavailable metrics on one line); imported late to keep start-up light."""
    from bench.scoring.report import summary_lines

    return summary_lines(summaries)


def _score_opts(a) -> dict:
    from bench.scoring.engine import Shard

    return {"device": a.device, "batch_size": a.batch_size, "workers": a.workers, "shard": Shard.parse(a.shard),
            "max_pixels": a.max_pixels}
