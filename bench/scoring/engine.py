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
import os
import re
import time
import uuid
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from bench import provenance
from bench.errors import StoreError, StudyError, WeightsMissing, WeightsRefused
from bench.metrics import factory
from bench.metrics.table import MetricSpec
from bench.progress import progress_bar
from bench.scoring import protocol
from bench.scoring.images import (
    TRANSIENT,
    ImageDataset,
    ImageRef,
    check_paths,
    collate,
    policy_size,
    refs_from_manifest,
    to_float,
)
from bench.store.layout import Store, current_scores_sql

CPU_PIXEL_CAP = 16_000_000  # default cap on CPU (NIQE reached 17.8 GB RSS at 64 MP); none on GPU
DEFAULT_CACHE_BYTES = 1 << 30


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        """'i/n' from the CLI, else RANK/WORLD_SIZE from a launcher, else 0/1."""
        if text:
            try:
                i, n = (int(v) for v in text.split("/"))
            except ValueError:
                raise StudyError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
            if not 0 <= i < n:
                raise StudyError(f"--shard {text!r}: need 0 <= i < n")
            return cls(i, n)
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))

    def owns(self, image_id: str) -> bool:
        return int(image_id[:8], 16) % self.count == self.index


def pick_device(requested: str | None) -> str:
    """'auto' -> cuda:LOCAL_RANK when CUDA is available, else cpu; refuses (one line) a device that is not
    cpu, cuda or cuda:N, CUDA where there is none, and a CUDA index beyond the devices here."""
    if requested and requested != "auto":
        try:
            dev = torch.device(requested)
        except (RuntimeError, ValueError, TypeError):
            dev = None
        if dev is None or dev.type not in ("cpu", "cuda"):
            raise StudyError(f"--device {requested}: not a device this suite runs on; expected auto, cpu, cuda or "
                             f"cuda:N")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise StudyError(f"--device {requested}: CUDA is not available here (torch {torch.__version__}); "
                             f"use --device cpu or auto")
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise StudyError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
        return requested
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def validate_options(*, batch_size=None, workers=0, max_pixels=None, pixel_cap=None, retries=0,
                     max_consecutive_errors=None, cache_bytes=None) -> None:
    """One-line errors for impossible option values (the CLI and the API share them)."""
    checks = [("--batch-size", batch_size, 1), ("--workers", workers, 0), ("--max-pixels", max_pixels, 1),
              ("--pixel-cap", pixel_cap, 0), ("--retries", retries, 0),
              ("--max-consecutive-errors", max_consecutive_errors, 1), ("--cache-bytes", cache_bytes, 1)]
    for flag, value, low in checks:
        if value is not None and (not isinstance(value, int) or value < low):
            raise StudyError(f"{flag} {value}: expected an integer >= {low}")


@dataclass
class MetricSummary:
    metric: str
    config_hash: str = ""
    skipped_existing: int = 0
    stored_failures_skipped: int = 0
    skipped_no_ref: int = 0
    scored: int = 0
    ok: int = 0
    error: int = 0
    nan: int = 0
    unavailable: str | None = None
    refused: bool = False  # unavailable because a present weight file is not proven safe (verify.WeightsRefused)
    stopped: str | None = None
    seconds: float = 0.0
    first_errors: list[str] = field(default_factory=list)


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

    x = batch(xs)
    r = batch(refs) if refs is not None else None
    if crop:
        x = x[..., crop:-crop, crop:-crop]
        r = r[..., crop:-crop, crop:-crop] if r is not None else None
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


def auto_batch_size(device: str) -> int:
    """Batch 8 on GPUs; 1 on CPU, where batching large images is slower per image (reports/perf)."""
    return 8 if str(device).startswith("cuda") else 1


def auto_workers(device: str) -> int:
    """Decoding worker processes when none are asked for: 0 on CPU, where workers compete with torch's
    intra-op threads for the same cores (2-core machine, 256^2 images: PIQE at 0.62-0.84 of a bare
    loop with 2 workers against 0.93-1.01 with none; reports/perf/README.md); on a GPU, where the
    forward is cheap and decoding is the bottleneck, min(4, usable CPUs per local rank)."""
    if not str(device).startswith("cuda"):
        return 0
    try:
        ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        raise StudyError(f"LOCAL_WORLD_SIZE={os.environ['LOCAL_WORLD_SIZE']!r}: expected an integer") from None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cpus // ranks))


def score_files(store: Store) -> list[str]:
    """The store's readable score parts that hold rows (bad parts are skipped and reported by the
    store; the empty-schema part of a fresh store is left out, so a fresh store needs no query), as
    glob-escaped paths for DuckDB's ``read_parquet`` (``bench.store.sql.glob_escape``)."""
    from bench.store.sql import glob_escape

    return [glob_escape(p.path) for p in store.score_parts().good if p.rows != 0]


def _stored_status(store: Store, hashes: list[str]) -> dict[tuple, str]:
    """{(image_id, ref_id or '', metric, config_hash): 'ok' | 'transient' | 'failed'} for the given configs:
    the status of the key's current row (``bench.store.layout.current_scores_sql``: ok when any stored row is
    ok, else the newest failure, transient or not)."""
    import duckdb

    files = score_files(store)
    if not hashes or not files:
        return {}
    con = duckdb.connect()
    try:
        cols = {r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?, union_by_name=true)",
                                          [files]).fetchall()}
        ref = "" if "ref_id" in cols else ", NULL::VARCHAR AS ref_id"  # parts from before FR scores
        source = f"(SELECT *{ref} FROM read_parquet(?, union_by_name=true) WHERE list_contains(?, config_hash))"
        rows = con.execute(f"SELECT image_id, coalesce(ref_id, ''), metric, config_hash, status = 'ok', "
                           f"coalesce(error, '') FROM ({current_scores_sql(source)})", [files, hashes]).fetchall()
    except duckdb.Error as exc:
        raise StoreError(f"{store.root}/scores: cannot read stored scores ({str(exc).splitlines()[0]})") from None
    finally:
        con.close()
    return {(i, r, m, c): "ok" if ok else "transient" if err.startswith(TRANSIENT) else "failed"
            for i, r, m, c, ok, err in rows}


@dataclass
class _Job:
    spec: MetricSpec
    kwargs: dict
    crop: int
    chash: str
    base: dict
    summary: MetricSummary
    units: list[tuple[str, str | None]]  # (image_id, ref_id) to score, in decode order
    bs: int
    last_error: str | None = None
    repeats: int = 0


def _normalise_error(text: str) -> str:
    return re.sub(r"\d+", "#", text)[:200]


def _plan(refs: list[ImageRef], metrics, store, *, shard, max_pixels, retry_failed, metric_kwargs, fr_protocol,
          batch_size, device, run_id) -> tuple[list[_Job], dict[str, tuple[str, tuple[int, int]]]]:
    """Jobs with their still-to-score units, and {id: (path, policy size, root)} for everything to decode."""
    import pyiqa

    mine = [r for r in refs if shard.owns(r.image_id)]
    mine.sort(key=lambda r: (policy_size(r.width, r.height, max_pixels), r.image_id, r.ref_id or ""))
    paths: dict[str, tuple[str, tuple[int, int], str | None]] = {}
    for r in mine:
        size = policy_size(r.width, r.height, max_pixels)
        paths.setdefault(r.image_id, (r.path, size, r.root))
        if r.ref_id and r.ref_path:
            paths.setdefault(r.ref_id, (r.ref_path, size, r.root))
    prepared = []
    for spec in metrics:
        user = (metric_kwargs or {}).get(spec.name, {})
        if spec.mode == "FR":
            kwargs, crop = protocol.fr_options(spec.name, fr_protocol, user)
        else:
            kwargs, crop = dict(user), 0
        config = {**factory.config_of(spec, kwargs), "max_pixels": max_pixels, "pyiqa": pyiqa.__version__}
        if spec.mode == "FR":
            config.update({"protocol": fr_protocol, "engine_crop_border": crop})
        prepared.append((spec, kwargs, crop, config, factory.config_hash(config)))
    status = _stored_status(store, [p[4] for p in prepared])
    jobs = []
    for spec, kwargs, crop, config, chash in prepared:
        summary = MetricSummary(spec.name, chash)
        if spec.mode == "FR":
            units = list(dict.fromkeys((r.image_id, r.ref_id) for r in mine if r.ref_id and r.ref_path))
            summary.skipped_no_ref = len({r.image_id for r in mine if not (r.ref_id and r.ref_path)})
        else:
            units = list(dict.fromkeys((r.image_id, None) for r in mine))
        todo = []
        for iid, rid in units:
            st = status.get((iid, rid or "", spec.name, chash))
            if st == "ok":
                summary.skipped_existing += 1
            elif st == "failed" and not retry_failed:
                summary.stored_failures_skipped += 1
            else:
                todo.append((iid, rid))
        bs = (batch_size or auto_batch_size(device)) if spec.batchable else 1
        policy = f"max_pixels={max_pixels}" if max_pixels else "native"
        base = {"metric": spec.name, "config_hash": chash, "metric_config": factory.json_config(config),
                "lower_better": spec.lower_better, "random_init": False, "input_policy": policy, "batch_size": bs,
                "device": device, "dtype": "float32", "pyiqa_version": pyiqa.__version__,
                "torch_version": torch.__version__, "run_id": run_id}
        jobs.append(_Job(spec, kwargs, crop, chash, base, summary, todo, bs))
    return jobs, paths


def _nbytes(size: tuple[int, int]) -> int:
    return max(size[0], 1) * max(size[1], 1) * 3


def _chunks(jobs: list[_Job], paths: dict, cache_bytes: int) -> list[tuple[list[str], set[str]]]:
    """(ids to decode, primary image ids) per chunk; decoded sizes fit ``cache_bytes`` (at least one
    image per chunk). Each image's units are scored in exactly one chunk (where it is primary); its
    references are decoded in that chunk too (a reference shared across chunks is decoded again)."""
    refs_of: dict[str, list[str]] = {}
    for job in jobs:
        for iid, rid in job.units:
            lst = refs_of.setdefault(iid, [])
            if rid and rid not in lst:
                lst.append(rid)
    chunks: list[tuple[list[str], set[str]]] = []
    ids: dict[str, None] = {}
    primary: set[str] = set()
    size = 0
    for iid in paths:  # size-sorted decode order
        if iid not in refs_of:
            continue
        need = [x for x in (iid, *refs_of[iid]) if x not in ids]
        nbytes = sum(_nbytes(paths[x][1]) for x in need)
        if primary and size + nbytes > cache_bytes:
            chunks.append((list(ids), primary))
            ids, primary, size = {}, set(), 0
            need = [iid, *(r for r in refs_of[iid] if r != iid)]
            nbytes = sum(_nbytes(paths[x][1]) for x in need)
        ids.update(dict.fromkeys(need))
        primary.add(iid)
        size += nbytes
    if primary:
        chunks.append((list(ids), primary))
    return chunks


class _Resident:
    """Holds the single live metric object; creating another releases the previous one first."""

    def __init__(self, device: str):
        self.device, self.name, self.metric = device, None, None

    def get(self, job: _Job):
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


def _run_batch(job: _Job, metric, units, decoded, device, retries, max_consecutive_errors) -> list[dict]:
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


def _row(job: _Job, iid: str, rid: str | None, img: dict, result) -> dict:
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


def score_refs(refs: list[ImageRef], metrics: list[MetricSpec], store: Store, *, run: dict, device: str = "cpu",
               batch_size: int | None = None, workers: int | None = None, shard: Shard = Shard(), max_pixels: int | None = None,
               pixel_cap: int | None | str = "auto", retry_failed: bool = False, retries: int = 2,
               max_consecutive_errors: int | None = 20, cache_bytes: int = DEFAULT_CACHE_BYTES,
               verify_hashes: bool = True, flush_rows: int = 1000, flush_seconds: float = 30.0,
               metric_kwargs: dict[str, dict] | None = None, fr_protocol: str = "hggt",
               progress: bool = True, announce=None) -> list[MetricSummary]:
    """Score ``refs`` with ``metrics`` into ``store``; returns one summary per metric.

    NR metrics score each distinct ``image_id``; FR metrics score each (image_id, ref_id) pair of
    the refs that carry ``ref_id``/``ref_path`` (an image may appear once per reference, e.g. an SR
    output against each of its GTs). ``pixel_cap='auto'`` = 16 MP on CPU, none on GPU; ``0``/None =
    no cap. ``verify_hashes`` checks that the decoded bytes still hash to ``image_id`` (and ``ref_id``).
    ``workers=None``: ``auto_workers(device)``.
    """
    if pixel_cap == "auto":
        pixel_cap = None if str(device).startswith("cuda") else CPU_PIXEL_CAP
    if workers is None:
        workers = auto_workers(device)
    validate_options(batch_size=batch_size, workers=workers, max_pixels=max_pixels, pixel_cap=pixel_cap,
                     retries=retries, max_consecutive_errors=max_consecutive_errors, cache_bytes=cache_bytes)
    if not metrics:
        raise StudyError("no metrics to score (--metrics selected none)")
    jobs, paths = _plan(refs, metrics, store, shard=shard, max_pixels=max_pixels, retry_failed=retry_failed,
                        metric_kwargs=metric_kwargs, fr_protocol=fr_protocol, batch_size=batch_size, device=device,
                        run_id=run["run_id"])
    writer = _Writer(store, run["run_id"], shard.index, flush_rows, flush_seconds, announce)
    resident = _Resident(device)
    total = sum(len(j.units) for j in jobs)
    chunks = _chunks(jobs, paths, cache_bytes)
    with progress_bar(total=total, desc=f"score (shard {shard.index}/{shard.count})", unit="img", disable=not progress,
              position=shard.index, dynamic_ncols=True) as bar:
        try:
            for k, (chunk, members) in enumerate(chunks):
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
                    batcher = _Batcher(job, metric, units, decoded, device, retries, max_consecutive_errors, writer, bar)
                    if loader is None:  # the first metric of the chunk scores while the images decode
                        items = [(x, paths[x][0], verify_hashes, paths[x][2]) for x in chunk]
                        loader = _decoded_items(ImageDataset(items, max_pixels, pixel_cap), workers)
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
                   **kwargs) -> tuple[dict, list[MetricSummary]]:
    """Check the image root, register the manifest's pairs (unless ``register=False``: e.g. a subset
    of a registered manifest), score its images, record the run. Returns (run, summaries)."""
    device = pick_device(kwargs.pop("device", None))
    shard = kwargs.pop("shard", Shard())
    if kwargs.get("workers") is None:  # recorded in the run config as the value used
        kwargs["workers"] = auto_workers(device)
    refs = refs_from_manifest(manifest)
    check_paths([r for r in refs if shard.owns(r.image_id)], manifest.attrs["iqa_study"].get("root"))
    validate_options(batch_size=kwargs.get("batch_size"), workers=kwargs["workers"])
    manifest_id = store.register_manifest(manifest) if register else "subset"
    config = {"metrics": [m.name for m in metrics], "manifest": manifest.attrs["iqa_study"].get("path", ""),
              "manifest_id": manifest_id, "shard": f"{shard.index}/{shard.count}",
              **{k: v for k, v in kwargs.items() if k in ("batch_size", "workers", "max_pixels", "retry_failed", "flush_rows")}}
    run = provenance.new_run("score", config, device=device, seed=None)
    return run, score_and_record(refs, metrics, store, run, device=device, shard=shard, **kwargs)


def score_and_record(refs, metrics, store: Store, run: dict, **kwargs) -> list[MetricSummary]:
    """``score_refs`` with the run's provenance record written next to its results: before the first
    part, and again with the summary when it ends. A run that scores nothing (a fully cached rerun)
    writes nothing, so it also works on a read-only store."""
    wrote = []
    summaries = score_refs(refs, metrics, store, run=run,
                           announce=lambda: (store.write_run(run), wrote.append(True)), **kwargs)
    run["finished_at"] = provenance.now().isoformat(timespec="seconds")
    run["summary"] = [s.__dict__ for s in summaries]
    if wrote:
        store.write_run(run)
    return summaries
