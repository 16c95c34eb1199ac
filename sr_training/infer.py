"""Load an SR model for inference, and run it whole or in overlapping tiles.

Models (``load_model``), every file read with ``torch.load(weights_only=True)`` (or safetensors),
never with TorchScript or unrestricted pickle:

* this suite's training checkpoint (contract C5: ``iteration``, ``net_g``, ``ema``, ``config``):
  the generator is rebuilt from the saved config (``arch``) and loaded with the EMA weights by
  default (``which='net_g'`` for the raw ones);
* any other state dict spandrel recognises (official SwinIR / Real-ESRGAN x4 files, BasicSR
  ``params_ema`` wrappers, a merged FT model from ``iqa-study merge``): the architecture is
  detected by spandrel from the weights. A JSON sidecar ``<file>.json`` next to it (``iqa-study
  merge`` writes one) supplies the provenance fields (run_name, sampling, iteration, ...); a merged
  FT model gets ``weights='merged'`` and ``ft_variant`` = its FT run's name;
* an adapter-only FT checkpoint is refused with the merge command to run.

Tiling (``upscale``): the LR is cut into ``tile`` x ``tile`` windows whose origins step by
``tile - overlap`` (the last window is flush with the border), each window is super-resolved on
its own and the outputs are averaged where windows overlap - the scheme of SwinIR's
``main_test_swinir.py`` (function ``test``, ``args.tile``/``args.tile_overlap``). A tile at least as
large as the image is one window: the output is exactly the untiled one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydantic import ValidationError

from bench.errors import StudyError
from bench.hashing import sha256_file
from sr_training.checkpoint import FT_ADAPTER, TRAINING, checkpoint_kind

INFO_FIELDS = ("run_name", "run_dir", "arch", "sampling", "ft_variant", "iteration", "checkpoint_sha256", "weights",
               "train_metric", "base_sha256")


@dataclass
class LoadedModel:
    net: torch.nn.Module
    scale: int
    info: dict = field(default_factory=dict)  # INFO_FIELDS + 'source' ('suite' | 'spandrel')


def _read_state(path: Path, map_location) -> dict:
    from sr_training.checkpoint import read_weights

    return read_weights(path, "--checkpoint", map_location)


def _suite_info(state: dict, path: Path, which: str) -> tuple[dict, dict]:
    """(config dict, provenance info) of a suite training checkpoint."""
    cfg = state["config"]
    if isinstance(cfg, str):  # C5: the resolved TrainConfig as a JSON string
        try:
            cfg = json.loads(cfg)
        except json.JSONDecodeError as exc:
            raise StudyError(f"--checkpoint {path}: field 'config' is not JSON ({exc.msg})") from None
    if not isinstance(cfg, dict) or "arch" not in cfg:
        raise StudyError(f"--checkpoint {path}: field 'config' has no 'arch' section")
    if not isinstance(cfg["arch"], dict):
        raise StudyError(f"--checkpoint {path}: field 'config.arch' is {type(cfg['arch']).__name__}, expected a mapping")
    ft = cfg.get("ft") if isinstance(cfg.get("ft"), dict) else None
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    info = {"run_name": cfg.get("name") or path.stem, "run_dir": str(run_dir.resolve()),
            "arch": f"{cfg['arch'].get('type')}-{cfg['arch'].get('size', 'full')}",
            "sampling": (cfg.get("sampling") or {}).get("strategy"),
            "ft_variant": (ft.get("variant") or cfg.get("name")) if ft else None,
            "iteration": _iteration(state, path), "weights": which,
            "train_metric": _sampling_metric(cfg, run_dir)}
    return cfg, info


def _iteration(state: dict, path: Path) -> int | None:
    if "iteration" not in state:
        return None
    try:
        return int(state["iteration"])
    except (TypeError, ValueError):
        raise StudyError(f"--checkpoint {path}: field 'iteration' = {state['iteration']!r}, expected an integer") from None


def _sampling_metric(cfg: dict, run_dir: Path) -> str | None:
    """The metric a base run sampled with: pinned in its config, else the one its provenance.json
    records (a selection's sampling_metric); None for UPos and other metric-free strategies."""
    sampling = cfg.get("sampling") if isinstance(cfg.get("sampling"), dict) else {}
    from sr_training.sampling import uses_metric

    if not uses_metric(sampling.get("strategy")):
        return None
    iqa = sampling.get("iqa") if isinstance(sampling.get("iqa"), dict) else {}
    if isinstance(iqa.get("metric"), str):
        return iqa["metric"]
    try:
        rec = json.loads((run_dir / "provenance.json").read_text()).get("sampling_metric")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None  # no record beside the checkpoint: the label says less, nothing else depends on it
    return rec.get("metric") if isinstance(rec, dict) and isinstance(rec.get("metric"), str) else None


def _sidecar_info(meta: dict) -> dict:
    """Provenance from ``<file>.json``: the record ``iqa-study merge`` writes (sr_training.ft.merge: run_name,
    iteration, arch, arch_size, sampling, adapter_sha256, source_checkpoint), or plain INFO_FIELDS."""
    info = {k: meta[k] for k in INFO_FIELDS if k in meta and k != "checkpoint_sha256"}
    if "adapter_sha256" in meta:  # a merged FT model: its own run, FT variant = the FT run's name
        info["ft_variant"] = meta.get("ft_variant") or meta.get("run_name")
        info["weights"] = "merged"
        reward = meta.get("reward") if isinstance(meta.get("reward"), list) else []
        names = [t["metric"] for t in reward if isinstance(t, dict) and isinstance(t.get("metric"), str)]
        info["train_metric"] = "+".join(names) or None
        info["base_sha256"] = meta.get("base_sha256") if isinstance(meta.get("base_sha256"), str) else None
        if meta.get("arch_size"):
            info["arch"] = f"{meta.get('arch')}-{meta['arch_size']}"
        src = Path(meta.get("source_checkpoint", ""))
        if src.parent.name == "checkpoints":
            info["run_dir"] = str(src.parent.parent)
    return info


BICUBIC = "@bicubic"  # the reference "model": PIL bicubic upsampling of the LR (load_model(BICUBIC))
_BICUBIC_ID = "bicubic upsampling: PIL Image.resize(BICUBIC) of the 8-bit LR (iqa-study reference row, v1)"


class Bicubic(torch.nn.Module):
    """x``scale`` PIL bicubic of an 8-bit LR (the same resize the crop grids show as 'LR (bicubic)'); the
    reference row of every comparison. Not trainable."""

    def __init__(self, scale: int = 4):
        super().__init__()
        self.scale = scale

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        out = []
        for x in lr:
            arr = (x.detach().permute(1, 2, 0).cpu().numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
            im = Image.fromarray(arr).resize((arr.shape[1] * self.scale, arr.shape[0] * self.scale),
                                             Image.Resampling.BICUBIC)
            out.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1))
        return torch.stack(out).to(lr.device)


def bicubic_model(scale: int = 4) -> LoadedModel:
    import hashlib

    info = {"run_name": "bicubic", "run_dir": None, "arch": "bicubic", "sampling": None, "ft_variant": None,
            "iteration": None, "weights": "none", "source": "reference",
            "checkpoint_sha256": hashlib.sha256(f"{_BICUBIC_ID} x{scale}".encode()).hexdigest()}
    return LoadedModel(Bicubic(scale).eval(), scale, info)


def load_model(path: str | Path, which: str = "ema", device: str | torch.device = "cpu") -> LoadedModel:
    """A model ready for ``upscale`` (eval mode, no grad), with its provenance (module docstring).
    ``BICUBIC`` ('@bicubic') is the bicubic reference (refused when a file of that name exists here)."""
    if str(path) == BICUBIC:
        if Path(path).exists():
            raise StudyError(f"--checkpoint {path}: ambiguous, a file of that name exists and '{BICUBIC}' names the "
                             "bicubic reference; pass the file as ./" + str(path))
        return bicubic_model()
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"--checkpoint {path}: file does not exist")
    state = _read_state(path, "cpu")
    sha = sha256_file(path)
    kind = checkpoint_kind(state)
    if kind == FT_ADAPTER:
        raise StudyError(f"--checkpoint {path}: an adapter-only FT checkpoint; merge it into a plain model first "
                         f"(`iqa-study merge --checkpoint {path} -o model.pth`)")
    if kind == TRAINING:
        from sr_training.archs import build_generator
        from sr_training.config import ArchConfig

        if which not in state:
            raise StudyError(f"--checkpoint {path}: no weights '{which}' in it (has: "
                             f"{', '.join(k for k in ('ema', 'net_g') if k in state)})")
        try:  # a safe but malformed checkpoint (fields of the wrong type or value) is one line
            cfg, info = _suite_info(state, path, which)
            arch = ArchConfig.model_validate({**cfg["arch"], "pretrained": None})  # scale > 0 (its schema)
            if not isinstance(state[which], dict):
                raise StudyError(f"--checkpoint {path}: field '{which}' is {type(state[which]).__name__}, "
                                 f"expected a state dict")
            net = build_generator(arch)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise StudyError(f"--checkpoint {path}: field 'config.arch.{'.'.join(map(str, err['loc']))}': "
                             f"{err['msg']}") from None
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            raise StudyError(f"--checkpoint {path}: malformed suite checkpoint ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        try:
            net.load_state_dict(state[which], strict=True)
        except RuntimeError as exc:
            raise StudyError(f"--checkpoint {path}: '{which}' weights do not fit the saved arch "
                             f"({str(exc).splitlines()[0]})") from None
        scale, info["source"] = arch.scale, "suite"
    else:
        from sr_training.archs import recognise

        desc = recognise(state, "--checkpoint", path, "neither a suite checkpoint nor a model spandrel recognises")
        net, scale = desc.model, int(desc.scale)
        info = {"run_name": path.stem, "run_dir": str(path.parent.resolve()), "arch": desc.architecture.id,
                "sampling": None, "ft_variant": None, "iteration": None, "weights": "file", "source": "spandrel"}
        sidecar = path.with_name(path.name + ".json")
        if sidecar.is_file():
            try:
                meta = json.loads(sidecar.read_text())
            except json.JSONDecodeError as exc:
                raise StudyError(f"{sidecar}: invalid JSON ({exc.msg})") from None
            info |= _sidecar_info(meta)
    info["checkpoint_sha256"] = sha
    net = net.to(device).eval().requires_grad_(False)
    return LoadedModel(net, scale, info)


@torch.no_grad()
def upscale(net: torch.nn.Module, lr: torch.Tensor, scale: int, tile: int | None = None, overlap: int = 16) -> torch.Tensor:
    """SR of ``lr`` (N,3,h,w in [0,1]) -> (N,3,h*scale,w*scale) clamped to [0,1]; tiled when ``tile`` is set."""
    n, c, h, w = lr.shape
    if not tile or (tile >= h and tile >= w):
        return net(lr).clamp_(0, 1)
    if overlap < 0 or overlap >= tile:
        raise StudyError(f"--tile {tile} with overlap {overlap}: need 0 <= overlap < tile")
    th, tw = min(tile, h), min(tile, w)

    def origins(size: int, t: int) -> list[int]:
        step = t - overlap if t < size else size
        starts = list(range(0, size - t, step)) + [size - t]
        return sorted(set(starts))

    out = lr.new_zeros(n, c, h * scale, w * scale)
    weight = lr.new_zeros(1, 1, h * scale, w * scale)
    for y in origins(h, th):
        for x in origins(w, tw):
            sr = net(lr[..., y:y + th, x:x + tw])
            out[..., y * scale:(y + th) * scale, x * scale:(x + tw) * scale] += sr
            weight[..., y * scale:(y + th) * scale, x * scale:(x + tw) * scale] += 1
    return (out / weight).clamp_(0, 1)


def load_rgb(path: str | Path) -> torch.Tensor:
    """(1,3,H,W) float32 in [0,1] through the suite's one decoder (bench.scoring.images.read_rgb: 8-bit / 255,
    16-bit / 65535, alpha over white)."""
    from bench.scoring.images import read_rgb

    return torch.from_numpy(read_rgb(path)).permute(2, 0, 1)[None].contiguous()


def save_png(t: torch.Tensor, path: str | Path) -> Path:
    """(1,3,H,W) or (3,H,W) in [0,1] -> 8-bit RGB PNG, x*255 rounded to the nearest integer; written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (t.detach().reshape(-1, *t.shape[-2:]).permute(1, 2, 0).cpu().numpy() * 255.0).round().clip(0, 255)
    from bench.atomic import atomic_write

    return atomic_write(path, lambda tmp: Image.fromarray(arr.astype(np.uint8)).save(tmp, format="PNG"))
