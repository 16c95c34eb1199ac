"""One configuration per metric.

A metric can be stored under several configurations (``config_hash``: another pyiqa version, an
input policy such as ``--max-pixels``, other weights). A study table must compare each metric under
exactly one of them, never mix them pair by pair. The rule, applied to the configurations that have
``ok`` scores on the pairs being studied:

1. a pin ``metric=config_hash`` (CLI ``--config``, repeatable; a unique prefix of the hash is
   accepted) wins; a pin naming a configuration with no scores on these pairs is an error;
2. otherwise the configuration of the *latest run that scored the metric*: the run (``run_id``)
   with the newest ``written_at`` among the metric's ok scores of the candidate configurations.
   If that run wrote two configurations of the metric, the choice is ambiguous and refused
   (pin one).

The choice is recorded: ``config_hash`` per metric in every study table, ``configs`` in
selection.json, ``config_rule`` ('pinned' | 'latest run') and ``n_configs`` (how many were on offer).
"""

from __future__ import annotations

import sys

import duckdb
import pandas as pd

from bench.errors import StudyError

RULE_PINNED = "pinned"
RULE_LATEST = "latest run"


def parse_pins(items: list[str] | None) -> dict[str, str]:
    """``['niqe=ab12..', ...]`` -> {'niqe': 'ab12..'}; one-line error on a malformed item."""
    pins: dict[str, str] = {}
    for item in items or []:
        metric, sep, config = item.partition("=")
        if not sep or not metric.strip() or not config.strip():
            raise StudyError(f"--config {item!r}: expected METRIC=CONFIG_HASH (see `iqa-study query` on table scores)")
        if metric.strip() in pins:
            raise StudyError(f"--config: metric {metric.strip()!r} pinned twice")
        pins[metric.strip()] = config.strip()
    return pins


def _run_times(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """(metric, config_hash, run_id, last_written) of the ok no-reference score rows."""
    cols = {r[0] for r in con.execute("DESCRIBE scores").fetchall()}
    nr = "AND ref_id IS NULL" if "ref_id" in cols else ""
    return con.execute(f"SELECT metric, config_hash, run_id, max(written_at) AS last_written FROM scores "
                       f"WHERE status = 'ok' {nr} GROUP BY ALL").df()


def choose_configs(con: duckdb.DuckDBPyConnection, candidates: pd.DataFrame,
                   pins: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per metric of ``candidates`` (columns metric, config_hash; one row per pair and
    config is fine): metric, config_hash, config_rule, n_configs. Raises StudyError on ambiguity."""
    pins = dict(pins or {})
    offered = candidates[["metric", "config_hash"]].drop_duplicates()
    runs = _run_times(con).merge(offered, on=["metric", "config_hash"])
    rows = []
    for metric, confs in offered.groupby("metric", sort=True):
        hashes = sorted(confs["config_hash"])
        if metric in pins:
            match = [h for h in hashes if h.startswith(pins[metric])]
            if len(match) != 1:
                raise StudyError(f"--config {metric}={pins.pop(metric)}: {'ambiguous prefix' if match else 'no scores'}"
                                 f" on these pairs; configurations scored here: {', '.join(hashes)}")
            pins.pop(metric)
            rows.append({"metric": metric, "config_hash": match[0], "config_rule": RULE_PINNED,
                         "n_configs": len(hashes)})
            continue
        if len(hashes) == 1:
            rows.append({"metric": metric, "config_hash": hashes[0], "config_rule": RULE_LATEST, "n_configs": 1})
            continue
        mine = runs[runs["metric"] == metric]
        latest_run = mine.sort_values("last_written").iloc[-1]["run_id"]
        in_latest = sorted(set(mine.loc[mine["run_id"] == latest_run, "config_hash"]))
        if len(in_latest) != 1:
            raise StudyError(f"metric {metric!r} is scored under {len(hashes)} configurations and the latest run "
                             f"({latest_run}) wrote {len(in_latest)} of them; pin one with --config "
                             f"{metric}=HASH (one of {', '.join(hashes)})")
        chosen = in_latest[0]
        print(f"note: {metric} has {len(hashes)} stored configurations on these pairs; using {chosen} "
              f"(latest run {latest_run}); pin another with --config {metric}=HASH", file=sys.stderr)
        rows.append({"metric": metric, "config_hash": chosen, "config_rule": RULE_LATEST, "n_configs": len(hashes)})
    if pins:
        raise StudyError(f"--config: {', '.join(sorted(pins))} not scored on these pairs "
                         f"(scored: {', '.join(sorted(offered['metric'].unique()))})")
    return pd.DataFrame(rows, columns=["metric", "config_hash", "config_rule", "n_configs"])


def keep_chosen(long: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``long`` scored under each metric's chosen configuration."""
    return long.merge(chosen[["metric", "config_hash"]], on=["metric", "config_hash"]).reset_index(drop=True)


def config_for_images(con: duckdb.DuckDBPyConnection, metric: str, image_ids: list[str],
                      pin: str | None = None) -> str:
    """The configuration of ``metric`` to read image scores from (same rule), among the
    configurations with ok scores for any of ``image_ids`` (e.g. SMA/SMP target scores)."""
    con.register("_wanted_images", pd.DataFrame({"image_id": list(image_ids)}))
    cols = {r[0] for r in con.execute("DESCRIBE scores").fetchall()}
    nr = "AND ref_id IS NULL" if "ref_id" in cols else ""
    cand = con.execute("SELECT DISTINCT metric, config_hash FROM scores JOIN _wanted_images USING (image_id) "
                       f"WHERE status = 'ok' AND metric = ? {nr}", [metric]).df()
    if cand.empty:
        raise StudyError(f"metric {metric!r}: no stored ok scores for these images")
    return choose_configs(con, cand, {metric: pin} if pin else None)["config_hash"].iloc[0]
