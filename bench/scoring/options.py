"""How a scoring run runs: one frozen, validated ``ScoreOptions`` per run.

``ScoreOptions.resolve`` turns what a caller asks for (the CLI's flags, an API call's keywords) into the values
used: 'auto' device and pixel cap, default decoding workers, every value checked once with a one-line error
naming its flag. The planner (``bench.scoring.plan``) and the executor (``bench.scoring.engine``) read the same
object, and ``record()`` is what the run's provenance stores as its config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from types import MappingProxyType

import torch

from bench.errors import StudyError

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
                     max_consecutive_errors=None, cache_bytes=None, flush_rows=None) -> None:
    """One-line errors for impossible option values, named by their CLI flag (``ScoreOptions`` calls it once)."""
    checks = [("--batch-size", batch_size, 1), ("--workers", workers, 0), ("--max-pixels", max_pixels, 1),
              ("--pixel-cap", pixel_cap, 0), ("--retries", retries, 0),
              ("--max-consecutive-errors", max_consecutive_errors, 1), ("--cache-bytes", cache_bytes, 1),
              ("--flush-rows", flush_rows, 1)]
    for flag, value, low in checks:
        if value is not None and (not isinstance(value, int) or value < low):
            raise StudyError(f"{flag} {value}: expected an integer >= {low}")


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


@dataclass(frozen=True)
class ScoreOptions:
    """Resolved scoring options (build with ``resolve``). ``pixel_cap``: images above it are refused (None: no
    cap); ``metric_kwargs``: per-metric pyiqa options (read-only); the rest as the ``score`` command's flags."""
    device: str = "cpu"
    workers: int = 0
    batch_size: int | None = None
    shard: Shard = Shard()
    max_pixels: int | None = None
    pixel_cap: int | None = CPU_PIXEL_CAP
    retry_failed: bool = False
    retries: int = 2
    max_consecutive_errors: int | None = 20
    cache_bytes: int = DEFAULT_CACHE_BYTES
    verify_hashes: bool = True
    flush_rows: int = 1000
    flush_seconds: float = 30.0
    metric_kwargs: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    fr_protocol: str = "hggt"
    progress: bool = True

    def __post_init__(self):
        validate_options(batch_size=self.batch_size, workers=self.workers, max_pixels=self.max_pixels,
                         pixel_cap=self.pixel_cap, retries=self.retries,
                         max_consecutive_errors=self.max_consecutive_errors, cache_bytes=self.cache_bytes,
                         flush_rows=self.flush_rows)
        if not isinstance(self.shard, Shard):
            raise StudyError(f"shard {self.shard!r}: expected a Shard (the CLI's --shard i/n)")

    @classmethod
    def resolve(cls, *, device: str | None = None, workers: int | None = None, pixel_cap: int | str | None = "auto",
                metric_kwargs: dict | None = None, **options) -> ScoreOptions:
        """The options a run uses: ``device`` None/'auto' -> ``pick_device``; ``workers`` None ->
        ``auto_workers(device)``; ``pixel_cap`` 'auto' -> CPU_PIXEL_CAP on CPU, none on a GPU (0 = none)."""
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise StudyError(f"unknown scoring option(s): {', '.join(unknown)} (known: "
                             f"{', '.join(f.name for f in fields(cls))})")
        device = pick_device(device)
        if pixel_cap == "auto":
            pixel_cap = None if str(device).startswith("cuda") else CPU_PIXEL_CAP
        frozen = MappingProxyType({k: MappingProxyType(dict(v)) for k, v in (metric_kwargs or {}).items()})
        return cls(device=device, workers=auto_workers(device) if workers is None else workers,
                   pixel_cap=pixel_cap or None, metric_kwargs=frozen, **options)

    def record(self) -> dict:
        """The run config's scoring part (JSON-able): every field, the shard as 'i/n'."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("shard", "metric_kwargs")}
        out["shard"] = f"{self.shard.index}/{self.shard.count}"
        out["metric_kwargs"] = {k: dict(v) for k, v in self.metric_kwargs.items()}
        return out


def options_from(options: ScoreOptions | None, kwargs: dict) -> ScoreOptions:
    """The options of an entry point that takes either a ScoreOptions or ``ScoreOptions.resolve``'s keywords."""
    if options is not None and kwargs:
        raise StudyError(f"give ScoreOptions or keywords, not both (got options and {', '.join(sorted(kwargs))})")
    return options if options is not None else ScoreOptions.resolve(**kwargs)
