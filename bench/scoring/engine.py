"""The scoring engine: every unique image scored once per metric configuration, resumably.

* Key: (image_id = content hash, metric, config_hash). Keys already in the store are skipped,
  so a re-run after any interruption (SIGKILL included) finishes the job with one row per key.
* Rows are buffered and flushed as atomic Parquet parts (bench.store.layout).
* A failing image (decode error, OOM, exception in the metric, NaN) becomes a row with
  ``status`` and ``error``; the run continues and the summary counts failures.
* Sharding: images go to shard int(image_id[:8], 16) % n. Under torchrun (or any launcher that
  sets RANK / WORLD_SIZE) the shard and the GPU (LOCAL_RANK) are taken from the environment.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from bench import provenance
from bench.errors import StudyError, WeightsMissing
from bench.metrics import factory
from bench.metrics.table import MetricSpec
from bench.scoring.images import ImageDataset, ImageRef, SizeBatchSampler, collate, refs_from_manifest
from bench.store.layout import Store


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> "Shard":
        """'i/n' from the CLI, else RANK/WORLD_SIZE from a launcher, else 0/1."""
        if text:
            try:
                i, n = (int(v) for v in text.split("/"))
            except ValueError:
                raise StudyError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
            if not 0 <= i < n:
                raise StudyError(f"--shard {text!r}: need 0 <= i < n")
            return cls(i, n)
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))

    def owns(self, image_id: str) -> bool:
        return int(image_id[:8], 16) % self.count == self.index


def pick_device(requested: str | None) -> str:
    if requested and requested != "auto":
        return requested
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


@dataclass
class MetricSummary:
    metric: str
    config_hash: str = ""
    skipped_existing: int = 0
    scored: int = 0
    ok: int = 0
    error: int = 0
    nan: int = 0
    unavailable: str | None = None
    seconds: float = 0.0
    first_errors: list[str] = field(default_factory=list)


class _Writer:
    def __init__(self, store: Store, run_id: str, rank: int, flush_rows: int, flush_seconds: float):
        self.store, self.run_id, self.rank = store, run_id, rank
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.rows: list[dict] = []
        self.seq = 0
        self.last = time.monotonic()

    def add(self, rows: list[dict]) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= self.flush_rows or time.monotonic() - self.last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.store.write_scores(self.rows, self.run_id, self.rank, self.seq)
            self.seq += 1
            self.rows = []
        self.last = time.monotonic()


def _forward(metric, batch: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = metric(batch)
    out = out.detach().float().reshape(-1).cpu()
    if out.numel() != batch.shape[0]:
        raise RuntimeError(f"metric returned {out.numel()} values for a batch of {batch.shape[0]}")
    return out


def _score_items(metric, items: list[dict], device: str) -> list[tuple[str, float | None, str, str | None, float]]:
    """(image_id, score, status, error, seconds) per item; splits a failing batch into singles."""
    out = [(it["image_id"], None, "error", it["error"], 0.0) for it in items if it["tensor"] is None]
    good = [it for it in items if it["tensor"] is not None]
    if not good:
        return out
    t0 = time.perf_counter()
    try:
        values = _forward(metric, torch.stack([it["tensor"] for it in good]).to(device))
    except Exception as exc:  # any metric failure becomes a recorded row, never a lost batch
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        if len(good) > 1:
            for it in good:
                out.extend(_score_items(metric, [it], device))
            return out
        msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
        return out + [(good[0]["image_id"], None, "error", msg, time.perf_counter() - t0)]
    per = (time.perf_counter() - t0) / len(good)
    for it, v in zip(good, values.tolist()):
        if v != v or v in (float("inf"), float("-inf")):
            out.append((it["image_id"], None, "nan", f"non-finite score {v}", per))
        else:
            out.append((it["image_id"], float(v), "ok", None, per))
    return out


def auto_batch_size(device: str) -> int:
    """Batch 8 on GPUs; 1 on CPU, where batching large images is slower per image (reports/perf)."""
    return 8 if str(device).startswith("cuda") else 1


def score_refs(refs: list[ImageRef], metrics: list[MetricSpec], store: Store, *, run: dict, device: str = "cpu",
               batch_size: int | None = None, workers: int = 2, shard: Shard = Shard(), max_pixels: int | None = None,
               retry_failed: bool = False, flush_rows: int = 1000, flush_seconds: float = 30.0,
               metric_kwargs: dict[str, dict] | None = None, progress: bool = True) -> list[MetricSummary]:
    import pyiqa

    mine = [r for r in refs if shard.owns(r.image_id)]
    batch_size = batch_size or auto_batch_size(device)
    writer = _Writer(store, run["run_id"], shard.index, flush_rows, flush_seconds)
    summaries = []
    for spec in metrics:
        kwargs = (metric_kwargs or {}).get(spec.name, {})
        config = {**factory.config_of(spec, kwargs), "max_pixels": max_pixels, "pyiqa": pyiqa.__version__}
        chash = factory.config_hash(config)
        summary = MetricSummary(spec.name, chash)
        summaries.append(summary)
        done = store.existing_keys(spec.name, chash, include_failed=not retry_failed)
        todo = [r for r in mine if r.image_id not in done]
        summary.skipped_existing = len(mine) - len(todo)
        if not todo:
            continue
        try:
            metric = factory.create(spec, device, kwargs=kwargs)
        except (WeightsMissing, ImportError, OSError) as exc:
            summary.unavailable = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            continue
        bs = batch_size if spec.batchable else 1
        loader = DataLoader(ImageDataset(todo, max_pixels), batch_sampler=SizeBatchSampler(todo, bs, max_pixels),
                            num_workers=workers, collate_fn=collate, persistent_workers=False)
        policy = f"max_pixels={max_pixels}" if max_pixels else "native"
        base = {"metric": spec.name, "config_hash": chash, "metric_config": factory.json_config(config),
                "lower_better": spec.lower_better, "random_init": False, "input_policy": policy, "batch_size": bs,
                "device": device, "dtype": "float32", "pyiqa_version": pyiqa.__version__,
                "torch_version": torch.__version__, "run_id": run["run_id"]}
        t0 = time.perf_counter()
        with tqdm(total=len(todo), desc=f"{spec.name} [{shard.index}/{shard.count}]", unit="img", disable=not progress,
                  position=shard.index, dynamic_ncols=True) as bar:
            for items in loader:
                rows = []
                sizes = {it["image_id"]: tuple(it["tensor"].shape[1:]) if it["tensor"] is not None else (-1, -1)
                         for it in items}
                for iid, value, status, error, secs in _score_items(metric, items, device):
                    h, w = sizes[iid]
                    rows.append({**base, "image_id": iid, "score": value, "status": status, "error": error,
                                 "input_h": h, "input_w": w, "seconds": secs, "written_at": provenance.now()})
                    summary.scored += 1
                    setattr(summary, status, getattr(summary, status) + 1)
                    if error and len(summary.first_errors) < 3:
                        summary.first_errors.append(f"{iid[:12]}: {error}")
                writer.add(rows)
                bar.update(len(items))
        writer.flush()
        summary.seconds = time.perf_counter() - t0
    writer.flush()
    return summaries


def score_manifest(manifest, metrics: list[MetricSpec], store: Store, register: bool = True,
                   **kwargs) -> tuple[dict, list[MetricSummary]]:
    """Register the manifest's pairs (unless ``register=False``: e.g. a subset of a registered
    manifest), score its images, record the run. Returns (run, summaries)."""
    device = pick_device(kwargs.pop("device", None))
    shard = kwargs.pop("shard", Shard())
    manifest_id = store.register_manifest(manifest) if register else "subset"
    config = {"metrics": [m.name for m in metrics], "manifest": manifest.attrs["iqa_study"].get("path", ""),
              "manifest_id": manifest_id, "shard": f"{shard.index}/{shard.count}",
              **{k: v for k, v in kwargs.items() if k in ("batch_size", "workers", "max_pixels", "retry_failed", "flush_rows")}}
    run = provenance.new_run("score", config, device=device, seed=None)
    store.write_run(run)
    summaries = score_refs(refs_from_manifest(manifest), metrics, store, run=run, device=device, shard=shard, **kwargs)
    run["finished_at"] = provenance.now().isoformat(timespec="seconds")
    run["summary"] = [s.__dict__ for s in summaries]
    store.write_run(run)
    return run, summaries
