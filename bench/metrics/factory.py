"""Create pyiqa metrics: always through ``pyiqa.create_metric``, once per process.

The suite never re-implements a metric. This module only (1) checks weights before pyiqa
tries a download and proves every present weight file safe before pyiqa opens it
(``verify.verify_spec``: pyiqa itself loads with ``weights_only=False``), (2) caches metric objects, (3) builds random-initialised networks for
plumbing tests when explicitly asked (such output is never a quality score and is refused
by the scoring engine).
"""

from __future__ import annotations

import contextlib
import json
import pickle
import zipfile
from typing import Any

import torch

from bench.errors import WeightsMissing, WeightsUnreadable
from bench.metrics import verify, weights
from bench.metrics.table import MetricSpec

_CACHE: dict[tuple, Any] = {}


def config_of(spec: MetricSpec, kwargs: dict | None = None) -> dict:
    """The metric configuration that identifies its scores (hashed into the store key): name,
    kwargs and the identity (sha256) of the weight files loaded here (weights.weight_identity)."""
    return {"metric": spec.name, "kwargs": dict(sorted((kwargs or {}).items())),
            **weights.weight_identity(spec, kwargs)}


def json_config(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def config_hash(config: dict) -> str:
    import hashlib

    return hashlib.sha256(json_config(config).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _no_backbone_download():
    """Make timm / torchvision backbones build random-init instead of downloading (plumbing only)."""
    import timm
    import torchvision.models._api as tv_api

    orig_create, orig_verify = timm.create_model, tv_api.WeightsEnum.verify

    def create(name, pretrained=False, *args, **kwargs):
        return orig_create(name, *args, pretrained=False, **kwargs)

    timm.create_model = create
    tv_api.WeightsEnum.verify = classmethod(lambda cls, obj: None)
    try:
        yield
    finally:
        timm.create_model = orig_create
        tv_api.WeightsEnum.verify = orig_verify


def create(
    spec: MetricSpec,
    device: str | torch.device = "cpu",
    *,
    as_loss: bool = False,
    random_init: bool = False,
    kwargs: dict | None = None,
    cache: bool = True,
):
    """Return a ``pyiqa`` InferenceModel for ``spec`` on ``device``, cached for the process.

    ``cache=False`` builds a fresh object that nothing here keeps a reference to, so the caller
    can release it (the scoring engine does, to keep one metric resident at a time; see
    ``release``).

    ``random_init=True`` builds the architecture with random weights (plumbing and gradient
    tests, AMO/FT smoke runs); it is only allowed for entries whose table row says how.
    """
    kwargs = dict(kwargs or {})
    key = (spec.name, str(device), as_loss, random_init, json.dumps(kwargs, sort_keys=True, default=str))
    if cache and key in _CACHE:
        return _CACHE[key]
    try:
        verify.verify_spec(spec, kwargs)  # before pyiqa sees any file (WeightsRefused: one line, the file)
    except WeightsUnreadable as exc:  # truncated/damaged, not crafted: "its weights do not load"
        raise _unreadable(spec, exc.__cause__ or exc) from None
    import pyiqa

    if random_init:
        if spec.offline == "random-init":
            kwargs = {**(spec.random_init_kwargs or {}), **kwargs}
            ctx = contextlib.nullcontext()
        elif spec.offline == "random-init-patched":
            kwargs = {"pretrained": False, **kwargs}
            ctx = _no_backbone_download()
        else:
            raise ValueError(f"metric '{spec.name}' has no random-init route (metrics.yaml offline={spec.offline})")
        with ctx:
            metric = pyiqa.create_metric(spec.name, as_loss=as_loss, device=device, **kwargs)
    else:
        if "pretrained_model_path" not in kwargs:
            weights.preflight(spec)
        if "pretrained_model_path" not in kwargs and weights.pretrained_path(spec) is not None:
            kwargs["pretrained_model_path"] = str(weights.pretrained_path(spec))
        try:
            metric = pyiqa.create_metric(spec.name, as_loss=as_loss, device=device, **kwargs)
        except torch.cuda.OutOfMemoryError:
            raise
        except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
            raise _unreadable(spec, exc) from None
    if cache:
        _CACHE[key] = metric
    return metric


def _unreadable(spec: MetricSpec, exc: BaseException) -> WeightsMissing:
    """A weight file that is there but does not load (truncated download, disk full: torch's
    'PytorchStreamReader failed ...'): the metric is unavailable, in one line naming its files."""
    files = [str(weights.locate(w)) for w in spec.weights if weights.locate(w) is not None]
    first = str(exc).splitlines()[0][:160] if str(exc) else ""
    return WeightsMissing(f"metric '{spec.name}': its weights do not load ({type(exc).__name__}: {first}); "
                          f"check or re-fetch {', '.join(files) or 'its weight files'} "
                          f"(`iqa-study weights status {spec.name}`)")


def release(device: str | torch.device | None = None) -> None:
    """After the caller dropped its last reference to a metric: on CUDA, ``gc.collect()`` (cycles) and
    ``torch.cuda.empty_cache()`` so the next metric gets the memory. On CPU reference counting has
    already freed it, and a full collection would cost ~0.1 s per metric switch."""
    import gc

    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()
