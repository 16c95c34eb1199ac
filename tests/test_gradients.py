"""`differentiable` in the table is verified by a gradient test wherever the arch builds offline."""

import pytest
import torch

from bench.metrics.factory import create
from bench.metrics.table import get

REAL = ["niqe", "piqe", "entropy"]
RANDOM_INIT = ["musiq", "topiq_nr", "cnniqa", "paq2piq", "nima"]


def _input_grad(metric, x):
    x = x.clone().requires_grad_(True)
    try:
        out = metric(x).sum()
        out.backward()
    except RuntimeError as exc:  # "does not require grad": no gradient path at all
        if "does not require grad" in str(exc):
            return None
        raise
    return x.grad


@pytest.mark.parametrize("name", REAL + RANDOM_INIT)
def test_differentiable_flag_is_true(name, niqe_params):
    spec = get(name)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 96, 96) * 0.8 + 0.1
    metric = create(spec, "cpu", as_loss=True, random_init=name in RANDOM_INIT)
    grad = _input_grad(metric, x)
    useful = grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert bool(useful) == spec.differentiable, (
        f"{name}: table says differentiable={spec.differentiable}, gradient test found "
        f"{'a useful' if useful else 'no useful'} input gradient"
    )
    if name == "piqe":
        assert grad is not None and grad.abs().sum() == 0  # torch.round inside: exactly zero
