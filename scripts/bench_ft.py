"""Benchmark: seconds per FT iteration vs the base iteration it fine-tunes (the LoRA + reward overhead).

Both runs use the same config (sr_training/configs/smoke_ft_swinir.yaml: AMO target choice with
NIQE, L1 + perceptual with a random-init VGG, GAN off); the base run drops the ``ft:`` section (full
generator trained, EMA on), the FT run trains LoRA adapters on the frozen base and adds
-lambda_Q * Q_norm(SR) with NIQE as Q. Warm-up step dropped, the same pre-built batches for both.

CPU at smoke size by default (tiny nets on the SYNTHETIC multi-GT set). ``--paper-size`` (meant for
a GPU): the paper's SwinIR / RRDB, batch 8, GT 256, random-init MUSIQ as the AMO scorer and as Q
(timing only; random weights are never a quality score); ``--bf16`` adds bf16-autocast rows.

    nice -n 10 python scripts/bench_ft.py --out reports/perf [--iters 6] [--paper-size [--bf16]]
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


def seconds_per_iter(trainer, batches, device: str) -> float:
    trainer.step(batches[0], 0)  # warm-up (first-call allocations, lazy metric set-up)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for it in range(1, len(batches)):
        trainer.step(batches[it], it)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / (len(batches) - 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/perf")
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--paper-size", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="also time bf16 autocast (CUDA only)")
    a = ap.parse_args()
    from bench import provenance
    from bench.metrics.table import get
    from bench.metrics.weights import missing, seed_niqe
    from sr_training.archs import build_generator
    from sr_training.config import load_config
    from sr_training.data.multigt import collate
    from sr_training.data.synthetic import build_synthetic_hggt
    from sr_training.ft.trainer import FTTrainer
    from sr_training.trainer import Trainer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    configs = Path(__file__).resolve().parents[1] / "sr_training" / "configs"
    precisions = ["fp32"] + (["bf16"] if a.bf16 and device == "cuda" else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["SYNTH_HGGT_ROOT"] = str(build_synthetic_hggt(tmp / "synth", groups_per_photo=2,
                                                                 size=512 if a.paper_size else 128))
        if not a.paper_size and missing(get("niqe")):
            seed_niqe()
        for arch in ("swinir", "rrdb"):
            common = [f"arch.type={arch}", "data.workers=0", "ft.guard.enabled=false", "schedule.val_every=1000000"]
            if a.paper_size:
                common += ["arch.size=full", "data.batch_size=8", "data.gt_size=256", "sampling.iqa.metric=musiq",
                           "sampling.iqa.random_init=true", "ft.reward.metric=musiq", "ft.reward.random_init=true"]
            if arch == "rrdb":
                common += ["data.degradation.kind=two_stage"]
            for precision in precisions:
                over = common + [f"amp_bf16={precision == 'bf16'}"]
                cfg_ft = load_config(configs / "smoke_ft_swinir.yaml", over + [f"ft.init={tmp / 'base.pth'}"])
                torch.manual_seed(0)
                torch.save(build_generator(cfg_ft.arch).state_dict(), tmp / "base.pth")
                cfg_base = cfg_ft.model_copy(update={"ft": None})
                timings = {}
                for kind, cls, cfg in (("base", Trainer, cfg_base), ("ft", FTTrainer, cfg_ft)):
                    tr = cls(cfg, tmp / f"{arch}_{precision}_{kind}", device=device)
                    n = cfg.data.batch_size
                    batches = [collate([tr.dataset[((it * n + i) % len(tr.dataset), it)] for i in range(n)])
                               for it in range(a.iters + 1)]
                    timings[kind] = seconds_per_iter(tr, batches, device)
                    if kind == "ft":
                        lora = sum(p.numel() for p in tr.trainable_parameters())
                        total = sum(p.numel() for p in tr.net_g.parameters())
                rows.append({"arch": arch, "size": cfg_ft.arch.size, "precision": precision,
                             "batch": cfg_ft.data.batch_size, "gt_size": cfg_ft.data.gt_size,
                             "q_metric": cfg_ft.ft.reward.metric + (" (random-init)" if cfg_ft.ft.reward.random_init
                                                                   else ""),
                             "amo_scorer": cfg_ft.sampling.iqa.metric, "lora_rank": cfg_ft.ft.lora.rank,
                             "lora_params": lora, "generator_params": total,
                             "base_sec_per_iter": round(timings["base"], 4), "ft_sec_per_iter": round(timings["ft"], 4),
                             "ft_over_base_ratio": round(timings["ft"] / timings["base"], 3)})
                print(rows[-1], flush=True)
    name = f"ft_speed_paper_{device}.json" if a.paper_size else f"ft_speed_{device}.json"
    record = {"benchmark": "FT step vs base step (same config, same batches; base = no ft: section)",
              "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "device": provenance.device_name(device), "torch_threads": torch.get_num_threads(),
              "load_average_1min_at_end": os.getloadavg()[0],
              "iters_timed": a.iters, "git_commit": provenance.git_commit(),
              "note": ("SYNTHETIC data, tiny nets: timing only" if not a.paper_size else
                       "random-init MUSIQ: timing only, never a quality score"),
              "rows": rows, "versions": provenance.versions()}
    out = Path(a.out) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
