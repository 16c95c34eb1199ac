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
    lines = []
    for s in summaries:
        if s.unavailable:
            lines.append(f"  {s.metric:<22} unavailable: {s.unavailable}")
            continue
        rate = f"{s.scored / s.seconds:.2f} img/s" if s.seconds else "-"
        lines.append(f"  {s.metric:<22} scored {s.scored} (ok {s.ok}, error {s.error}, nan {s.nan}), "
                     f"skipped {s.skipped_existing} already stored, {rate}")
        lines.extend(f"      {e}" for e in s.first_errors)
    return lines


def _score_opts(a) -> dict:
    from bench.scoring.engine import Shard

    return {"device": a.device, "batch_size": a.batch_size, "workers": a.workers, "shard": Shard.parse(a.shard),
            "max_pixels": a.max_pixels}
