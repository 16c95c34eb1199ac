"""What a scoring run prints: per-metric summary lines and the per-image score table."""

from __future__ import annotations

import pandas as pd

from bench.metrics.table import get
from bench.scoring.images import ImageRef
from bench.store.layout import Store, current_scores_sql


def summary_lines(summaries) -> list[str]:
    """One line per scored metric; metrics that could not run here are ONE line with a count and
    the command that lists why (not one long line each)."""
    lines, unavailable = [], []
    for s in summaries:
        if s.unavailable and getattr(s, "refused", False):  # a present file not proven safe: say which
            lines.append(f"  {s.metric:<22} refused: {s.unavailable}")
            continue
        if s.unavailable and "weights do not load" in s.unavailable:  # there but broken: its own line, why
            lines.append(f"  {s.metric:<22} unavailable: {s.unavailable}")
            continue
        if s.unavailable:
            unavailable.append(s)
            continue
        rate = f"{s.scored / s.seconds:.2f} img/s" if s.seconds else "-"
        extra = ""
        if getattr(s, "stored_failures_skipped", 0):
            extra += f", {s.stored_failures_skipped} stored failures skipped (--retry-failed re-scores them)"
        if getattr(s, "skipped_no_ref", 0):
            extra += f", {s.skipped_no_ref} images without a reference"
        lines.append(f"  {s.metric:<22} scored {s.scored} (ok {s.ok}, error {s.error}, nan {s.nan}), "
                     f"skipped {s.skipped_existing} already stored{extra}, {rate}")
        if getattr(s, "stopped", None):
            lines.append(f"      {s.stopped}")
        lines.extend(f"      {e}" for e in s.first_errors)
    if unavailable:
        names = ", ".join(s.metric for s in unavailable)
        lines.append(f"  {len(unavailable)} metric{'s' if len(unavailable) > 1 else ''} unavailable here "
                     f"(weights missing, no network): {names}; `iqa-study weights status --missing` lists why")
    return lines


def score_table(store: Store, refs: list[ImageRef], summaries, names: list[str]) -> pd.DataFrame:
    """One row per image (``names``: display names aligned with ``refs``), one column per metric: the stored
    score under this run's configuration (the newest ok row), or ``error: ...`` / empty."""
    import duckdb

    from bench.scoring.plan import score_files

    hashes = [s.config_hash for s in summaries if s.config_hash and not s.unavailable]
    table = pd.DataFrame({"image": list(names)})
    files = score_files(store)
    if not hashes or not files:
        return table
    con = duckdb.connect()
    source = ("(SELECT * FROM read_parquet(?, union_by_name=true) WHERE list_contains(?, config_hash) "
              "AND list_contains(?, image_id))")
    rows = con.execute(f"SELECT image_id, coalesce(ref_id, '') AS ref, metric, score, status, error "
                       f"FROM ({current_scores_sql(source)})",  # the store's one current-row rule
                       [files, hashes, [r.image_id for r in refs]]).df()
    con.close()
    got = {(r.image_id, r.ref, r.metric): (r.score if r.status == "ok" else f"{r.status}: {r.error}")
           for r in rows.itertuples()}
    for s in summaries:
        if s.unavailable or not s.config_hash:
            continue
        fr = get(s.metric).mode == "FR"
        table[s.metric] = [None if fr and not r.ref_id else got.get((r.image_id, (r.ref_id or "") if fr else "", s.metric))
                           for r in refs]
    return table


def display_table(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The per-image table for people: a ``mean`` row (of each metric's ok scores) and ↑/↓ after each
    metric name (↑: higher is better). Returns (table, notes): one note per metric whose mean leaves out
    failed or missing scores, e.g. ``niqe: mean of 3 of 4 images``."""
    out = table.copy()
    means, notes = {"image": "mean"}, []
    for col in table.columns[1:]:
        values = pd.to_numeric(table[col], errors="coerce")
        ok = values.notna().sum()
        means[col] = values.mean() if ok else None
        if ok < len(table):
            notes.append(f"{col}: mean of {ok} of {len(table)} images (the others failed or have no reference)")
    out = pd.concat([out, pd.DataFrame([means])], ignore_index=True)
    out.columns = ["image"] + [f"{c} {'↓' if get(c).lower_better else '↑'}" for c in table.columns[1:]]
    return out, notes
