"""Benchmark: harness throughput vs a bare loop of pyiqa forward calls on the same images.

Bare loop = what a pyiqa user writes: one metric object, ``metric(path)`` per image (pyiqa
decodes the file itself, batch 1), built and warmed before timing. Harness = ``score_refs``
into an empty store, timed end to end: it builds its own metric (released afterwards), decodes
in DataLoader workers, checks each file's content hash, writes Parquet parts and does the resume
bookkeeping. Two measurements per image set:

* single: one metric per run; ratio = harness img/s / bare img/s (target >= 0.95);
* multi: all metrics in ONE run (each image decoded once for all of them) against the sum of the
  same repeat's per-metric bare loops (each decodes every image again); ratio = bare seconds /
  harness seconds, paired per repeat so a change of machine load does not bias it.

Bare and harness runs alternate; medians over ``--repeats`` are reported with the load average
(the machine may be shared). Writes OUT/harness_throughput.json (+ .csv of the single rows).

    python scripts/bench_harness.py --out reports/perf [--metrics piqe,niqe,entropy] [--sr2afc PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _bare(metric, refs) -> float:
    t0 = time.perf_counter()
    for r in refs:
        metric(r.path)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/perf")
    ap.add_argument("--metrics", default="piqe,niqe,entropy")
    ap.add_argument("--sr2afc", help="also benchmark on this sr2afc folder (1020x676 images)")
    ap.add_argument("--batch-size", type=int, help="default: the engine's (1 on CPU, 8 on GPU)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="alternating bare/harness runs; medians are reported")
    ap.add_argument("--limit", type=int, help="use only the first N images of each set")
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
    rows, multi = [], []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets["sample 256x256"] = sample.build_sample(tmp / "sample")
        if a.sr2afc:
            sets["sr2afc 1020x676"] = votes.sr2afc(a.sr2afc)
        for set_name, manifest in sets.items():
            refs = refs_from_manifest(manifest)[: (a.limit + 1) if a.limit else None]
            timed = refs[1:]  # refs[0] warms the bare metric
            metrics = {}
            for spec in specs:
                metrics[spec.name] = create(spec, "cpu")
                metrics[spec.name](refs[0].path)
            bares = {s.name: [] for s in specs}
            harnesses = {s.name: [] for s in specs}
            multis, bare_sums = [], []
            for rep in range(a.repeats):  # each repeat: per metric bare then harness, then the multi-metric run
                for spec in specs:
                    bares[spec.name].append(_bare(metrics[spec.name], timed))
                    store = Store(tmp / f"store-{set_name.split()[0]}-{spec.name}-{rep}")  # empty: no resume skips
                    run = provenance.new_run("bench", {})
                    t0 = time.perf_counter()
                    score_refs(timed, [spec], store, run=run, batch_size=a.batch_size, workers=a.workers, progress=False)
                    harnesses[spec.name].append(time.perf_counter() - t0)
                if len(specs) > 1:
                    store = Store(tmp / f"multi-{set_name.split()[0]}-{rep}")
                    run = provenance.new_run("bench", {})
                    t0 = time.perf_counter()
                    score_refs(timed, specs, store, run=run, batch_size=a.batch_size, workers=a.workers, progress=False)
                    multis.append(time.perf_counter() - t0)
                    bare_sums.append(sum(bares[s.name][-1] for s in specs))  # the same repeat's bare loops
            for spec in specs:
                bare, harness = float(np.median(bares[spec.name])), float(np.median(harnesses[spec.name]))
                rows.append({"images": set_name, "metric": spec.name, "n_images": len(timed),
                             "bare_img_per_s": round(len(timed) / bare, 2),
                             "harness_img_per_s": round(len(timed) / harness, 2),
                             "ratio_harness_over_bare": round(bare / harness, 3), "repeats": a.repeats,
                             "batch_size": (a.batch_size or auto_batch_size("cpu")) if spec.batchable else 1,
                             "workers": a.workers})
                print(rows[-1], flush=True)
            if multis:
                ratios = [b / h for b, h in zip(bare_sums, multis)]
                multi.append({"images": set_name, "metrics": [s.name for s in specs], "n_images": len(timed),
                              "bare_seconds_sum_of_per_metric_loops": round(float(np.median(bare_sums)), 2),
                              "harness_seconds_one_run": round(float(np.median(multis)), 2),
                              "ratio_harness_over_bare": round(float(np.median(ratios)), 3),
                              "ratio_per_repeat": [round(r, 3) for r in ratios], "repeats": a.repeats,
                              "workers": a.workers})
                print(multi[-1], flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "harness_throughput.csv", index=False)
    meta = {"date": dt.date.today().isoformat(), "device": provenance.device_name("cpu"), "versions": provenance.versions(),
            "git_commit": provenance.git_commit(), "cpu_count": os.cpu_count(),
            "loadavg_1_5_15_before": [round(x, 2) for x in load_before],
            "loadavg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
            "note": "ratio = harness throughput / bare pyiqa loop; multi = one harness run for all metrics vs the sum "
                    "of per-metric bare loops. A load average above the core count means other jobs shared the CPUs."}
    summary = {"min_single_ratio": float(df["ratio_harness_over_bare"].min()) if len(df) else None,
               "multi_ratios": {m["images"]: m["ratio_harness_over_bare"] for m in multi}}
    (out / "harness_throughput.json").write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows,
                                                             "multi": multi}, indent=1))
    print(df.to_string(index=False))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
