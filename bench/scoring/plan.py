"""Planning a scoring run: what is left to score, per metric configuration, before anything is decoded.

``plan`` prepares each metric's configuration (pyiqa options and, for FR metrics, the evaluation protocol's
options and border crop: ``bench.scoring.protocol``), hashes it into the config key, asks the store which keys
already hold a current row (``stored_status``: the one current-row rule, ``bench.store.layout.current_scores_sql``)
and returns the jobs with their still-to-score units, and the images to decode. ``chunks`` groups the images into
decode chunks that fit the cache. The executor (``bench.scoring.engine``) runs the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bench.errors import StoreError
from bench.metrics import factory
from bench.metrics.table import MetricSpec
from bench.scoring import protocol
from bench.scoring.images import TRANSIENT, ImageRef, policy_size
from bench.scoring.options import ScoreOptions, auto_batch_size
from bench.store.layout import Store, current_scores_sql


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


def score_files(store: Store) -> list[str]:
    """The store's readable score parts that hold rows (bad parts are skipped and reported by the
    store; the empty-schema part of a fresh store is left out, so a fresh store needs no query), as
    glob-escaped paths for DuckDB's ``read_parquet`` (``bench.store.sql.glob_escape``)."""
    from bench.store.sql import glob_escape

    return [glob_escape(p.path) for p in store.score_parts().good if p.rows != 0]


def stored_status(store: Store, hashes: list[str]) -> dict[tuple, str]:
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
class Job:
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


def plan(refs: list[ImageRef], metrics, store, options: ScoreOptions, *,
          run_id) -> tuple[list[Job], dict[str, tuple[str, tuple[int, int]]]]:
    """Jobs with their still-to-score units, and {id: (path, policy size, root)} for everything to decode."""
    import pyiqa

    shard, max_pixels, device = options.shard, options.max_pixels, options.device
    retry_failed, metric_kwargs, fr_protocol = options.retry_failed, options.metric_kwargs, options.fr_protocol
    batch_size = options.batch_size
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
        cm = protocol.configured(spec, fr_protocol, (metric_kwargs or {}).get(spec.name, {}))
        kwargs, crop = cm.kwargs, cm.crop
        config = {**factory.config_of(spec, kwargs), "max_pixels": max_pixels, "pyiqa": pyiqa.__version__}
        if spec.mode == "FR":
            config.update({"protocol": fr_protocol, "engine_crop_border": crop})
        prepared.append((spec, kwargs, crop, config, factory.config_hash(config)))
    status = stored_status(store, [p[4] for p in prepared])
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
        jobs.append(Job(spec, kwargs, crop, chash, base, summary, todo, bs))
    return jobs, paths


def _nbytes(size: tuple[int, int]) -> int:
    return max(size[0], 1) * max(size[1], 1) * 3


def chunks(jobs: list[Job], paths: dict, cache_bytes: int) -> list[tuple[list[str], set[str]]]:
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
