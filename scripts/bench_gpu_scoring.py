"""Benchmark (GPU): NR scoring throughput at 512x512 with random-init MUSIQ / TOPIQ-NR / NIMA.

Random weights make no quality score, and the scoring engine never stores one, so this times the
three ways of feeding a metric, on the same generated PNGs and the same metric object:

* ``bare``: preloaded tensors already on the GPU, batches of ``--batch-size``: pure compute;
* ``per_image``: what a quick script does: open the PNG, convert, copy to the GPU, score, one at a time;
* ``harness``: the engine's decode path (``bench.scoring.images``: ImageDataset with the content
  hash checked, DataLoader workers, SizeBatchSampler batches) feeding the metric; no store writes.

Writes OUT/scoring_throughput_<device>.json with img/s per metric and the ratios
harness/bare and harness/per_image.

    python scripts/bench_gpu_scoring.py --out reports/perf [--n 256] [--batch-size 8] [--workers 8]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/perf")
    ap.add_argument("--metrics", default="musiq,topiq_nr,nima")
    ap.add_argument("--n", type=int, default=256, help="images (512x512 PNG, generated)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()

    from torch.utils.data import DataLoader

    from bench import provenance
    from bench.metrics.factory import create
    from bench.metrics.table import get
    from bench.scoring.images import ImageDataset, ImageRef, SizeBatchSampler, collate, content_hash, to_float

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        refs = []
        for i in range(a.n):  # smooth random images (noise alone is an unrealistic input)
            base = rng.integers(0, 256, (a.size // 16, a.size // 16, 3), dtype=np.uint8)
            img = Image.fromarray(base).resize((a.size, a.size), Image.Resampling.BICUBIC)
            path = Path(tmp) / f"{i:05d}.png"
            img.save(path)
            refs.append(ImageRef(content_hash(path.read_bytes()), str(path), a.size, a.size))
        for name in a.metrics.split(","):
            metric = create(get(name), a.device, random_init=True)
            x = torch.stack([torch.from_numpy(np.array(Image.open(r.path).convert("RGB"))).permute(2, 0, 1)
                             for r in refs]).float().div(255).to(a.device)
            with torch.no_grad():
                metric(x[: a.batch_size])  # warm-up
                _sync(a.device)
                t0 = time.perf_counter()
                for j in range(0, a.n, a.batch_size):
                    metric(x[j:j + a.batch_size])
                _sync(a.device)
                bare = time.perf_counter() - t0
                del x
                t0 = time.perf_counter()
                for r in refs:
                    arr = np.asarray(Image.open(r.path).convert("RGB"), dtype=np.float32) / 255
                    metric(torch.from_numpy(arr).permute(2, 0, 1)[None].to(a.device))
                _sync(a.device)
                per_image = time.perf_counter() - t0
                ds = ImageDataset([(r.image_id, r.path, True) for r in refs])
                loader = DataLoader(ds, batch_sampler=SizeBatchSampler(refs, a.batch_size), num_workers=a.workers,
                                    collate_fn=collate, pin_memory=a.device.startswith("cuda"))
                t0 = time.perf_counter()
                for items in loader:
                    metric(torch.stack([to_float(it["tensor"]) for it in items]).to(a.device, non_blocking=True))
                _sync(a.device)
                harness = time.perf_counter() - t0
            row = {"metric": name, "random_init": True, "n": a.n, "size": a.size, "batch_size": a.batch_size,
                   "workers": a.workers, "bare_img_s": a.n / bare, "per_image_img_s": a.n / per_image,
                   "harness_img_s": a.n / harness, "harness_vs_bare": bare / harness,
                   "harness_vs_per_image": per_image / harness}
            rows.append(row)
            print(json.dumps(row))
            del metric
            if a.device.startswith("cuda"):
                torch.cuda.empty_cache()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = "cuda" if a.device.startswith("cuda") else "cpu"
    (out / f"scoring_throughput_{dev}.json").write_text(json.dumps(
        {"date": dt.date.today().isoformat(), "device": provenance.device_name(a.device), "rows": rows,
         "note": "random-init networks: timing only, never a quality score", "versions": provenance.versions()},
        indent=1))


if __name__ == "__main__":
    main()
