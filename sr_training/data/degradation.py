"""HGGT's blind degradation (method.md 5), batched on any device, every draw from a ``torch.Generator``.

The LR is synthesised from the *original* HR only. Parameters are HGGT's configs
(``options/train/PosNegGTSR/train_SwinIRGAN_PosNegGT_Blind_Pos_x4.yml``,
``train_RealESRGAN_PosNegGT_Blind_Pos_x4.yml``); the order of operations is HGGT's
``basicsr/models/ours_posgt_model.Ours_PosGT_Model.feed_data`` (one stage) and
``basicsr/models/realesrgan_posgt_model.RealESRGAN_PosGT_Model.feed_data`` (two stages). Kernels: see
:mod:`sr_training.data.kernels`.

one_stage (SwinIR / RRDBGAN configs), ``ori = (H, W)``:
  blur (per-sample kernel, sizes {3,5,7,9} padded to 9) -> random resize by a factor (``scale_factor``)
  -> Gaussian or Poisson noise, clamp -> clamp, JPEG [75, 95] -> resize to ``ori // scale`` with the
  *same* interpolation mode the random resize drew (HGGT reuses ``mode``) -> round to 8 bit, clamp.

two_stage (Real-ESRGAN config):
  stage 1: blur (sizes {3,5,7}) -> resize by a factor -> noise, clamp -> clamp, JPEG [85, 95];
  stage 2: blur with probability 0.8 (sizes {3,5}) -> resize to ``int(ori / scale * s)`` (the LR scale,
  so stage-2 noise is added at about LR size) -> noise, clamp; no JPEG of its own;
  final, with probability 0.5 each: [resize to ``ori // scale`` -> final sinc -> clamp, JPEG [87, 95]] or
  [clamp, JPEG [87, 95] -> resize to ``ori // scale`` -> final sinc]; round to 8 bit, clamp.
  Two JPEG compressions in total.

Per batch (as HGGT, one draw for the whole batch): resize up/down/keep, its factor and mode, Gaussian vs
Poisson, whether stage 2 blurs, the final order. Per sample: kernels (HGGT draws them in the dataset),
noise sigma / Poisson scale, grey-noise flag, JPEG quality, whether the final sinc is drawn. The pair
queue (:mod:`sr_training.data.queue`) then mixes samples of different batches.

Noise, as BasicSR's ``basicsr/data/degradations.py`` (``generate_gaussian_noise_pt``,
``generate_poisson_noise_pt``, ``random_add_*_noise_pt`` with ``clip=True, rounds=False``):
Gaussian: colour noise ``N(0, sigma/255)`` per channel, grey noise one ``N(0, sigma/255)`` plane shared
by the channels for grey samples. Poisson: the image rounded to 8 bit, ``vals = 2^ceil(log2(#unique
values))`` per sample, noise ``Poisson(img * vals) / vals - img`` (grey: on the BT.601 luma), times the
sample's scale. The result is clamped to [0, 1].

JPEG (``jpeg``): ``hggt`` (default) is HGGT's codec, BasicSR's ``DiffJPEG(differentiable=False)``
(:mod:`sr_training.data.jpeg`: hard rounding, unrounded scaled tables, zero padding to 16). ``kornia`` is
kornia's ``jpeg_codec_differentiable`` (libjpeg-style floored and clamped tables, a soft rounding
``round(x) + (x - round(x))^3``): NOT HGGT's, about 0.9 dB milder (PSNR to its input) at q 75-95.

``trace``: pass a list to record each operation (op, stage, output size, draws) for tests and audits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.enhance import jpeg_codec_differentiable
from kornia.filters import filter2d

from sr_training.data.jpeg import jpeg_hggt
from sr_training.data.kernels import final_sinc_kernel, random_blur_kernel


@dataclass(frozen=True)
class StageParams:
    kernel_sizes: tuple[int, ...]  # 2v+1 for v in [blur_kernel_size_min, blur_kernel_size_max]
    sigma: tuple[float, float]
    iso_prob: float  # kernel_list ['iso', 'aniso'], kernel_prob [0.7, 0.3]
    sinc_prob: float
    blur_prob: float  # 1 for stage 1 / one stage; second_blur_prob for stage 2
    resize_prob: tuple[float, float, float]  # up, down, keep
    resize_range: tuple[float, float]
    gaussian_noise_prob: float
    noise_sigma: tuple[float, float]  # in 0-255 units
    poisson_scale: tuple[float, float]
    gray_noise_prob: float
    jpeg_range: tuple[float, float]


# train_SwinIRGAN_PosNegGT_Blind_Pos_x4.yml (blur_kernel_size_min 1, max 4 -> {3,5,7,9})
ONE_STAGE = StageParams(kernel_sizes=(3, 5, 7, 9), sigma=(0.1, 1.0), iso_prob=0.7, sinc_prob=0.01, blur_prob=1.0,
                        resize_prob=(0.1, 0.85, 0.05), resize_range=(0.8, 1.2), gaussian_noise_prob=0.5,
                        noise_sigma=(1, 12), poisson_scale=(0.05, 0.8), gray_noise_prob=0.2, jpeg_range=(75, 95))
# train_RealESRGAN_PosNegGT_Blind_Pos_x4.yml (sizes 1..3 -> {3,5,7}; stage 2 1..2 -> {3,5})
TWO_STAGE_1 = StageParams(kernel_sizes=(3, 5, 7), sigma=(0.1, 0.6), iso_prob=0.7, sinc_prob=0.01, blur_prob=1.0,
                          resize_prob=(0.1, 0.85, 0.05), resize_range=(0.9, 1.1), gaussian_noise_prob=0.5,
                          noise_sigma=(1, 8), poisson_scale=(0.05, 0.5), gray_noise_prob=0.2, jpeg_range=(85, 95))
TWO_STAGE_2 = StageParams(kernel_sizes=(3, 5), sigma=(0.1, 0.4), iso_prob=0.7, sinc_prob=0.01, blur_prob=0.8,
                          resize_prob=(0.1, 0.85, 0.05), resize_range=(0.9, 1.1), gaussian_noise_prob=0.5,
                          noise_sigma=(0, 4), poisson_scale=(0.0, 0.3), gray_noise_prob=0.2, jpeg_range=(87, 95))
FINAL_SINC_PROB = 0.1
FINAL_ORDER_PROB = 0.5  # P([resize + sinc] then JPEG)
MODES = ("area", "bilinear", "bicubic")
KINDS = ("one_stage", "two_stage")
JPEG_CODECS = ("hggt", "kornia")


def _u(gen: torch.Generator, lo: float, hi: float, n: int = 1) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def _choice(gen: torch.Generator, options, probs=None):
    if probs is None:
        return options[int(torch.randint(len(options), (1,), generator=gen))]
    idx = int(torch.multinomial(torch.tensor(probs, dtype=torch.float64), 1, generator=gen))
    return options[idx]


def _log(trace, **event):
    if trace is not None:
        trace.append(event)


def _interp(x: torch.Tensor, mode: str, **size_or_factor) -> torch.Tensor:
    return F.interpolate(x, mode=mode, **size_or_factor, **({} if mode == "area" else {"align_corners": False}))


def _blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Per-sample correlation with reflect padding (BasicSR ``img_process_util.filter2D``)."""
    return filter2d(x, kernels.to(device=x.device, dtype=x.dtype), border_type="reflect")


def _kernels(p: StageParams, b: int, gen: torch.Generator, trace) -> torch.Tensor:
    return torch.stack([random_blur_kernel(p.kernel_sizes, p.sigma, p.iso_prob, p.sinc_prob, gen, trace=trace)
                        for _ in range(b)])


def _random_scale(p: StageParams, gen: torch.Generator) -> tuple[float, str]:
    kind = _choice(gen, ("up", "down", "keep"), p.resize_prob)
    scale = float(_u(gen, 1, p.resize_range[1])) if kind == "up" else (
        float(_u(gen, p.resize_range[0], 1)) if kind == "down" else 1.0)
    return scale, _choice(gen, MODES)


def _noise(x: torch.Tensor, p: StageParams, gen: torch.Generator, dgen: torch.Generator, stage, trace) -> torch.Tensor:
    b, _, h, w = x.shape
    gaussian = float(_u(gen, 0, 1)) < p.gaussian_noise_prob
    lo, hi = p.noise_sigma if gaussian else p.poisson_scale
    amount = _u(gen, lo, hi, n=b).to(device=x.device, dtype=x.dtype).view(b, 1, 1, 1)
    gray = (torch.rand(b, generator=gen, dtype=torch.float64) < p.gray_noise_prob).to(x.device, x.dtype).view(b, 1, 1, 1)
    any_gray = bool(gray.any())
    if gaussian:
        noise = torch.randn(x.shape, generator=dgen, device=x.device, dtype=x.dtype) * amount / 255
        if any_gray:
            plane = torch.randn((b, 1, h, w), generator=dgen, device=x.device, dtype=x.dtype) * amount / 255
            noise = noise * (1 - gray) + plane * gray
    else:
        def shot(img):
            img = (img * 255).round().clamp(0, 255) / 255
            vals = torch.tensor([2.0 ** math.ceil(math.log2(len(torch.unique(img[i])))) for i in range(b)],
                                device=x.device, dtype=x.dtype).view(b, 1, 1, 1)
            return torch.poisson(img * vals, generator=dgen) / vals - img

        noise = shot(x)
        if any_gray:
            luma = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # torchvision rgb_to_grayscale
            noise = noise * (1 - gray) + shot(luma).expand_as(x) * gray
        noise = noise * amount
    _log(trace, op="noise", stage=stage, size=(h, w), kind="gaussian" if gaussian else "poisson",
         gray=gray.flatten().bool().tolist())
    return (x + noise).clamp(0, 1)


def _jpeg(x: torch.Tensor, p: StageParams, gen: torch.Generator, stage, trace, codec: str) -> torch.Tensor:
    q = _u(gen, *p.jpeg_range, n=x.shape[0]).to(device=x.device, dtype=torch.float32)
    _log(trace, op="jpeg", stage=stage, size=tuple(x.shape[-2:]), quality=q.tolist(), codec=codec)
    return (jpeg_hggt if codec == "hggt" else jpeg_codec_differentiable)(x.clamp(0, 1), q)


def _blur_resize_noise(x, p: StageParams, gen, dgen, stage, trace, ori=None, lr_scale=None):
    """Blur -> resize -> noise of one stage. Stage 1 resizes by a factor of the current size; stage 2
    (``lr_scale`` given) resizes to ``int(ori / lr_scale * s)``. Returns (x, mode drawn)."""
    kernels = _kernels(p, x.shape[0], gen, trace)
    if p.blur_prob >= 1 or float(_u(gen, 0, 1)) < p.blur_prob:
        x = _blur(x, kernels)
        _log(trace, op="blur", stage=stage, size=tuple(x.shape[-2:]))
    s, mode = _random_scale(p, gen)
    if ori is None:
        x = _interp(x, mode, scale_factor=s)
    else:
        x = _interp(x, mode, size=(int(ori[0] / lr_scale * s), int(ori[1] / lr_scale * s)))
    _log(trace, op="resize", stage=stage, size=tuple(x.shape[-2:]), scale=s, mode=mode)
    return _noise(x, p, gen, dgen, stage, trace), mode


@torch.no_grad()
def degrade(hr: torch.Tensor, kind: str, scale: int, gen: torch.Generator, trace: list | None = None,
            jpeg: str = "hggt") -> torch.Tensor:
    """(B,3,H,W) HR in [0,1] -> (B,3,H//scale,W//scale) LR in [0,1], quantised to 8 bit. ``jpeg``: the
    codec, ``hggt`` or ``kornia`` (module docstring); both consume the same draws.

    Scalar draws come from ``gen`` (CPU); the large noise tensors from a generator on ``hr.device``
    seeded from ``gen``, so the result is a pure function of (hr, kind, scale, gen state).
    """
    if hr.dim() != 4 or hr.shape[1] != 3:
        raise ValueError(f"degrade: expected (B,3,H,W), got {tuple(hr.shape)}")
    if kind not in KINDS:
        raise ValueError(f"degradation kind {kind!r}: expected one_stage or two_stage")
    if jpeg not in JPEG_CODECS:
        raise ValueError(f"degradation jpeg {jpeg!r}: expected hggt or kornia")
    dgen = torch.Generator(device=hr.device).manual_seed(int(torch.randint(2 ** 62, (1,), generator=gen)))
    ori = tuple(hr.shape[-2:])
    lr_size = (ori[0] // scale, ori[1] // scale)
    if kind == "one_stage":
        x, mode = _blur_resize_noise(hr, ONE_STAGE, gen, dgen, 1, trace)
        x = _jpeg(x, ONE_STAGE, gen, 1, trace, jpeg)
        x = _interp(x, mode, size=lr_size)  # HGGT reuses the random resize's mode
        _log(trace, op="resize", stage="final", size=lr_size, mode=mode)
    else:
        x, _ = _blur_resize_noise(hr, TWO_STAGE_1, gen, dgen, 1, trace)
        x = _jpeg(x, TWO_STAGE_1, gen, 1, trace, jpeg)
        x, _ = _blur_resize_noise(x, TWO_STAGE_2, gen, dgen, 2, trace, ori=ori, lr_scale=scale)
        sinc = torch.stack([final_sinc_kernel(TWO_STAGE_2.kernel_sizes, FINAL_SINC_PROB, gen, trace=trace)
                            for _ in range(hr.shape[0])])
        resize_first = float(_u(gen, 0, 1)) < FINAL_ORDER_PROB
        _log(trace, op="final_order", order="resize_sinc_jpeg" if resize_first else "jpeg_resize_sinc")
        if not resize_first:
            x = _jpeg(x, TWO_STAGE_2, gen, "final", trace, jpeg)
        mode = _choice(gen, MODES)
        x = _blur(_interp(x, mode, size=lr_size), sinc)
        _log(trace, op="resize", stage="final", size=lr_size, mode=mode)
        if resize_first:
            x = _jpeg(x, TWO_STAGE_2, gen, "final", trace, jpeg)
    return (x * 255).round().clamp(0, 255) / 255
