"""The IQA side of training: which metric (selection.json or override), and stored image-level
scores of every GT for SMA/SMP (joined by content hash from the study's store)."""

from __future__ import annotations

import torch

from bench.errors import StudyError
from bench.metrics.table import MetricSpec, get
from sr_training.config import IQAConfig


def resolve_metric(cfg: IQAConfig, purpose: str = "sampling") -> tuple[MetricSpec, str]:
    """(metric, why): the metric named in the config, or the selection's record for ``purpose``.

    ``purpose`` 'sampling' (AMO/SMA/SMP: no gradient needed) reads selection.json's
    ``sampling_metric``; 'reward' (FT's Q) reads ``reward_metric`` (CONTRACTS C3). Selections
    written before C3 only have ``training_metric`` (the best differentiable metric), read as
    the record for both purposes. Setting both ``metric`` and ``selection`` is refused (the config
    schema already does), so which metric is used is never ambiguous.
    """
    if cfg.metric and cfg.selection:
        raise StudyError("sampling.iqa: set either 'metric' or 'selection', not both")
    if cfg.metric:
        return get(cfg.metric), f"pinned by the config (sampling.iqa.metric={cfg.metric})"
    if not cfg.selection:
        raise StudyError("sampling.iqa: set 'selection' (selection.json from `iqa-study select`) or 'metric'")
    from bench.study.select import read_selection

    sel = read_selection(cfg.selection)
    field = {"sampling": "sampling_metric", "reward": "reward_metric"}[purpose]
    for name in (field, "training_metric"):
        rec = sel.get(name)
        if isinstance(rec, dict) and rec.get("metric"):
            return get(rec["metric"]), f"{name} of {cfg.selection} ({rec.get('reason', 'no reason recorded')})"
    raise StudyError(f"sampling.iqa.selection {cfg.selection}: field '{field}.metric' missing")


def build_online_metric(cfg: IQAConfig, device: str):
    """The AMO scorer: a pyiqa metric in eval mode (random-init only when explicitly configured)."""
    from bench.metrics.factory import create

    spec, _ = resolve_metric(cfg)
    return spec, create(spec, device, random_init=cfg.random_init)


def image_scores_for(dataset, cfg: IQAConfig) -> torch.Tensor:
    """(n_groups, 5) oriented scores (higher = better) of original + 01..04 for every group."""
    from pathlib import Path

    from bench.manifests import schema
    from bench.store import Store
    from bench.store.views import connect

    if not cfg.store or not cfg.manifest:
        raise StudyError("sampling.iqa: sma/smp need 'store' and 'manifest' (the HGGT manifest scored into the store)")
    spec, _ = resolve_metric(cfg)
    manifest = schema.read(cfg.manifest)
    ids = dict(zip(manifest["image_a"], manifest["image_a_id"])) | dict(zip(manifest["image_b"], manifest["image_b_id"]))
    con = connect(Store(cfg.store, create=False))
    from bench.study.configs import (
        config_for_images,  # one configuration per metric (its docstring: the rule)
    )

    hint = f"compute them with `iqa-study score --manifest {cfg.manifest} --metrics {spec.name} --store {cfg.store}`"
    try:
        config = config_for_images(con, spec.name, list(ids.values()))
    except StudyError as exc:
        raise StudyError(f"sampling {spec.name}: {exc}; {hint}") from None
    stored = dict(con.execute("SELECT image_id, score FROM scores WHERE metric = ? AND config_hash = ? AND status = 'ok'",
                              [spec.name, config]).fetchall())
    table, missing = [], []
    images_root = dataset.layout.images
    for i in range(len(dataset)):
        row = []
        for path in dataset.paths(i):
            rel = str(Path(path).relative_to(images_root))
            score = stored.get(ids.get(rel, ""))
            if score is None:
                missing.append(rel)
                score = float("nan")
            row.append(spec.sign * score)
        table.append(row)
    if missing:
        raise StudyError(f"sampling {spec.name}: no stored score for {len(missing)} GT image(s), e.g. {missing[:3]}; "
                         f"{hint}")
    return torch.tensor(table, dtype=torch.float64)
