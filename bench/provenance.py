"""What every run records next to its results: versions, config, seed, device, git commit."""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import platform
import socket
import subprocess
import sys
import uuid
from pathlib import Path

PACKAGES = ("iqa-study", "torch", "torchvision", "pyiqa", "numpy", "timm", "transformers", "duckdb", "pyarrow",
            "spandrel", "peft", "kornia", "scikit-learn")


def versions() -> dict[str, str]:
    import torch
    import torchvision

    out = {"python": platform.python_version(), "torch_build": torch.__version__, "torchvision_build": torchvision.__version__}
    for pkg in PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_commit() -> str:
    repo = Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({type(exc).__name__})"
    if done.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return done.stdout.strip() + ("+dirty" if dirty else "")


def device_name(device: str) -> str:
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_run(kind: str, config: dict, device: str = "cpu", seed: int | None = None) -> dict:
    return {
        "run_id": f"{now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}",
        "kind": kind,
        "started_at": now().isoformat(timespec="seconds"),
        "finished_at": None,
        "argv": " ".join(sys.argv),
        "config": config,
        "seed": seed,
        "device": str(device),
        "device_name": device_name(device),
        "host": socket.gethostname(),
        "git_commit": git_commit(),
        "versions": versions(),
    }
