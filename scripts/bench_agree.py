"""Benchmark: `agree` on a synthetic store of 180,000 pairs x 42 metrics.

The store is SYNTHETIC (random scores, random votes) and exists only to time the agreement at
SBS180K scale: 360,000 images x 42 metrics = 15.1 M score rows in 42 Parquet parts.

Timed in a fresh child process (so its peak RSS is the agreement's alone):
  * cold: the first ``agreement(store)`` after the parts landed - every part is verified once
    (every page decoded), the long score table joined and the cache written
    (STORE/cache/agreement-<state>.parquet and its index, bench.store.cache);
  * warm: later calls (new connections, same store state) - they read the cached sums;
  * after one new part (metric 0 re-scored on every image, superseding its older rows): the next
    call verifies that part and recomputes the sums of metric 0 only (incremental), then warm again;
  * full rebuild: the same state with the cache files moved aside (parts already verified); its
    table must equal the incremental one exactly;
  * after a part with a new metric lands (incremental again).

    python scripts/bench_agree.py --out reports/perf [--pairs 180000] [--metrics 42]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa


def _score_part(store, ids: np.ndarray, m: int, rng, seq: int, when) -> None:
    from bench.atomic import atomic_write_table
    from bench.store.layout import SCORE_SCHEMA

    n = len(ids)
    table = pa.table({
        "image_id": ids, "ref_id": pa.nulls(n, pa.string()), "metric": np.full(n, f"metric_{m:02d}"),
        "config_hash": np.full(n, f"{m:016x}"),
        "metric_config": np.full(n, "{}"), "score": rng.normal(size=n), "status": np.full(n, "ok"),
        "error": pa.nulls(n, pa.string()), "lower_better": np.full(n, m % 5 == 0),
        "random_init": np.zeros(n, bool), "input_h": np.full(n, 512, np.int32), "input_w": np.full(n, 512, np.int32),
        "input_policy": np.full(n, "native"), "batch_size": np.full(n, 8, np.int32), "seconds": np.zeros(n),
        "device": np.full(n, "cpu"), "dtype": np.full(n, "float32"), "pyiqa_version": np.full(n, "0.1.16"),
        "torch_version": np.full(n, "2.14.1"), "run_id": np.full(n, "bench"),
        "written_at": pa.array([when] * n, pa.timestamp("us", tz="UTC"))}, schema=SCORE_SCHEMA)
    atomic_write_table(table, store.root / "scores" / f"part-bench-r000-{seq:06d}.parquet")


def build(store_root: Path, n_pairs: int, n_metrics: int, seed: int = 0):
    from bench.store import Store

    rng = np.random.default_rng(seed)
    store = Store(store_root)
    n_images = 2 * n_pairs
    ids = np.array([f"{i:032x}" for i in range(n_images)])
    va = rng.integers(0, 16, n_pairs)
    vb = 15 - va
    pairs = pd.DataFrame({
        "pair_id": [f"p{i}" for i in range(n_pairs)], "dataset": "synthetic-bench", "split": "test",
        "group": [f"g{i // 6}" for i in range(n_pairs)], "image_a": ids[:n_pairs], "image_b": ids[n_pairs:],
        "votes_a": va, "votes_b": vb, "pref": np.where(va > vb, "a", np.where(va < vb, "b", "tie")),
        "image_a_id": ids[:n_pairs], "image_b_id": ids[n_pairs:]})
    pairs.attrs["iqa_study"] = {"dataset": "synthetic-bench", "synthetic": True, "root": ""}
    store.register(pairs)
    now = pd.Timestamp.now(tz="UTC")
    for m in range(n_metrics):
        _score_part(store, ids, m, rng, m, now)
    return store


def measure(store_root: str, n_pairs: int, n_metrics: int) -> dict:
    """Runs in the child process."""
    from bench.store import Store
    from bench.store.views import agreement

    store = Store(store_root, create=False)
    cache = store.root / "cache"

    cpu: dict[str, float] = {}

    def timed(metrics: int, label: str | None = None):
        t0, c0 = time.perf_counter(), time.process_time()
        df = agreement(Store(store_root, create=False))
        dt_s = time.perf_counter() - t0
        if label:
            cpu[label] = round(time.process_time() - c0, 3)  # every thread of this process (DuckDB's included)
        assert len(df) == metrics and (df["n_pairs"] == n_pairs).all(), df.head()
        return dt_s, df

    cold, _ = timed(n_metrics, "cold_s")
    warm = [timed(n_metrics, "warm_s")[0] for _ in range(5)]
    ids = np.array([f"{i:032x}" for i in range(2 * n_pairs)])
    # one more part lands: metric 0 re-scored on every image (it supersedes that metric's older rows)
    _score_part(store, ids, 0, np.random.default_rng(1), n_metrics, pd.Timestamp.now(tz="UTC"))
    rescored, incremental = timed(n_metrics, "after_new_part_s")
    warm_after = [timed(n_metrics)[0] for _ in range(3)]
    # the full rebuild of the same state (parts already verified): the cache files moved aside
    aside = store.root / "cache-aside"
    aside.mkdir()
    for f in [*cache.glob("agreement-*.parquet"), *cache.glob("agreement-*.json")]:
        f.rename(aside / f.name)
    full, rebuilt = timed(n_metrics, "full_rebuild_s")
    pd.testing.assert_frame_equal(incremental, rebuilt, check_exact=True)
    # and a part with a metric the store did not have
    _score_part(store, ids, n_metrics, np.random.default_rng(2), n_metrics + 1, pd.Timestamp.now(tz="UTC"))
    new_metric, _ = timed(n_metrics + 1, "after_new_metric_part_s")
    return {"cold_s": round(cold, 2), "warm_s_runs": [round(t, 3) for t in warm],
            "warm_s_median": round(float(np.median(warm)), 3),
            "after_new_part_s": round(rescored, 3),
            "after_new_part_warm_s_median": round(float(np.median(warm_after)), 3),
            "full_rebuild_s": round(full, 2), "incremental_equals_full_rebuild": True,
            "after_new_metric_part_s": round(new_metric, 3),
            "cpu_s": cpu,  # CPU seconds of the same calls (warm: the last one)
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/perf")
    ap.add_argument("--pairs", type=int, default=180_000)
    ap.add_argument("--metrics", type=int, default=42)
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # child mode: time agreement on this store
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(measure(a.measure, a.pairs, a.metrics)))
        return
    import os

    from bench import provenance

    load_start = round(os.getloadavg()[0], 1)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = build(Path(tmp) / "store", a.pairs, a.metrics)
        t_build = time.perf_counter() - t0
        child = subprocess.run([sys.executable, __file__, "--measure", str(store.root), "--pairs", str(a.pairs),
                                "--metrics", str(a.metrics)], capture_output=True, text=True, check=True)
        timing = json.loads(child.stdout.strip().splitlines()[-1])

    result = {"date": dt.date.today().isoformat(), "device": provenance.device_name("cpu"),
              "git_commit": provenance.git_commit(), "load_avg_1min_at_start": load_start,
              "load_avg_1min_at_end": round(os.getloadavg()[0], 1),
              "pairs": a.pairs, "metrics": a.metrics, "score_rows": 2 * a.pairs * a.metrics,
              "build_store_s": round(t_build, 1), **timing,
              "note": "cold = first agree on the new store (every part verified, long table joined, cache "
                      "written); warm = later agree calls on the same store state (fresh connection each); "
                      "after_new_part = first agree after one part re-scoring metric 0 lands (incremental); "
                      "full_rebuild = same state, cache moved aside, parts already verified; "
                      "after_new_metric_part = first agree after a part with a new metric lands; "
                      "cpu_s = CPU seconds of those calls, all threads (less sensitive to a loaded machine than wall time); "
                      "peak RSS of the measuring process (full builds included)",
              "versions": provenance.versions()}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "agree_scale.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "versions"}, indent=1))


if __name__ == "__main__":
    main()
