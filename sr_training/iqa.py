"""The IQA side of training: which metric (selection.json or override), and stored image-level
scores of every GT for SMA/SMP (joined by content hash from the study's store)."""

from __future__ import annotations

import torch

from bench.errors import StudyError
from bench.metrics.table import MetricSpec, get
from sr_training.config import IQAConfig


def resolve_metric(cfg: IQAConfig) -> MetricSpec:
    if cfg.metric:
        return get(cfg.metric)
    if not cfg.selection:
        raise StudyError("sampling.iqa: set 'selection' (selection.json from `iqa-study select`) or 'metric'")
    from bench.study.select import read_selection

    return get(read_selection(cfg.selection)["training_metric"]["metric"])


def build_online_metric(cfg: IQAConfig, device: str):
    """The AMO scorer: a pyiqa metric in eval mode (random-init only when explicitly configured)."""
    from bench.metrics.factory import create

    spec = resolve_metric(cfg)
    return spec, create(spec, device, random_init=cfg.random_init)


def image_scores_for(dataset, cfg: IQAConfig) -> torch.Tensor:
    """(n_groups, 5) oriented scores (higher = better) of original + 01..04 for every group."""
    from pathlib import Path

    from bench.manifests import schema
    from bench.store import Store
    from bench.store.views import connect

    if not cfg.store or not cfg.manifest:
        raise StudyError("sampling.iqa: sma/smp need 'store' and 'manifest' (the HGGT manifest scored into the store)")
    spec = resolve_metric(cfg)
    manifest = schema.read(cfg.manifest)
    ids = dict(zip(manifest["image_a"], manifest["image_a_id"])) | dict(zip(manifest["image_b"], manifest["image_b_id"]))
    con = connect(Store(cfg.store, create=False))
    stored = dict(con.execute("SELECT image_id, score FROM scores WHERE metric = ? AND status = 'ok'", [spec.name]).fetchall())
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
                         f"compute them with `iqa-study score --manifest {cfg.manifest} --metrics {spec.name} "
                         f"--store {cfg.store}`")
    return torch.tensor(table, dtype=torch.float64)
