"""The scoring engine: every unique image (or image/reference pair) scored once per metric configuration.

* Key: (image_id = content hash, ref_id, metric, config_hash); ``ref_id`` is the reference's
  content hash for full-reference (FR) metrics and null for no-reference (NR) ones. Keys already
  in the store are skipped, so a re-run after any interruption (SIGKILL included) finishes the
  job with one row per key.
* FR metrics are pyiqa metrics like every other; their options follow an evaluation protocol
  (bench.scoring.protocol, default HGGT: crop 4, RGB) that is part of the config key.
* Each image is decoded ONCE for all metrics of a run: images are processed in chunks that fit
  ``cache_bytes``; within a chunk the first metric scores while the images decode (in DataLoader
  workers on GPU; in-process on CPU, see ``auto_workers``),
  the other metrics reuse the decoded tensors. At most ONE metric object is alive at a time: a
  metric is released (del, gc, ``torch.cuda.empty_cache``) before the next is created; chunks
  visit the metrics in alternating (snake) order so the metric at a chunk boundary is reused.
* A failing image (decode error, changed file, OOM, exception in the metric, NaN) becomes a row
  with ``status`` and ``error``; the run continues. Transient failures (read ``OSError``, CUDA
  OOM) are retried in the run and their rows carry the prefix ``transient: ``, so a later run
  retries them by default; other stored failures are skipped ("N stored failures skipped")
  unless ``retry_failed``. A metric that fails with the same error on
  ``max_consecutive_errors`` images in a row is stopped (the rest is left unscored).
* Rows are buffered and flushed as atomic Parquet parts (bench.store.layout).
* Sharding: images go to shard int(image_id[:8], 16) % n. Under torchrun (or any launcher that
  sets RANK / WORLD_SIZE) the shard and the GPU (LOCAL_RANK) are taken from the environment.
"""

from __future__ import annotations

import math
import re
import time
import uuid

import torch
from torch.utils.data import DataLoader

from bench import provenance
from bench.errors import StudyError, WeightsMissing, WeightsRefused
from bench.metrics import factory
from bench.metrics.table import MetricSpec
from bench.progress import progress_bar
from bench.scoring.images import (
    TRANSIENT,
    ImageDataset,
    ImageRef,
    check_paths,
    collate,
    refs_from_manifest,
    to_float,
)
from bench.scoring.options import ScoreOptions, options_from
from bench.scoring.plan import Job, MetricSummary, chunks, plan
from bench.scoring.protocol import strip_border
from bench.store.layout import Store


class _Writer:
    """Buffers rows and flushes them as parts. Part names carry a per-writer token, so two
    ``score_refs`` calls of one run never overwrite each other's parts; ``announce`` runs once,
    before the first part is written (the run's provenance record goes in with its first results,
    and a run with nothing to write writes nothing: a read-only store serves a fully cached rerun)."""

    def __init__(self, store: Store, run_id: str, rank: int, flush_rows: int, flush_seconds: float,
                 announce=None):
        self.store, self.rank = store, rank
        self.run_id = f"{run_id}.{uuid.uuid4().hex[:6]}"
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.announce = announce
        self.rows: list[dict] = []
        self.seq = 0
        self.last = time.monotonic()

    def add(self, rows: list[dict]) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= self.flush_rows or time.monotonic() - self.last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            if self.announce is not None:
                self.announce()
                self.announce = None
            self.store.write_scores(self.rows, self.run_id, self.rank, self.seq)
            self.seq += 1
            self.rows = []
        self.last = time.monotonic()


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (OSError, torch.cuda.OutOfMemoryError))


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:500]


def _forward(metric, x: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():
        out = metric(x) if ref is None else metric(x, ref)
    out = out.detach().float().reshape(-1).cpu()
    if out.numel() != x.shape[0]:
        raise RuntimeError(f"metric returned {out.numel()} values for a batch of {x.shape[0]}")
    return out


def _score_stack(metric, xs: list[torch.Tensor], refs: list[torch.Tensor] | None, device: str, crop: int,
                 retries: int) -> list[tuple[float | None, str, str | None, float]]:
    """(score, status, error, seconds) per image of one equal-size batch; retries transient failures,
    then splits a failing batch into single images."""
    def batch(ts):  # a single image needs no stacking copy
        return (to_float(ts[0]).unsqueeze(0) if len(ts) == 1 else torch.stack([to_float(t) for t in ts])).to(device)

    x = strip_border(batch(xs), crop)
    r = strip_border(batch(refs), crop) if refs is not None else None
    error = None
    for attempt in range(retries + 1):
        t0 = time.perf_counter()
        try:
            values = _forward(metric, x, r)
            break
        except Exception as exc:  # noqa: BLE001 - any metric failure becomes a recorded row, never a lost batch
            transient = _is_transient(exc)
            error = (TRANSIENT if transient else "") + _one_line(exc)
            del exc
            if isinstance(error, str) and error.startswith(TRANSIENT + "OutOfMemoryError"):
                torch.cuda.empty_cache()
            if not transient or attempt == retries:
                if len(xs) > 1:
                    return [row for i in range(len(xs)) for row in _score_stack(
                        metric, xs[i:i + 1], refs[i:i + 1] if refs is not None else None, device, crop, retries)]
                return [(None, "error", error, time.perf_counter() - t0)]
            time.sleep(0.1 * (attempt + 1))
    per = (time.perf_counter() - t0) / len(xs)
    out = []
    for v in values.tolist():
        if not math.isfinite(v):
            out.append((None, "nan", f"non-finite score {v}", per))
        else:
            out.append((float(v), "ok", None, per))
    return out


def _normalise_error(text: str) -> str:
    return re.sub(r"\d+", "#", text)[:200]


class _Resident:
    """Holds the single live metric object; creating another releases the previous one first."""

    def __init__(self, device: str):
        self.device, self.name, self.metric = device, None, None

    def get(self, job: Job):
        if self.name == job.spec.name and self.metric is not None:
            return self.metric
        self.drop()
        self.metric = factory.create(job.spec, self.device, kwargs=job.kwargs, cache=False)
        self.name = job.spec.name
        return self.metric

    def drop(self) -> None:
        if self.metric is not None:
            self.metric = None
            self.name = None
            factory.release(self.device)


def _run_batch(job: Job, metric, units, decoded, device, retries, max_consecutive_errors) -> list[dict]:
    """Score one batch of units of equal size; returns store rows (updates the summary)."""
    rows, good = [], []
    for iid, rid in units:
        img = decoded[iid]
        ref = decoded[rid] if rid else None
        err = img["error"]
        if err is None and ref is not None and ref["error"] is not None:
            err = ("reference: " + ref["error"]).replace("reference: " + TRANSIENT, TRANSIENT + "reference: ")
        if err is None and ref is not None and img["tensor"].shape != ref["tensor"].shape:
            (_, h, w), (_, rh, rw) = img["tensor"].shape, ref["tensor"].shape
            err = f"size mismatch: image {w}x{h} vs reference {rw}x{rh}"
        if err is None and (small := job.spec.size_error(*img["tensor"].shape[1:])) is not None:
            err = small  # e.g. NIQE below its 96 px block: one clear row, not pyiqa's internal error
        if err is not None:
            rows.append(_row(job, iid, rid, img, (None, "error", err, 0.0)))
        else:
            good.append((iid, rid, img, ref))
    if good:
        res = _score_stack(metric, [g[2]["tensor"] for g in good],
                           [g[3]["tensor"] for g in good] if job.spec.mode == "FR" else None,
                           device, job.crop, retries)
        for (iid, rid, img, _), r in zip(good, res):
            rows.append(_row(job, iid, rid, img, r))
            if r[1] == "error":
                key = _normalise_error(r[2])
                job.repeats = job.repeats + 1 if key == job.last_error else 1
                job.last_error = key
                if max_consecutive_errors and job.repeats >= max_consecutive_errors and not job.summary.stopped:
                    job.summary.stopped = f"stopped after {job.repeats} identical consecutive errors: {r[2][:200]}"
            else:
                job.repeats, job.last_error = 0, None
    s = job.summary
    for row in rows:
        s.scored += 1
        setattr(s, row["status"], getattr(s, row["status"]) + 1)
        if row["error"] and len(s.first_errors) < 3:
            s.first_errors.append(f"{row['image_id'][:12]}: {row['error']}")
    return rows


def _row(job: Job, iid: str, rid: str | None, img: dict, result) -> dict:
    value, status, error, secs = result
    h, w = tuple(img["tensor"].shape[1:]) if img["tensor"] is not None else (-1, -1)
    return {**job.base, "image_id": iid, "ref_id": rid, "score": value, "status": status, "error": error,
            "input_h": h, "input_w": w, "seconds": secs, "written_at": provenance.now()}


class _Batcher:
    """Feeds a job's units, in order, to the metric in equal-size batches as their images become decoded."""

    def __init__(self, job, metric, units, decoded, device, retries, max_errors, writer, bar):
        self.job, self.metric, self.units, self.decoded = job, metric, units, decoded
        self.device, self.retries, self.max_errors, self.writer, self.bar = device, retries, max_errors, writer, bar
        self.pos, self.batch = 0, []

    def _size(self, unit):
        t = self.decoded[unit[0]]["tensor"]
        return None if t is None else tuple(t.shape)

    def _flush(self) -> None:
        if self.batch and not self.job.summary.stopped:
            t0 = time.perf_counter()
            self.writer.add(_run_batch(self.job, self.metric, self.batch, self.decoded, self.device, self.retries,
                                       self.max_errors))
            self.job.summary.seconds += time.perf_counter() - t0
            self.bar.update(len(self.batch))
        self.batch = []

    def feed(self, final: bool = False) -> None:
        while self.pos < len(self.units) and not self.job.summary.stopped:
            iid, rid = u = self.units[self.pos]
            if iid not in self.decoded or (rid and rid not in self.decoded):
                break
            if self.batch and (self._size(u) != self._size(self.batch[0]) or self._size(u) is None):
                self._flush()
            self.batch.append(u)
            self.pos += 1
            if len(self.batch) >= self.job.bs or self._size(u) is None:
                self._flush()
        if final:
            self._flush()


def _decoded_items(dataset: ImageDataset, workers: int):
    """The dataset's items in order: decoded by ``workers`` DataLoader processes ahead of use, or
    in this process, one at a time, with ``workers=0``. (A background decoding thread was tried on
    CPU: the GIL it takes between the small tensor ops of NIQE/PIQE made them 25-35% slower.)"""
    if workers == 0:
        for i in range(len(dataset)):
            yield dataset[i]
        return
    loader = DataLoader(dataset, batch_size=1, num_workers=min(workers, len(dataset)), collate_fn=collate,
                        persistent_workers=False)
    for (item,) in loader:
        yield item


def score_refs(refs: list[ImageRef], metrics: list[MetricSpec], store: Store, *, run: dict,
               options: ScoreOptions, announce=None) -> list[MetricSummary]:
    """Score ``refs`` with ``metrics`` into ``store`` under ``options`` (ScoreOptions: resolved and validated once
    per run); returns one summary per metric.

    NR metrics score each distinct ``image_id``; FR metrics score each (image_id, ref_id) pair of
    the refs that carry ``ref_id``/``ref_path`` (an image may appear once per reference, e.g. an SR
    output against each of its GTs). ``options.verify_hashes`` checks that the decoded bytes still hash to
    ``image_id`` (and ``ref_id``). The plan (what is left to score) comes first, then the execution.
    """
    o = options
    if not metrics:
        raise StudyError("no metrics to score (--metrics selected none)")
    jobs, paths = plan(refs, metrics, store, o, run_id=run["run_id"])
    writer = _Writer(store, run["run_id"], o.shard.index, o.flush_rows, o.flush_seconds, announce)
    resident = _Resident(o.device)
    total = sum(len(j.units) for j in jobs)
    decode_chunks = chunks(jobs, paths, o.cache_bytes)
    with progress_bar(total=total, desc=f"score (shard {o.shard.index}/{o.shard.count})", unit="img",
                      disable=not o.progress, position=o.shard.index, dynamic_ncols=True) as bar:
        try:
            for k, (chunk, members) in enumerate(decode_chunks):
                order = jobs if k % 2 == 0 else jobs[::-1]
                decoded: dict[str, dict] = {}
                loader = None
                for job in order:
                    units = [u for u in job.units if u[0] in members]
                    if not units or job.summary.unavailable or job.summary.stopped:
                        continue
                    try:
                        metric = resident.get(job)
                    except (WeightsMissing, ImportError, OSError) as exc:
                        job.summary.refused = isinstance(exc, WeightsRefused)
                        job.summary.unavailable = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                        bar.update(len(job.units) - job.summary.scored)
                        continue
                    bar.set_postfix_str(job.spec.name)
                    batcher = _Batcher(job, metric, units, decoded, o.device, o.retries, o.max_consecutive_errors,
                                       writer, bar)
                    if loader is None:  # the first metric of the chunk scores while the images decode
                        items = [(x, paths[x][0], o.verify_hashes, paths[x][2]) for x in chunk]
                        loader = _decoded_items(ImageDataset(items, o.max_pixels, o.pixel_cap), o.workers)
                        for item in loader:
                            decoded[item["image_id"]] = item
                            batcher.feed()
                    batcher.feed(final=True)
                    del metric, batcher
                    writer.flush()
        finally:
            resident.drop()
            writer.flush()
    return [j.summary for j in jobs]


def score_manifest(manifest, metrics: list[MetricSpec], store: Store, register: bool = True,
                   options: ScoreOptions | None = None, **kwargs) -> tuple[dict, list[MetricSummary]]:
    """Check the image root, register the manifest's pairs (unless ``register=False``: e.g. a subset
    of a registered manifest), score its images, record the run. ``options``, or the keywords of
    ``ScoreOptions.resolve``. Returns (run, summaries)."""
    o = options_from(options, kwargs)
    refs = refs_from_manifest(manifest)
    check_paths([r for r in refs if o.shard.owns(r.image_id)], manifest.attrs["iqa_study"].get("root"))
    manifest_id = store.register_manifest(manifest) if register else "subset"
    config = {"metrics": [m.name for m in metrics], "manifest": manifest.attrs["iqa_study"].get("path", ""),
              "manifest_id": manifest_id, **o.record()}
    run = provenance.new_run("score", config, device=o.device, seed=None)
    return run, score_and_record(refs, metrics, store, run, o)


def score_and_record(refs, metrics, store: Store, run: dict, options: ScoreOptions) -> list[MetricSummary]:
    """``score_refs`` with the run's provenance record written next to its results: before the first
    part, and again with the summary when it ends. A run that scores nothing (a fully cached rerun)
    writes nothing, so it also works on a read-only store."""
    wrote = []
    summaries = score_refs(refs, metrics, store, run=run, options=options,
                           announce=lambda: (store.write_run(run), wrote.append(True)))
    run["finished_at"] = provenance.now().isoformat(timespec="seconds")
    run["summary"] = [s.__dict__ for s in summaries]
    if wrote:
        store.write_run(run)
    return summaries
