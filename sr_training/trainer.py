"""Training loop: HGGT's base recipe with IQA-driven target sampling.

* Adam + MultiStepLR for G and D, EMA of G; fp32 by default as HGGT (bf16 autocast on CUDA is the
  opt-in ``amp_bf16``).
* Every random draw (crop, flip, degradation, target choice, AMO tie-break, drop-path) is seeded
  from (seed, iteration, rank), so ``--auto-resume`` continues bit-identically.
* torchrun: DistributedDataParallel; ``data.batch_size`` is per process (BasicSR's
  ``batch_size_per_gpu``), the effective batch (x world size) goes into provenance.json. The GT
  choice counts are all-reduced every step, so every rank (and the log) holds the global counts.
  Rank 0 logs, validates and checkpoints.
* Checkpoints (CONTRACTS C5, :mod:`sr_training.checkpoint`) load with ``weights_only=True``; a
  truncated newest one falls back to the previous one; a resumed run refuses a changed config
  unless ``allow_config_change``. The checkpoint is written *before* validation and records
  that one is due (``val_due``): a resumed run whose val_log.csv lacks that iteration (killed between
  the two) validates it again before training on.
* Experiment folder: config.yaml, provenance.json (start and finish time, effective batch, the
  sampling metric and why), train_log.csv, val_log.csv (one row per validation: the mean of each
  metric), val_images.csv (one row per image and validation), tb/ (TensorBoard), checkpoints/
  (iter_*.pt, best.pt + best.json), val/iter_*/<image>.png. An existing folder that is not resumed
  is archived to ``<out>_archived_<YYYYmmdd_HHMMSS>`` (BasicSR's rule) before anything is written.

Overridable methods (FT subclasses them): :meth:`build_generator`, :meth:`build_discriminator`,
:meth:`trainable_parameters`, :meth:`generator_losses`, :meth:`validation_network`,
:meth:`validation_metrics`, :meth:`checkpoint_state`, :meth:`load_checkpoint_state`.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from bench import provenance
from bench.atomic import atomic_copy, atomic_save_image, atomic_write_text
from bench.errors import StudyError
from bench.progress import progress_bar
from bench.scoring.protocol import strip_border
from sr_training.archs import build_generator
from sr_training.checkpoint import checkpoint_path, latest_loadable, list_checkpoints, save_checkpoint
from sr_training.config import TrainConfig, save_config
from sr_training.csvlog import append_row, has_row, truncate_rows
from sr_training.data.multigt import IterationBatchSampler, MultiGTDataset, collate
from sr_training.data.pipeline import DataPipeline
from sr_training.losses import PerceptualLoss, UNetDiscriminatorSN, gan_loss
from sr_training.sampling import amo_scores, build_sampler, normalise, tau_warning

# Config sections that may change on resume without --allow-config-change: they decide how long the
# run goes and what is logged/validated, never the arithmetic of an iteration.
RESUME_SAFE = ("name", "schedule", "val", "data.workers")


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _load_rgb(path: Path) -> torch.Tensor:
    """(1,3,H,W) float32 in [0,1] (sr_training.infer.load_rgb: the suite's one decoder)."""
    from sr_training.infer import load_rgb

    return load_rgb(path)


def build_dataset(cfg: TrainConfig):
    """The training items of ``data.source``: HGGT multi-GT groups, or single-GT images of a folder."""
    d = cfg.data
    if d.source == "folder":
        from sr_training.data.folder import FolderDataset

        return FolderDataset(d.root, d.load_size or 400, d.hflip, cfg.seed)
    return MultiGTDataset(d.root, d.split, d.gt_size, d.hflip, cfg.seed, require_positive=cfg.require_positive(),
                          crop=d.crop_before_degrade)


def check_paths(cfg: TrainConfig) -> None:
    """Every input path the run will need, checked before anything is built (one line each)."""
    from sr_training.losses import VGG19_FILE  # noqa: F401  (the perceptual loss checks its own cache)

    if not Path(cfg.data.root).is_dir():
        expected = ("a folder of HR images" if cfg.data.source == "folder"
                    else "the HGGT layout: images/ + labels/")
        raise StudyError(f"data.root {cfg.data.root}: not a folder (expected {expected})")
    if cfg.arch.pretrained and not Path(cfg.arch.pretrained).is_file():
        raise StudyError(f"arch.pretrained {cfg.arch.pretrained}: file does not exist")
    pw = cfg.loss.perceptual_weights
    if cfg.loss.perceptual > 0 and pw not in ("imagenet", "random") and not Path(pw).is_file():
        raise StudyError(f"loss.perceptual_weights {pw}: file does not exist (or use 'imagenet' / 'random')")
    iqa = cfg.sampling.iqa if cfg.sampling is not None else None
    for field in ("selection", "store", "manifest") if iqa is not None else ():
        value = getattr(iqa, field)
        if value and not Path(value).exists():
            raise StudyError(f"sampling.iqa.{field} {value}: does not exist")
    v = cfg.val
    if v.dir:
        hr, lr = Path(v.dir) / "hr", Path(v.dir) / v.lr_subdir
        if not hr.is_dir() or not lr.is_dir():
            raise StudyError(f"val.dir {v.dir}: expected folders hr/ and {v.lr_subdir}/")
        lrs = sorted(lr.glob("*.png"))
        if not lrs:
            raise StudyError(f"val.dir {v.dir}: no .png images in {v.lr_subdir}/")
        missing = [p.name for p in lrs if not (hr / p.name).is_file()]
        if missing:
            raise StudyError(f"val.dir {v.dir}: no hr/ image for {len(missing)} LR image(s), e.g. {missing[:3]}")


def config_diff(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old, new) for every leaf that differs."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b, path = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, path + ".")
        elif a != b:
            out.append((path, a, b))
    return out


def archive_output(out: Path) -> Path | None:
    """BasicSR's rule: an existing, non-empty experiment folder is renamed ``<out>_archived_<time>``."""
    out = Path(out)
    if not out.exists() or not any(out.iterdir()):
        return None
    stamp = dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    target = out.with_name(f"{out.name}_archived_{stamp}")
    n = 1
    while target.exists():
        target, n = out.with_name(f"{out.name}_archived_{stamp}_{n}"), n + 1
    out.rename(target)
    return target


class Trainer:
    # the iteration whose validation the next checkpoint promises (its ``val_due``), and the one a resumed
    # run still owes (the checkpoint promised it, val_log.csv lacks it: a kill between save and validation)
    _val_due_at: int | None = None
    _redo_val: int | None = None

    def __init__(self, cfg: TrainConfig, out: Path, device: str | None = None):
        self.check_config(cfg)  # a variant's own refusals, before any work
        self.cfg, self.out = cfg, Path(out)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if device is None:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.notes: list[str] = []  # warnings and choices, printed on rank 0 and recorded in provenance.json
        check_paths(cfg)
        if self.out.exists() and not self.out.is_dir():
            raise StudyError(f"--out {self.out}: exists and is not a folder")
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        torch.manual_seed(cfg.seed)
        self.net_g = self.build_generator().to(self.device)
        self.ema = copy.deepcopy(self.net_g).eval().requires_grad_(False)
        self.net_d = self.build_discriminator()
        if self.net_d is not None:
            self.net_d = self.net_d.to(self.device)
        self.perceptual = PerceptualLoss(cfg.loss.perceptual_weights).to(self.device) if cfg.loss.perceptual > 0 else None
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g = DDP(self.net_g, device_ids=ids)
            self.d = DDP(self.net_d, device_ids=ids) if self.net_d is not None else None
        else:
            self.g, self.d = self.net_g, self.net_d
        o = cfg.optim
        self.opt_g = torch.optim.Adam(list(self.trainable_parameters()), lr=o.lr_g, betas=o.betas)
        self.sched_g = torch.optim.lr_scheduler.MultiStepLR(self.opt_g, list(o.milestones), o.gamma)
        if self.net_d is not None:
            self.opt_d = torch.optim.Adam(self.net_d.parameters(), lr=o.lr_d, betas=o.betas)
            self.sched_d = torch.optim.lr_scheduler.MultiStepLR(self.opt_d, list(o.milestones), o.gamma)
        strategy = cfg.strategy()
        # the strategy's one object (sr_training.sampling.SAMPLERS): what it needs and how it chooses
        self.sampler = build_sampler(strategy, cfg.sampling.tau if cfg.sampling is not None else 1.0,
                                     cfg.sampling.include_original if cfg.sampling is not None else True)
        self.dataset = build_dataset(cfg)
        self.pipeline = DataPipeline.from_config(cfg, self.device, self.rank)  # degrade, crop, pair queue (C6)
        if cfg.data.source == "folder":
            self.note(f"data pipeline: single-GT folder {cfg.data.root} ({len(self.dataset)} images), "
                      f"{cfg.data.degradation.kind} degradation of a {cfg.data.load_size or 400}px crop, "
                      f"pair queue {self.pipeline.queue.size}")
        else:
            self.note(f"data pipeline: {cfg.data.degradation.kind} degradation of the "
                      f"{'gt_size crop (crop_before_degrade)' if cfg.data.crop_before_degrade else 'full original'}, "
                      f"pair queue {self.pipeline.queue.size}")
            self.note(f"groups: {len(self.dataset)} (require_positive={cfg.require_positive()}, "
                      f"data.require_positive={cfg.data.require_positive})")
        self.effective_batch = cfg.data.batch_size * self.world
        want = cfg.data.intended_total_batch
        if want is not None and want != self.effective_batch:
            self.note(f"WARNING: effective batch {self.effective_batch} (data.batch_size {cfg.data.batch_size} x "
                      f"world size {self.world}) differs from data.intended_total_batch {want}")
        self.image_scores = None
        self.iqa = self.iqa_spec = None
        self.sampling_metric: dict | None = None
        if self.sampler.needs is not None:
            from sr_training.iqa import resolve_metric

            self.iqa_spec, why = resolve_metric(cfg.sampling.iqa, "sampling")
            self.sampling_metric = {"metric": self.iqa_spec.name, "reason": why,
                                    "random_init": cfg.sampling.iqa.random_init}
            self.note(f"SAMPLING METRIC ({strategy}): {self.iqa_spec.name} - {why}"
                      + (" [RANDOM-INIT: plumbing only, not a quality]" if cfg.sampling.iqa.random_init else ""))
        if self.sampler.needs == "image":
            from sr_training.iqa import image_scores_for

            self.image_scores = normalise(image_scores_for(self.dataset, cfg.sampling.iqa), self.iqa_spec)
            mask = self.sampler.candidates(self.dataset.labels)
            if (warn := tau_warning(self.image_scores, cfg.sampling.tau, mask)) is not None:
                self.note(f"WARNING: {warn}")
        elif self.sampler.needs == "patch":
            from sr_training.iqa import build_online_metric

            if (err := self.iqa_spec.size_error(cfg.data.gt_size, cfg.data.gt_size)) is not None:
                raise StudyError(f"data.gt_size {cfg.data.gt_size}: AMO scores GT patches of this size, and the "
                                 f"{err} (raise data.gt_size or pin another sampling.iqa.metric)")
            self.iqa_spec, self.iqa = build_online_metric(cfg.sampling.iqa, str(self.device))
        self.chosen = torch.zeros(5, dtype=torch.long)
        self._chosen_at_log = self.chosen.clone()
        self.start_iter = 0
        self.resumed_from: dict | None = None
        self.best: dict | None = None
        self._val_metrics = None
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.amp_bf16 and self.device.type == "cuda"
                         else nullcontext())

    # --- overridable pieces ---------------------------------------------------------------------
    def check_config(self, cfg: TrainConfig) -> None:
        """Refuse (one line) a config this trainer cannot run, before anything is built or read."""

    def build_generator(self) -> torch.nn.Module:
        return build_generator(self.cfg.arch)

    def build_discriminator(self) -> torch.nn.Module | None:
        return UNetDiscriminatorSN(num_feat=self.cfg.loss.d_features) if self.cfg.loss.gan > 0 else None

    def trainable_parameters(self):
        return (p for p in self.net_g.parameters() if p.requires_grad)

    def generator_losses(self, sr: torch.Tensor, target: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        """HGGT's base loss: weighted L1 + VGG19 perceptual + vanilla GAN (D frozen here)."""
        cfg = self.cfg
        losses = {"l1": cfg.loss.l1 * F.l1_loss(sr.float(), target)}
        if self.perceptual is not None:
            losses["perceptual"] = cfg.loss.perceptual * self.perceptual(sr.float(), target)
        if self.d is not None:
            losses["gan_g"] = cfg.loss.gan * gan_loss(self.d(sr).float(), True)
        return losses

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        if self.rank == 0:
            print(msg, file=sys.stderr, flush=True)

    # --- one iteration ------------------------------------------------------------------------
    def count_choices(self, idx: torch.Tensor) -> None:
        """Add this step's GT choices to the counts, summed over all ranks (all_reduce)."""
        counts = torch.bincount(idx.cpu(), minlength=5)
        if self.world > 1:
            buf = counts.to(self.device)
            dist.all_reduce(buf)
            counts = buf.cpu()
        self.chosen += counts

    def step(self, batch: dict, it: int) -> dict[str, float]:
        cfg = self.cfg
        torch.manual_seed(_seed(cfg.seed, it, self.rank, 1))
        gen = torch.Generator().manual_seed(_seed(cfg.seed, it, self.rank, 2))
        data = self.pipeline.next_batch(batch, it)
        lr, gts, labels, index = data["lr"], data["gts"], data["labels"], data["index"]
        patch_scores = image_scores = None
        if self.sampler.needs == "patch":
            patch_scores = amo_scores(self.iqa, gts, self.iqa_spec.sign)
        elif self.sampler.needs == "image":
            image_scores = self.image_scores[index]
        idx = self.sampler.choose(labels, gen, image_scores=image_scores, patch_scores=patch_scores)
        self.count_choices(idx)
        target = gts[torch.arange(gts.shape[0]), idx.to(self.device)]

        self.g.train()
        if self.d is not None:
            self.net_d.requires_grad_(False)
        with self.autocast:
            sr = self.g(lr)
            losses = self.generator_losses(sr, target, batch)
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
        # EMA as BasicSR's BaseModel.model_ema (HGGT's trainer): parameters lerp toward net_g; buffers are copied
        # (BasicSR leaves them; SwinIR's and RRDBNet's are constants, so the two agree). Not
        # torch.optim.swa_utils.AveragedModel: its state dict adds a 'module.' prefix and 'n_averaged' (contract
        # C5's 'ema' key would change and old checkpoints stop loading), and a resumed AveragedModel whose
        # n_averaged is not restored COPIES net_g on its next update instead of averaging - the lerp has no
        # such state to lose.
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.net_g.parameters()):
                pe.lerp_(p.detach(), 1 - cfg.optim.ema)
            for be, b in zip(self.ema.buffers(), self.net_g.buffers()):
                be.copy_(b)
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["total_g"] = float(total.detach())
        return out

    # --- checkpoints ----------------------------------------------------------------------------
    def weights_state(self) -> dict:
        """The trained weights a checkpoint holds: the generator and its EMA (FT: the adapter instead)."""
        return {"net_g": self.net_g.state_dict(), "ema": self.ema.state_dict()}

    def load_weights_state(self, s: dict) -> None:
        self.net_g.load_state_dict(s["net_g"])
        self.ema.load_state_dict(s["ema"])

    def checkpoint_state(self, it: int) -> dict:
        """C5: plain tensors / numbers / strings / containers only (``weights_only=True`` loads it)."""
        s = {"iteration": it, **self.weights_state(), "opt_g": self.opt_g.state_dict(),
             "sched_g": self.sched_g.state_dict(), "chosen": self.chosen.clone(),
             "config": self.cfg.model_dump_json(), "val_due": self._val_due_at == it}
        if self.net_d is not None:
            s |= {"net_d": self.net_d.state_dict(), "opt_d": self.opt_d.state_dict(), "sched_d": self.sched_d.state_dict()}
        pipeline = getattr(self, "pipeline", None)
        if pipeline is not None and hasattr(pipeline, "state_dict"):
            s["pipeline"] = pipeline.state_dict()
        return s

    def load_checkpoint_state(self, s: dict) -> None:
        self.load_weights_state(s)
        self.opt_g.load_state_dict(s["opt_g"])
        self.sched_g.load_state_dict(s["sched_g"])
        if self.net_d is not None:
            self.net_d.load_state_dict(s["net_d"])
            self.opt_d.load_state_dict(s["opt_d"])
            self.sched_d.load_state_dict(s["sched_d"])
        pipeline = getattr(self, "pipeline", None)
        if pipeline is not None and hasattr(pipeline, "load_state_dict") and "pipeline" in s:
            pipeline.load_state_dict(s["pipeline"])
        self.chosen = s["chosen"].clone().cpu()
        self._chosen_at_log = self.chosen.clone()

    def save(self, it: int) -> Path:
        path = save_checkpoint(self.checkpoint_state(it), checkpoint_path(self.out / "checkpoints", it))
        keep = self.cfg.schedule.keep_last
        if keep is not None:
            for old in list_checkpoints(self.out / "checkpoints")[keep:]:
                old.unlink()
        return path

    def resume(self, allow_config_change: bool = False) -> int:
        """Load the newest loadable checkpoint (a truncated one falls back to the previous, with a warning);
        refuse a config that differs from the checkpoint's outside RESUME_SAFE unless allowed."""
        found = latest_loadable(self.out / "checkpoints", self.device, warn=self.note)
        if found is None:
            return 0
        path, s = found
        saved = s["config"] if isinstance(s["config"], dict) else json.loads(s["config"])
        diffs = [d for d in config_diff(saved, json.loads(self.cfg.model_dump_json()))
                 if not any(d[0] == k or d[0].startswith(k + ".") for k in RESUME_SAFE)]
        if diffs:
            text = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs[:5]) + (" ..." if len(diffs) > 5 else "")
            if not allow_config_change:
                raise StudyError(f"resume from {path}: the config differs from the checkpoint's ({text}); "
                                 "pass --allow-config-change to resume anyway, or use a new --out")
            self.note(f"WARNING: resuming with a changed config (--allow-config-change): {text}")
        self.load_checkpoint_state(s)
        self.start_iter = int(s["iteration"])
        self._redo_val = self.start_iter if s.get("val_due") else None
        self.resumed_from = {"iteration": self.start_iter, "checkpoint": str(path),
                             "config_changes": [list(map(str, d)) for d in diffs]}
        best = self.out / "checkpoints" / "best.json"
        if best.is_file():
            self.best = json.loads(best.read_text())
            if self.best.get("iteration", 0) > self.start_iter:
                self.best = None
        return self.start_iter

    def load(self, path: Path) -> int:
        from sr_training.checkpoint import load_checkpoint

        s = load_checkpoint(path, self.device)
        self.load_checkpoint_state(s)
        self.start_iter = int(s["iteration"])
        return self.start_iter

    # --- validation -----------------------------------------------------------------------------
    def validation_network(self) -> torch.nn.Module:
        return self.ema

    def validation_metrics(self) -> list[tuple[str, object, object, int]]:
        """[(column, MetricSpec, pyiqa metric, border crop)] built once through bench's metric factory. FR metrics
        (``val.metrics``) use the FR protocol of ``evaluate`` (bench.scoring.protocol ``hggt``: RGB, crop border
        ``val.crop_border`` - 4 as HGGT - for every FR metric; pyiqa's crop_border option where it has one, else
        the crop is applied here), so a metric name means the same number in val_log.csv and in the store.
        ``psnry`` / ``ssimc`` are pyiqa's Y-PSNR / RGB-SSIM variants. NR metric: ``val.nr_metric`` ('auto' = the
        sampling metric), on the whole SR output."""
        if self._val_metrics is not None:
            return self._val_metrics
        from bench.metrics.factory import create
        from bench.metrics.table import get

        out = [self.fr_val_metric(name) for name in self.cfg.val.metrics]
        nr = self.cfg.val.nr_metric
        if nr == "auto":
            nr = self.iqa_spec.name if self.iqa_spec is not None and not self.cfg.sampling.iqa.random_init else None
        if nr:
            spec = get(nr)
            if spec.mode != "NR":
                raise StudyError(f"val.nr_metric {nr}: is a {spec.mode} metric, expected NR")
            out.append((nr, spec, create(spec, str(self.device)), 0))
        self._val_metrics = out
        return out

    def fr_val_metric(self, name: str) -> tuple[str, object, object, int]:
        """(column, MetricSpec, pyiqa metric, border crop) of one FR validation metric under evaluate's FR protocol
        (bench.scoring.protocol.fr_options 'hggt' with val.crop_border): pyiqa's own crop_border where the metric
        has one, else the crop is applied by validate()."""
        from bench.metrics.table import get
        from bench.scoring.protocol import configured

        spec = get(name)  # psnry / ssimc are table entries of their own (pyiqa's Y-PSNR and RGB-SSIM)
        if spec.mode != "FR":
            raise StudyError(f"val.metrics: '{name}' is not a full-reference metric (NR metrics go in val.nr_metric)")
        cm = configured(spec, "hggt", crop_border=self.cfg.val.crop_border)
        return name, spec, cm.create(str(self.device)), cm.crop

    @torch.no_grad()
    def validate(self, it: int) -> dict[str, dict[str, float]] | None:
        """{image stem: {metric: value}} on the 8-bit SR output (what is saved), FR metrics under the FR protocol
        of ``validation_metrics`` (border crop of SR and HR alike)."""
        v = self.cfg.val
        if not v.dir:
            return None
        hr_dir, lr_dir = Path(v.dir) / "hr", Path(v.dir) / v.lr_subdir
        if not hr_dir.is_dir() or not lr_dir.is_dir():
            raise StudyError(f"val.dir {v.dir}: expected folders hr/ and {v.lr_subdir}/")
        out_dir = self.out / "val" / f"iter_{it:08d}"
        out_dir.mkdir(parents=True, exist_ok=True)
        net, metrics = self.validation_network(), self.validation_metrics()
        scores = {}
        for lr_path in sorted(lr_dir.glob("*.png")):
            sr = net(_load_rgb(lr_path).to(self.device)).clamp(0, 1).cpu()
            sr = (sr * 255).round() / 255  # the saved 8-bit image is what is scored
            atomic_save_image(Image.fromarray((sr[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)),
                              out_dir / lr_path.name)
            hr = _load_rgb(hr_dir / lr_path.name)
            h, w = min(hr.shape[-2], sr.shape[-2]), min(hr.shape[-1], sr.shape[-1])
            a, b = sr[..., :h, :w], hr[..., :h, :w]
            row = {}
            for name, spec, metric, crop in metrics:
                if spec.mode == "NR":
                    value = metric(sr.to(self.device))
                else:
                    value = metric(strip_border(a, crop).to(self.device), strip_border(b, crop).to(self.device))
                row[name] = float(value.reshape(-1)[0])
            scores[lr_path.stem] = row
        return scores

    def _better(self, value: float, than: float) -> bool:
        from bench.metrics.table import get

        name = self.cfg.val.best_metric
        sign = get(name).sign
        return sign * value > sign * than

    def _keep_best(self, it: int, means: dict[str, float]) -> None:
        name = self.cfg.val.best_metric
        if not name:
            return
        if name not in means:
            raise StudyError(f"val.best_metric {name}: not among the validation metrics {sorted(means)}")
        value = means[name]
        if not np.isfinite(value) or (self.best is not None and not self._better(value, self.best["value"])):
            return
        src, dst = checkpoint_path(self.out / "checkpoints", it), self.out / "checkpoints" / "best.pt"
        atomic_copy(src, dst)
        self.best = {"iteration": it, "metric": name, "value": value}
        atomic_write_text(json.dumps(self.best, indent=2), self.out / "checkpoints" / "best.json")

    # --- the loop -------------------------------------------------------------------------------
    def _write_provenance(self, record: dict) -> None:
        atomic_write_text(json.dumps(record, indent=2, default=str), self.out / "provenance.json")

    def fit(self, auto_resume: bool = False, allow_config_change: bool = False) -> dict:
        cfg, sch = self.cfg, self.cfg.schedule
        main = self.rank == 0
        if auto_resume:
            self.resume(allow_config_change)
        if self.resumed_from is None and main and (archived := archive_output(self.out)) is not None:
            self.note(f"{self.out} already existed and is not resumed: archived it to {archived}")
        if self.world > 1:
            dist.barrier()
        self.out.mkdir(parents=True, exist_ok=True)
        previous = []
        if main:
            if self.resumed_from is not None:
                r = self.resumed_from
                print(f"resumed from iteration {r['iteration']} (checkpoint {r['checkpoint']})", flush=True)
                dropped = {n: truncate_rows(self.out / n, self.start_iter)
                           for n in ("train_log.csv", "val_log.csv", "val_images.csv")}
                if any(dropped.values()):
                    self.note(f"dropped log rows after iteration {self.start_iter}: {dropped}")
                old = self.out / "provenance.json"
                if old.is_file():
                    prev = json.loads(old.read_text())
                    previous = prev.pop("previous_sessions", []) + [prev]
            save_config(cfg, self.out / "config.yaml")
            self.provenance = (provenance.new_run("train", json.loads(cfg.model_dump_json()), device=str(self.device),
                                                  seed=cfg.seed)
                               | {"world_size": self.world, "batch_size_per_process": cfg.data.batch_size,
                                  "effective_batch": self.effective_batch,
                                  "intended_total_batch": cfg.data.intended_total_batch,
                                  "precision": "bf16-autocast" if cfg.amp_bf16 and self.device.type == "cuda" else "fp32",
                                  "sampling_metric": self.sampling_metric, "resumed_from": self.resumed_from,
                                  "notes": self.notes, "previous_sessions": previous})
            self._write_provenance(self.provenance)
        writer = None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / "tb"), purge_step=self.start_iter + 1 if self.resumed_from else None)
        sampler = IterationBatchSampler(len(self.dataset), cfg.data.batch_size, cfg.seed, self.start_iter,
                                        sch.total_iters, self.rank, self.world)
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=cfg.data.workers, collate_fn=collate)
        t0, last = time.perf_counter(), {}
        if main and self._redo_val is not None:
            self._redo_validation(writer, self._redo_val)
        self.on_train_start()
        bar = progress_bar(total=sch.total_iters, initial=self.start_iter, desc=cfg.name, unit="it", disable=not main)
        stopped, done = None, self.start_iter
        for it, batch in enumerate(loader, start=self.start_iter):
            if (stop := self.should_stop(it)) is not None:  # every rank gets the same answer (the hook's job)
                stopped = {"iteration": stop[0], "message": stop[1]}
                break
            last = self.step(batch, it)
            done = it + 1
            bar.update(1)
            if main and (done % sch.log_every == 0 or done == sch.total_iters):
                self._log_train(writer, done, last, t0)
                bar.set_postfix(l1=f"{last['l1']:.4f}", g=f"{last['total_g']:.3f}")
            val_due = bool(cfg.val.dir) and (done % sch.val_every == 0 or done == sch.total_iters)
            if main and val_due:
                self._val_due_at = done  # the checkpoint records that this validation is owed
            if main and (val_due or done % sch.checkpoint_every == 0 or done == sch.total_iters):
                self.save(done)  # before validation: a failing validation never costs a checkpoint
            if main and val_due:
                self._validated(writer, done)
        bar.close()
        if writer is not None:
            writer.close()
        if self.world > 1:
            dist.barrier()
        if main:
            self.provenance["finished_at"] = provenance.now().isoformat(timespec="seconds")
            self.provenance["final"] = {"iteration": done, "chosen": self.chosen.tolist(), "best": self.best}
            if stopped is not None:
                self.provenance["stopped"] = stopped
            self._write_provenance(self.provenance)
        return {"last": last, "chosen": self.chosen.tolist(), "stopped": stopped,
                "sec_per_iter": (time.perf_counter() - t0) / max(1, done - self.start_iter)}

    # --- hooks of the loop (a subclass overrides these instead of the loop) ---------------------
    def on_train_start(self) -> None:
        """Before the first iteration of this session (after a resume's redone validation)."""

    def should_stop(self, it: int) -> tuple[int, str] | None:
        """(iteration, message) to end the run before iteration ``it``; None to go on. Called on every rank, which
        must all answer the same (a DDP override broadcasts rank 0's answer)."""
        return None

    def on_validation(self, it: int, scores: dict) -> None:
        """After the validation of iteration ``it`` on rank 0 (``scores``: per image, per metric), before it is
        logged: e.g. the FT reward-hacking guard."""

    def _validated(self, writer, it: int) -> None:
        scores = self.validate(it)
        self.on_validation(it, scores)
        self._log_val(writer, it, scores)

    def _log_train(self, writer, done: int, last: dict, t0: float) -> None:
        lr_g = self.sched_g.get_last_lr()[0]
        row = {"iter": done, **last, "lr_g": lr_g,
               "sec_per_iter": (time.perf_counter() - t0) / max(1, done - self.start_iter),
               **{f"chosen_{k}": int(c) for k, c in enumerate(self.chosen)}}
        append_row(self.out / "train_log.csv", row)
        for k, v in last.items():
            writer.add_scalar(f"loss/{k}", v, done)
        writer.add_scalar("lr/g", lr_g, done)
        writer.add_scalar("time/sec_per_iter", row["sec_per_iter"], done)
        interval = self.chosen - self._chosen_at_log
        self._chosen_at_log = self.chosen.clone()
        if int(interval.sum()):
            writer.add_histogram("sampling/chosen_gt_index", torch.repeat_interleave(torch.arange(5), interval), done,
                                 bins=np.arange(-0.5, 5.5, 1.0))
        total = max(1, int(self.chosen.sum()))
        for k, c in enumerate(self.chosen.tolist()):
            writer.add_scalar(f"sampling/chosen_frac_{k}", c / total, done)
        writer.flush()

    def _redo_validation(self, writer, it: int) -> None:
        """The checkpoint at ``it`` promised a validation that never reached val_log.csv (the run was killed
        between the save and the end of validation): drop its partial rows and validate now."""
        if not self.cfg.val.dir or has_row(self.out / "val_log.csv", it):
            return
        truncate_rows(self.out / "val_images.csv", it - 1)
        self.note(f"the validation of iteration {it} was interrupted (its checkpoint was saved, val_log.csv has "
                  f"no row): validating it again before training on")
        self._val_due_at = it
        self._validated(writer, it)

    def _log_val(self, writer, done: int, scores: dict | None) -> None:
        """val_images.csv rows, best.pt, then the val_log.csv row last: that row marks the validation done."""
        if not scores:
            return
        names = list(next(iter(scores.values())))
        means = {m: float(np.mean([s[m] for s in scores.values()])) for m in names}
        for image, s in scores.items():
            append_row(self.out / "val_images.csv", {"iter": done, "image": image, **s})
        for m, v in means.items():
            writer.add_scalar(f"val/{m}", v, done)
        for path in sorted((self.out / "val" / f"iter_{done:08d}").glob("*.png"))[:4]:
            writer.add_image(f"val/{path.stem}", np.asarray(Image.open(path).convert("RGB")), done, dataformats="HWC")
        writer.flush()
        self._keep_best(done, means)
        append_row(self.out / "val_log.csv", {"iter": done, **means})
