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


@pytest.fixture(scope="module")
def niqe_kwargs(tmp_path_factory) -> dict:
    """A NIQE parameter file (mean 0, identity covariance): whether an input gradient flows does not
    depend on the parameter values, so no real (shared) parameters are needed."""
    import numpy as np
    import scipy.io

    path = tmp_path_factory.mktemp("niqe") / "params.mat"
    scipy.io.savemat(path, {"mu_prisparam": np.zeros((1, 36)), "cov_prisparam": np.eye(36)})
    return {"pretrained_model_path": str(path)}


@pytest.mark.parametrize("name", REAL + RANDOM_INIT)
def test_differentiable_flag_is_true(name, niqe_kwargs):
    spec = get(name)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 96, 96) * 0.8 + 0.1
    metric = create(spec, "cpu", as_loss=True, random_init=name in RANDOM_INIT,
                    kwargs=niqe_kwargs if name == "niqe" else None)
    grad = _input_grad(metric, x)
    useful = grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert bool(useful) == spec.differentiable, (
        f"{name}: table says differentiable={spec.differentiable}, gradient test found "
        f"{'a useful' if useful else 'no useful'} input gradient"
    )
    if name == "piqe":
        assert grad is not None and grad.abs().sum() == 0  # torch.round inside: exactly zero
