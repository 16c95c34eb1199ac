"""Benchmark: seconds per training iteration, UPos vs AMO (AMO's online-IQA overhead).

CPU, smoke size by default (tiny nets on the SYNTHETIC multi-GT set). With --paper-size on a
GPU: SwinIR / RRDB at the paper's size (batch 8, GT 256) and a random-init MUSIQ as the AMO
scorer (timing only; random weights are never a quality score).

    python scripts/bench_train.py --out reports/perf [--iters 8] [--paper-size]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

import torch


def seconds_per_iter(cfg, out: Path, iters: int, device: str) -> float:
    from sr_training.data.multigt import collate
    from sr_training.trainer import Trainer

    tr = Trainer(cfg, out, device=device)
    batches = [collate([tr.dataset[(i % len(tr.dataset), it)] for i in range(cfg.data.batch_size)])
               for it in range(iters + 1)]
    tr.step(batches[0], 0)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for it in range(1, iters + 1):
        tr.step(batches[it], it)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/perf")
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--paper-size", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="also time bf16 autocast (CUDA only; fp32 is HGGT's default)")
    a = ap.parse_args()
    from bench import provenance
    from bench.metrics.table import get
    from bench.metrics.weights import missing, seed_niqe
    from sr_training.config import load_config
    from sr_training.data.synthetic import build_synthetic_hggt

    device = "cuda" if torch.cuda.is_available() else "cpu"
    configs = Path(__file__).resolve().parents[1] / "sr_training" / "configs"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        size = 512 if a.paper_size else 128
        os.environ["SYNTH_HGGT_ROOT"] = str(build_synthetic_hggt(tmp / "synth", groups_per_photo=2, size=size))
        if not a.paper_size and missing(get("niqe")):
            seed_niqe()
        for arch in ("swinir", "rrdb"):
            base = [f"arch.type={arch}", "data.workers=0", "data.gt_size=" + ("256" if a.paper_size else "96")]
            if a.paper_size:
                base += ["arch.size=full", "data.batch_size=8", "loss.perceptual_weights=random"]
            precisions = ("fp32", "bf16") if a.bf16 and device == "cuda" else ("fp32",)
            for strategy, precision in [(s, p) for p in precisions for s in ("upos", "amo")]:
                extra = [f"sampling.strategy={strategy}", f"amp_bf16={'true' if precision == 'bf16' else 'false'}"]
                if strategy == "amo":
                    extra += (["sampling.iqa.metric=musiq", "sampling.iqa.random_init=true"] if a.paper_size
                              else ["sampling.iqa.metric=niqe"])
                cfg = load_config(configs / "smoke_swinir_amo.yaml", base + extra)
                s = seconds_per_iter(cfg, tmp / f"{arch}_{strategy}_{precision}", a.iters, device)
                rows.append({"arch": arch, "size": cfg.arch.size, "strategy": strategy, "precision": precision,
                             "amo_scorer": cfg.sampling.iqa.metric if strategy == "amo" else "",
                             "batch": cfg.data.batch_size, "gt_size": cfg.data.gt_size, "sec_per_iter": round(s, 4)})
                print(rows[-1])
    for m in rows:
        if m["strategy"] == "amo":
            u = next(r for r in rows if r["strategy"] == "upos" and (r["arch"], r["precision"]) == (m["arch"], m["precision"]))
            m["amo_overhead_ratio"] = round(m["sec_per_iter"] / u["sec_per_iter"], 3)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"train_speed_{'paper' if a.paper_size else 'smoke'}_{device}.json"
    (out / name).write_text(json.dumps({"date": dt.date.today().isoformat(), "device": provenance.device_name(device),
                                        "iters": a.iters, "rows": rows, "versions": provenance.versions()}, indent=1))
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
