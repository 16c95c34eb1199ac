"""Training loop: HGGT's base recipe with IQA-driven target sampling.

* Adam + MultiStepLR for G and D, EMA of G, bf16 autocast on CUDA.
* Every random draw (crop, flip, degradation, target choice, dropout) is seeded from
  (seed, iteration, rank), so ``--auto-resume`` continues bit-identically.
* torchrun: DistributedDataParallel, the batch sampler shards by rank, rank 0 logs, validates
  and checkpoints.
* Experiment folder: config.yaml, provenance.json, train_log.csv, val_log.csv, checkpoints/,
  val/<iter>/*.png.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from bench import provenance
from bench.errors import StudyError
from sr_training.archs import build_generator
from sr_training.config import TrainConfig, save_config
from sr_training.data.degradation import degrade
from sr_training.data.multigt import IterationBatchSampler, MultiGTDataset, collate
from sr_training.losses import PerceptualLoss, UNetDiscriminatorSN, gan_loss
from sr_training.sampling import amo_scores, choose


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def psnr(a: torch.Tensor, b: torch.Tensor, crop: int) -> float:
    if crop:
        a, b = a[..., crop:-crop, crop:-crop], b[..., crop:-crop, crop:-crop]
    mse = F.mse_loss(a.double(), b.double()).item()
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _load_rgb(path: Path) -> torch.Tensor:
    """(1,3,H,W) float in [0,1]."""
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float() / 255


class Trainer:
    def __init__(self, cfg: TrainConfig, out: Path, device: str | None = None):
        self.cfg, self.out = cfg, Path(out)
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = int(os.environ.get("RANK", 0))
        if device is None:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        torch.manual_seed(cfg.seed)
        self.net_g = build_generator(cfg.arch).to(self.device)
        self.ema = copy.deepcopy(self.net_g).eval().requires_grad_(False)
        self.net_d = UNetDiscriminatorSN().to(self.device) if cfg.loss.gan > 0 else None
        self.perceptual = PerceptualLoss(cfg.loss.perceptual_weights).to(self.device) if cfg.loss.perceptual > 0 else None
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g = DDP(self.net_g, device_ids=ids)
            self.d = DDP(self.net_d, device_ids=ids) if self.net_d is not None else None
        else:
            self.g, self.d = self.net_g, self.net_d
        o = cfg.optim
        self.opt_g = torch.optim.Adam([p for p in self.net_g.parameters() if p.requires_grad], lr=o.lr_g, betas=o.betas)
        self.sched_g = torch.optim.lr_scheduler.MultiStepLR(self.opt_g, list(o.milestones), o.gamma)
        if self.net_d is not None:
            self.opt_d = torch.optim.Adam(self.net_d.parameters(), lr=o.lr_d, betas=o.betas)
            self.sched_d = torch.optim.lr_scheduler.MultiStepLR(self.opt_d, list(o.milestones), o.gamma)
        strategy = cfg.sampling.strategy
        self.dataset = MultiGTDataset(cfg.data.root, cfg.data.split, cfg.data.gt_size, cfg.data.hflip, cfg.seed,
                                      require_positive=strategy in ("upos", "smp"))
        self.image_scores = None
        self.iqa = self.iqa_spec = None
        if strategy in ("sma", "smp"):
            from sr_training.iqa import image_scores_for

            self.image_scores = image_scores_for(self.dataset, cfg.sampling.iqa)
        elif strategy == "amo":
            from sr_training.iqa import build_online_metric

            self.iqa_spec, self.iqa = build_online_metric(cfg.sampling.iqa, str(self.device))
        self.chosen = torch.zeros(5, dtype=torch.long)
        self.start_iter = 0
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.amp_bf16 and self.device.type == "cuda"
                         else nullcontext())

    # --- one iteration ------------------------------------------------------------------------
    def step(self, batch: dict, it: int) -> dict[str, float]:
        cfg = self.cfg
        torch.manual_seed(_seed(cfg.seed, it, self.rank, 1))
        gen = torch.Generator().manual_seed(_seed(cfg.seed, it, self.rank, 2))
        gts = batch["gts"].to(self.device, non_blocking=True)
        lr = degrade(gts[:, 0], cfg.data.degradation.kind, cfg.arch.scale, gen)
        patch_scores = image_scores = None
        if cfg.sampling.strategy == "amo":
            patch_scores = amo_scores(self.iqa, gts, self.iqa_spec.sign)
        elif self.image_scores is not None:
            image_scores = self.image_scores[batch["index"]]
        idx = choose(cfg.sampling.strategy, batch["labels"], gen, image_scores=image_scores, tau=cfg.sampling.tau,
                     patch_scores=patch_scores)
        self.chosen += torch.bincount(idx, minlength=5)
        target = gts[torch.arange(gts.shape[0]), idx.to(self.device)]

        self.g.train()
        if self.d is not None:
            self.net_d.requires_grad_(False)
        with self.autocast:
            sr = self.g(lr)
            losses = {"l1": cfg.loss.l1 * F.l1_loss(sr.float(), target)}
            if self.perceptual is not None:
                losses["perceptual"] = cfg.loss.perceptual * self.perceptual(sr.float(), target)
            if self.d is not None:
                losses["gan_g"] = cfg.loss.gan * gan_loss(self.d(sr).float(), True)
        total = sum(losses.values())
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()
        if self.d is not None:
            self.net_d.requires_grad_(True)
            with self.autocast:
                d_real = gan_loss(self.d(target).float(), True)
                d_fake = gan_loss(self.d(sr.detach()).float(), False)
            self.opt_d.zero_grad(set_to_none=True)
            (d_real + d_fake).backward()
            self.opt_d.step()
            self.sched_d.step()
            losses["d_real"], losses["d_fake"] = d_real, d_fake
        self.sched_g.step()
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.net_g.parameters()):
                pe.lerp_(p.detach(), 1 - cfg.optim.ema)
            for be, b in zip(self.ema.buffers(), self.net_g.buffers()):
                be.copy_(b)
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["total_g"] = float(total.detach())
        return out

    # --- checkpoints ----------------------------------------------------------------------------
    def state(self, it: int) -> dict:
        s = {"iteration": it, "net_g": self.net_g.state_dict(), "ema": self.ema.state_dict(),
             "opt_g": self.opt_g.state_dict(), "sched_g": self.sched_g.state_dict(), "chosen": self.chosen.clone(),
             "config": self.cfg.model_dump(mode="json")}
        if self.net_d is not None:
            s |= {"net_d": self.net_d.state_dict(), "opt_d": self.opt_d.state_dict(), "sched_d": self.sched_d.state_dict()}
        return s

    def save(self, it: int) -> Path:
        path = self.out / "checkpoints" / f"iter_{it:08d}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state(it), tmp)
        tmp.replace(path)
        return path

    def load(self, path: Path) -> int:
        s = torch.load(path, map_location=self.device, weights_only=False)
        self.net_g.load_state_dict(s["net_g"])
        self.ema.load_state_dict(s["ema"])
        self.opt_g.load_state_dict(s["opt_g"])
        self.sched_g.load_state_dict(s["sched_g"])
        if self.net_d is not None:
            self.net_d.load_state_dict(s["net_d"])
            self.opt_d.load_state_dict(s["opt_d"])
            self.sched_d.load_state_dict(s["sched_d"])
        self.chosen = s["chosen"].clone()
        self.start_iter = int(s["iteration"])
        return self.start_iter

    def latest_checkpoint(self) -> Path | None:
        ckpts = sorted((self.out / "checkpoints").glob("iter_*.pt"))
        return ckpts[-1] if ckpts else None

    # --- validation -----------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, it: int) -> dict[str, float] | None:
        v = self.cfg.val
        if not v.dir:
            return None
        hr_dir, lr_dir = Path(v.dir) / "hr", Path(v.dir) / v.lr_subdir
        if not hr_dir.is_dir() or not lr_dir.is_dir():
            raise StudyError(f"val.dir {v.dir}: expected folders hr/ and {v.lr_subdir}/")
        out_dir = self.out / "val" / f"iter_{it:08d}"
        out_dir.mkdir(parents=True, exist_ok=True)
        scores = {}
        for lr_path in sorted(lr_dir.glob("*.png")):
            sr = self.ema(_load_rgb(lr_path).to(self.device)).clamp(0, 1).cpu()
            Image.fromarray((sr[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(out_dir / lr_path.name)
            hr_path = hr_dir / lr_path.name
            if hr_path.is_file():
                hr = _load_rgb(hr_path)
                h, w = min(hr.shape[-2], sr.shape[-2]), min(hr.shape[-1], sr.shape[-1])
                scores[lr_path.stem] = psnr(sr[..., :h, :w], hr[..., :h, :w], v.crop_border)
        return scores

    # --- the loop -------------------------------------------------------------------------------
    def fit(self, auto_resume: bool = False) -> dict:
        cfg, sch = self.cfg, self.cfg.schedule
        if auto_resume and (ckpt := self.latest_checkpoint()):
            self.load(ckpt)
        main = self.rank == 0
        if main:
            save_config(cfg, self.out / "config.yaml")
            (self.out / "provenance.json").write_text(json.dumps(
                provenance.new_run("train", cfg.model_dump(mode="json"), device=str(self.device), seed=cfg.seed)
                | {"world_size": self.world, "resumed_from": self.start_iter}, indent=2, default=str))
        sampler = IterationBatchSampler(len(self.dataset), cfg.data.batch_size, cfg.seed, self.start_iter,
                                        sch.total_iters, self.rank, self.world)
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=cfg.data.workers, collate_fn=collate)
        log_path = self.out / "train_log.csv"
        t0, last = time.perf_counter(), {}
        bar = tqdm(total=sch.total_iters, initial=self.start_iter, desc=cfg.name, unit="it", disable=not main)
        for it, batch in enumerate(loader, start=self.start_iter):
            last = self.step(batch, it)
            done = it + 1
            bar.update(1)
            if main and (done % sch.log_every == 0 or done == sch.total_iters):
                row = {"iter": done, **last, "lr_g": self.sched_g.get_last_lr()[0],
                       "sec_per_iter": (time.perf_counter() - t0) / max(1, done - self.start_iter),
                       **{f"chosen_{k}": int(c) for k, c in enumerate(self.chosen)}}
                new = not log_path.exists()
                with open(log_path, "a", newline="") as fh:
                    w = csv.DictWriter(fh, fieldnames=list(row))
                    if new:
                        w.writeheader()
                    w.writerow(row)
                bar.set_postfix(l1=f"{last['l1']:.4f}", g=f"{last['total_g']:.3f}")
            if main and (done % sch.val_every == 0 or done == sch.total_iters):
                scores = self.validate(done)
                if scores:
                    with open(self.out / "val_log.csv", "a") as fh:
                        fh.write(f"{done},{np.mean(list(scores.values())):.4f},{json.dumps(scores)}\n")
            if main and (done % sch.checkpoint_every == 0 or done == sch.total_iters):
                self.save(done)
        bar.close()
        if self.world > 1:
            dist.barrier()
        return {"last": last, "chosen": self.chosen.tolist(),
                "sec_per_iter": (time.perf_counter() - t0) / max(1, sch.total_iters - self.start_iter)}
