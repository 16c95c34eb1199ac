"""Generators from spandrel (SwinIR, RRDBNet/ESRGAN), in the paper's sizes and tiny test sizes."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.errors import StudyError
from bench.quiet import meshgrid_indexing_notice
from sr_training.config import ArchConfig

# HGGT's SwinIR: embed 180, 6x6 depths/heads, window 8, mlp 2, pixelshuffle, 1conv (method.md 5)
SWINIR = {"full": {"embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6, "window_size": 8, "mlp_ratio": 2.0},
          "tiny": {"embed_dim": 24, "depths": [2], "num_heads": [2], "window_size": 4, "mlp_ratio": 2.0}}
# Real-ESRGAN's RRDBNet: 64 features, 23 blocks (growth 32 is fixed in spandrel's ESRGAN)
RRDB = {"full": {"num_filters": 64, "num_blocks": 23}, "tiny": {"num_filters": 16, "num_blocks": 2}}
SPANDREL_ID = {"swinir": "SwinIR", "rrdb": "ESRGAN"}


def build_generator(cfg: ArchConfig) -> torch.nn.Module:
    if cfg.type == "swinir":
        from spandrel.architectures.SwinIR import SwinIR

        with meshgrid_indexing_notice():
            net = SwinIR(img_size=64, upscale=cfg.scale, img_range=1.0, upsampler="pixelshuffle", resi_connection="1conv",
                         drop_path_rate=cfg.drop_path_rate, **SWINIR[cfg.size])
    else:
        from spandrel.architectures.ESRGAN import ESRGAN

        net = ESRGAN(in_nc=3, out_nc=3, scale=cfg.scale, **RRDB[cfg.size])
    if cfg.pretrained:
        load_pretrained(net, cfg)
    return net


def recognise(state, what: str, path: Path, fail: str, expect: ArchConfig | None = None):
    """spandrel's ModelDescriptor for a state dict that ``checkpoint.read_weights`` read (spandrel's
    own file loader is never used: it runs TorchScript for ``.pt`` and its own unpickler for
    ``.pth``). One-line StudyErrors ``"{what} {path}: {fail} (...)"`` when spandrel does not
    recognise the weights and, with ``expect``, when they hold another architecture or scale."""
    from spandrel import ModelLoader, UnsupportedModelError, canonicalize_state_dict

    try:
        with meshgrid_indexing_notice():  # spandrel builds a SwinIR to recognise its weights
            desc = ModelLoader().load_from_state_dict(canonicalize_state_dict(state))
    except (UnsupportedModelError, RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise StudyError(f"{what} {path}: {fail} ({type(exc).__name__}: {first})") from None
    if expect is not None and (desc.architecture.id != SPANDREL_ID[expect.type] or desc.scale != expect.scale):
        raise StudyError(f"{what} {path}: file holds {desc.architecture.id} x{desc.scale}, "
                         f"config expects {SPANDREL_ID[expect.type]} x{expect.scale}")
    return desc


def load_pretrained(net: torch.nn.Module, cfg: ArchConfig) -> None:
    """Load a user's official weights (e.g. SwinIR / RealESRGAN x4, incl. BasicSR 'params_ema'): read
    with ``torch.load(weights_only=True)`` or safetensors, recognised by spandrel (``recognise``)."""
    from sr_training.checkpoint import read_weights

    path = Path(cfg.pretrained)
    desc = recognise(read_weights(path, "arch.pretrained"), "arch.pretrained", path,
                     "spandrel cannot read it as a model", expect=cfg)
    try:
        net.load_state_dict(desc.model.state_dict(), strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise StudyError(f"arch.pretrained {path}: {desc.architecture.id} weights do not fit the configured "
                         f"'{cfg.size}' {cfg.type} ({first})") from None
