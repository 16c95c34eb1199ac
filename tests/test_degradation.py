"""HGGT's blind degradation (method.md 5): kernels against their closed forms, per-stage sizes, the
number of JPEG compressions, noise as BasicSR defines it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import j1
from scipy.stats import multivariate_normal

from sr_training.data import degradation as D
from sr_training.data.kernels import final_sinc_kernel, gaussian_kernel, random_blur_kernel, sinc_kernel


def _grid(size):
    ax = np.arange(size) - (size - 1) / 2
    return np.meshgrid(ax, ax)  # xx along columns, yy along rows


@pytest.mark.parametrize("sx,sy,theta", [(1.3, 1.3, 0.0), (2.0, 0.5, math.pi / 6), (0.4, 1.1, -2.0)])
def test_gaussian_kernel_is_the_normalised_bivariate_normal(sx, sy, theta):
    c, s = math.cos(theta), math.sin(theta)
    cov = [[sx ** 2 * c ** 2 + sy ** 2 * s ** 2, (sx ** 2 - sy ** 2) * c * s],
           [(sx ** 2 - sy ** 2) * c * s, sx ** 2 * s ** 2 + sy ** 2 * c ** 2]]
    xx, yy = _grid(7)
    pdf = multivariate_normal(mean=[0, 0], cov=cov).pdf(np.stack([xx, yy], axis=-1))
    k = gaussian_kernel(7, sx, sy, theta)
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(k.numpy(), pdf / pdf.sum(), rtol=1e-9, atol=1e-15)


def test_anisotropic_gaussian_is_elongated_along_theta():
    k = gaussian_kernel(9, 2.0, 0.5, math.pi / 2)  # long axis vertical: along the rows
    assert k[0, 4] > 100 * k[4, 0]


@pytest.mark.parametrize("size,cutoff", [(3, math.pi / 3), (5, 2.0), (9, math.pi)])
def test_sinc_kernel_is_the_circular_lowpass(size, cutoff):
    xx, yy = _grid(size)
    r = np.hypot(xx, yy)
    with np.errstate(invalid="ignore", divide="ignore"):
        airy = cutoff * j1(cutoff * r) / (2 * np.pi * r)
    airy[r == 0] = cutoff ** 2 / (4 * np.pi)  # the limit of w J1(w r) / (2 pi r) at r = 0
    k = sinc_kernel(size, cutoff)
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(k.numpy(), airy / airy.sum(), rtol=1e-9, atol=1e-15)


def _support(k: torch.Tensor) -> int:
    """Width of the centred region outside which the 9x9 kernel is exactly zero-padded."""
    for p in range(5):
        if torch.count_nonzero(k) == torch.count_nonzero(k[4 - p:5 + p, 4 - p:5 + p]):
            return 2 * p + 1
    raise AssertionError


@pytest.mark.parametrize("params,sizes", [(D.ONE_STAGE, {3, 5, 7, 9}), (D.TWO_STAGE_1, {3, 5, 7}),
                                          (D.TWO_STAGE_2, {3, 5})])
def test_sampled_blur_kernels_sizes_and_padding(params, sizes):
    gen, trace, seen = torch.Generator().manual_seed(0), [], set()
    for _ in range(300):
        k = random_blur_kernel(params.kernel_sizes, params.sigma, params.iso_prob, params.sinc_prob, gen, trace=trace)
        drawn = trace[-1]["size"]
        assert k.shape == (9, 9) and float(k.sum()) == pytest.approx(1.0, abs=1e-9)
        assert _support(k) <= drawn  # everything outside the drawn size is zero padding
        seen.add(drawn)
    assert seen == sizes
    families = [e["family"] for e in trace]
    assert 0.6 < families.count("iso") / len(families) < 0.8  # iso 0.7 / aniso 0.3 (sinc 0.01)


def test_final_sinc_kernel_uses_stage2_sizes_padded_to_9_or_a_pulse():
    gen, trace = torch.Generator().manual_seed(1), []
    kernels = [final_sinc_kernel(D.TWO_STAGE_2.kernel_sizes, D.FINAL_SINC_PROB, gen, trace=trace) for _ in range(2000)]
    pulse = torch.zeros(9, 9, dtype=torch.float64)
    pulse[4, 4] = 1
    sinc = [(k, e["size"]) for k, e in zip(kernels, trace) if e["family"] == "sinc"]
    assert 150 < len(sinc) < 250  # probability 0.1 of 2000
    assert {s for _, s in sinc} == {3, 5}
    for k, s in sinc:
        assert k.shape == (9, 9) and _support(k) == s and float(k.sum()) == pytest.approx(1.0, abs=1e-9)
    assert all(torch.equal(k, pulse) for k, e in zip(kernels, trace) if e["family"] == "pulse")


def _events(trace, op, stage=None):
    return [e for e in trace if e.get("op") == op and (stage is None or e.get("stage") == stage)]


@pytest.mark.parametrize("size", [256, 512])
def test_two_stage_sizes_follow_realesrgan(size):
    hr = torch.rand(2, 3, size, size)
    for seed in range(2):
        trace = []
        lr = D.degrade(hr, "two_stage", 4, torch.Generator().manual_seed(seed), trace)
        assert lr.shape == (2, 3, size // 4, size // 4)
        r1, r2, rf = _events(trace, "resize", 1)[0], _events(trace, "resize", 2)[0], _events(trace, "resize", "final")[0]
        assert r1["size"] == (math.floor(size * r1["scale"]),) * 2  # stage 1: a factor of the HR size
        assert int(size * 0.9) <= r1["size"][0] <= int(size * 1.1)
        assert r2["size"] == (int(size / 4 * r2["scale"]),) * 2  # stage 2: the LR scale, ori / 4 * s
        assert int(size / 4 * 0.9) <= r2["size"][0] <= int(size / 4 * 1.1)
        assert _events(trace, "noise", 2)[0]["size"] == r2["size"]  # stage-2 noise at about LR size
        assert rf["size"] == (size // 4, size // 4)
        assert len(_events(trace, "kernel")) == 4 and len(_events(trace, "final_kernel")) == 2  # per sample


def test_two_stage_final_step_order():
    orders = set()
    for seed in range(12):
        trace = []
        D.degrade(torch.rand(1, 3, 32, 32), "two_stage", 4, torch.Generator().manual_seed(seed), trace)
        order = _events(trace, "final_order")[0]["order"]
        orders.add(order)
        final_jpeg = _events(trace, "jpeg", "final")[0]["size"]
        if order == "jpeg_resize_sinc":  # JPEG at the stage-2 size, then resize to LR
            assert final_jpeg == _events(trace, "resize", 2)[0]["size"]
        else:
            assert final_jpeg == (8, 8)
    assert orders == {"jpeg_resize_sinc", "resize_sinc_jpeg"}


@pytest.mark.parametrize("size", [256, 512])
def test_one_stage_sizes_and_final_mode(size):
    for seed in range(2):
        trace = []
        lr = D.degrade(torch.rand(1, 3, size, size), "one_stage", 4, torch.Generator().manual_seed(seed), trace)
        assert lr.shape == (1, 3, size // 4, size // 4)
        r1, rf = _events(trace, "resize", 1)[0], _events(trace, "resize", "final")[0]
        assert int(size * 0.8) <= r1["size"][0] <= int(size * 1.2)
        assert rf["mode"] == r1["mode"]  # HGGT reuses the random resize's interpolation mode


@pytest.mark.parametrize("codec,function", [("hggt", "jpeg_hggt"), ("kornia", "jpeg_codec_differentiable")])
@pytest.mark.parametrize("kind,expected", [("one_stage", 1), ("two_stage", 2)])
def test_number_of_jpeg_compressions(kind, expected, codec, function, monkeypatch):
    calls = []
    real = getattr(D, function)

    def counting(x, q):
        calls.append(tuple(x.shape))
        return real(x, q)

    monkeypatch.setattr(D, function, counting)
    for seed in range(5):
        calls.clear()
        D.degrade(torch.rand(1, 3, 32, 32), kind, 4, torch.Generator().manual_seed(seed), jpeg=codec)
        assert len(calls) == expected


def _noise_only(**kw) -> D.StageParams:
    base = {"kernel_sizes": (3,), "sigma": (0.1, 0.1), "iso_prob": 1, "sinc_prob": 0, "blur_prob": 1,
            "resize_prob": (0, 0, 1), "resize_range": (1, 1), "gaussian_noise_prob": 0, "noise_sigma": (0, 0),
            "poisson_scale": (1, 1), "gray_noise_prob": 0, "jpeg_range": (95, 95)}
    return D.StageParams(**(base | kw))


def test_poisson_noise_uses_the_number_of_grey_levels():
    # BasicSR: vals = 2^ceil(log2(#unique values)); a flat image has 1 level, so the counts are Poisson(x)
    # and the noisy image is x + (k - x), clamped: only 0 and 1 remain (with vals = 255 it stays near 0.5)
    flat = torch.full((1, 3, 32, 32), 128 / 255)
    gen = torch.Generator().manual_seed(0)
    out = D._noise(flat, _noise_only(), gen, torch.Generator().manual_seed(1), 1, None)
    assert ((out - 0).abs() < 1e-6).any() and ((out - 1).abs() < 1e-6).any()
    assert bool((((out - 0).abs() < 1e-6) | ((out - 1).abs() < 1e-6)).all())


def test_grey_noise_is_shared_by_the_channels_and_result_clamped():
    x = torch.full((2, 3, 16, 16), 0.5)
    p = _noise_only(gaussian_noise_prob=1, noise_sigma=(200, 200), gray_noise_prob=1)
    out = D._noise(x, p, torch.Generator().manual_seed(0), torch.Generator().manual_seed(0), 1, None)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert out.min() == 0 and out.max() == 1  # sigma 200/255: clipped as BasicSR's clip=True
    colour = D._noise(x, _noise_only(gaussian_noise_prob=1, noise_sigma=(8, 8)), torch.Generator().manual_seed(0),
                      torch.Generator().manual_seed(0), 1, None)
    assert not torch.equal(colour[:, 0], colour[:, 1])
    assert float((colour - x).std()) == pytest.approx(8 / 255, rel=0.1)


def test_degradations_differ_per_sample():
    trace = []
    D.degrade(torch.rand(8, 3, 64, 64), "two_stage", 4, torch.Generator().manual_seed(3), trace)
    q = _events(trace, "jpeg")[0]["quality"]
    assert len(set(q)) == 8 and all(85 <= v <= 95 for v in q)
