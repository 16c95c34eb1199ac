"""Benchmark: harness throughput vs a bare loop of pyiqa forward calls on the same images.

Bare loop = what a pyiqa user writes: one metric object, ``metric(path)`` per image (pyiqa
decodes the file itself, batch 1). Harness = ``score_refs`` (DataLoader decoding in workers,
size-grouped batches, Parquet writes, resume bookkeeping). Both start warm (metric built,
first image excluded). Reported as images/s and the ratio harness / bare.

    python scripts/bench_harness.py --out reports/perf [--metrics piqe,niqe] [--sr2afc PATH]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/perf")
    ap.add_argument("--metrics", default="piqe,niqe,entropy")
    ap.add_argument("--sr2afc", help="also benchmark on this sr2afc folder (1020x676 images)")
    ap.add_argument("--batch-size", type=int, help="default: the engine's (1 on CPU, 8 on GPU)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="alternating bare/harness runs; medians are reported")
    a = ap.parse_args()

    from bench import provenance
    from bench.manifests import sample, votes
    from bench.metrics.factory import create
    from bench.metrics.table import select
    from bench.metrics.weights import missing, seed_niqe
    from bench.scoring.engine import auto_batch_size, score_refs
    from bench.scoring.images import refs_from_manifest
    from bench.store import Store

    specs = select(a.metrics)
    if any(s.name == "niqe" and missing(s) for s in specs):
        seed_niqe()
    sets = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets["sample 256x256"] = sample.build_sample(tmp / "sample")
        if a.sr2afc:
            sets["sr2afc 1020x676"] = votes.sr2afc(a.sr2afc)
        rows = []
        for set_name, manifest in sets.items():
            refs = refs_from_manifest(manifest)
            for spec in specs:
                metric = create(spec, "cpu")
                metric(refs[0].path)  # warm-up
                bares, harnesses = [], []
                for rep in range(a.repeats):
                    t0 = time.perf_counter()
                    for r in refs[1:]:
                        metric(r.path)
                    bares.append((len(refs) - 1) / (time.perf_counter() - t0))
                    store = Store(tmp / f"store-{set_name.split()[0]}-{spec.name}-{rep}")  # empty: no resume skips
                    run = provenance.new_run("bench", {})
                    t0 = time.perf_counter()
                    score_refs(refs[1:], [spec], store, run=run, batch_size=a.batch_size, workers=a.workers,
                               progress=False)
                    harnesses.append((len(refs) - 1) / (time.perf_counter() - t0))
                bare, harness = float(np.median(bares)), float(np.median(harnesses))
                rows.append({"images": set_name, "metric": spec.name, "n_images": len(refs) - 1,
                             "bare_img_per_s": round(bare, 2), "harness_img_per_s": round(harness, 2),
                             "ratio_harness_over_bare": round(harness / bare, 3),
                             "repeats": a.repeats,
                             "batch_size": (a.batch_size or auto_batch_size("cpu")) if spec.batchable else 1,
                             "workers": a.workers})
                print(rows[-1])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "harness_throughput.csv", index=False)
    meta = {"date": dt.date.today().isoformat(), "device": provenance.device_name("cpu"), "versions": provenance.versions(),
            "git_commit": provenance.git_commit()}
    (out / "harness_throughput.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
