"""Benchmark: `agree` on a synthetic store of 180,000 pairs x 42 metrics.

The store is SYNTHETIC (random scores, random votes) and exists only to time the DuckDB
agreement view at SBS180K scale: 360,000 images x 42 metrics = 15.1 M score rows.

    python scripts/bench_agree.py --out reports/perf [--pairs 180000] [--metrics 42]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa


def build(store_root: Path, n_pairs: int, n_metrics: int, seed: int = 0):
    from bench.store import Store
    from bench.atomic import atomic_write_table
    from bench.store.layout import SCORE_SCHEMA

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
        "image_a_id": ids[:n_pairs], "image_b_id": ids[n_pairs:], "manifest_id": "bench", "synthetic": True})
    atomic_write_table(pa.Table.from_pandas(pairs, preserve_index=False), store.root / "pairs" / "bench.parquet")
    now = pd.Timestamp.now(tz="UTC")
    for m in range(n_metrics):
        n = n_images
        table = pa.table({
            "image_id": ids, "metric": np.full(n, f"metric_{m:02d}"), "config_hash": np.full(n, f"{m:016x}"),
            "metric_config": np.full(n, "{}"), "score": rng.normal(size=n), "status": np.full(n, "ok"),
            "error": pa.nulls(n, pa.string()), "lower_better": np.full(n, m % 5 == 0),
            "random_init": np.zeros(n, bool), "input_h": np.full(n, 512, np.int32), "input_w": np.full(n, 512, np.int32),
            "input_policy": np.full(n, "native"), "batch_size": np.full(n, 8, np.int32), "seconds": np.zeros(n),
            "device": np.full(n, "cpu"), "dtype": np.full(n, "float32"), "pyiqa_version": np.full(n, "0.1.16"),
            "torch_version": np.full(n, "2.14.1"), "run_id": np.full(n, "bench"),
            "written_at": pa.array([now] * n, pa.timestamp("us", tz="UTC"))}, schema=SCORE_SCHEMA)
        atomic_write_table(table, store.root / "scores" / f"part-bench-r000-{m:06d}.parquet")
    return store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/perf")
    ap.add_argument("--pairs", type=int, default=180_000)
    ap.add_argument("--metrics", type=int, default=42)
    a = ap.parse_args()
    from bench import provenance
    from bench.store.views import agreement

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = build(Path(tmp) / "store", a.pairs, a.metrics)
        t_build = time.perf_counter() - t0
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            df = agreement(store)
            times.append(time.perf_counter() - t0)
        assert len(df) == a.metrics and (df["n_pairs"] == a.pairs).all()
    result = {"date": dt.date.today().isoformat(), "device": provenance.device_name("cpu"),
              "pairs": a.pairs, "metrics": a.metrics, "score_rows": 2 * a.pairs * a.metrics,
              "build_store_s": round(t_build, 1), "agree_s_runs": [round(t, 2) for t in times],
              "agree_s_median": round(float(np.median(times)), 2), "versions": provenance.versions()}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "agree_scale.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "versions"}, indent=1))


if __name__ == "__main__":
    main()
