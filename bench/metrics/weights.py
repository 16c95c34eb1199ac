"""Where each metric's weights live, whether they are present, and how to get them.

Locations follow pyiqa and its backbones exactly (see env.CacheDirs). A user on an offline
cluster points ``--weights-dir`` / $IQA_STUDY_WEIGHTS_DIR at a pre-populated TORCH_HOME-style
folder; nothing here re-implements a pyiqa loader: files are placed where pyiqa looks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.env import cache_dirs, network_available
from bench.errors import WeightsMissing
from bench.metrics.table import MetricSpec, WeightFile

# NIQE pristine-model parameters (BasicSR's niqe_pris_params.npz) are shipped inside the PyPI
# sdist of basicsr-fixed 1.4.2. We only *download* that archive and read one data file from it;
# basicsr is never installed or imported (its import is broken on current torchvision).
NIQE_SDIST = "basicsr-fixed==1.4.2"
NIQE_MEMBER = "basicsr-fixed-1.4.2/basicsr/metrics/niqe_pris_params.npz"
NIQE_NPZ_SHA256 = "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296"
NIQE_CACHE_NAMES = ("niqe_modelparameters.mat", "niqe_matlab_params.mat")  # pyiqa niqe / niqe_matlab


@dataclass(frozen=True)
class FileStatus:
    metric: str
    cache: str
    name: str
    path: str
    present: bool


def locate(wf: WeightFile) -> Path | None:
    """The path pyiqa (or the backbone library) reads ``wf`` from; None when not checkable."""
    dirs = cache_dirs()
    if wf.cache == "pyiqa":
        return dirs.pyiqa / wf.name
    if wf.cache == "torchvision":
        return dirs.torchvision / wf.name
    if wf.cache == "clip":
        return dirs.clip / wf.name
    if wf.cache == "hf":
        return dirs.hf_hub / ("models--" + wf.name.replace("/", "--"))
    if wf.cache == "package":
        pkg, _, rel = wf.name.partition("/")
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            return Path(f"<package {pkg} not installed>") / rel
        return Path(list(spec.submodule_search_locations)[0]) / rel
    return None


def _present(path: Path | None, wf: WeightFile) -> bool:
    if path is None:
        return False
    if wf.cache == "hf":  # a usable HF cache entry has at least one snapshot
        return (path / "snapshots").is_dir() and any((path / "snapshots").iterdir())
    return path.is_file()


def status(spec: MetricSpec) -> list[FileStatus]:
    rows = []
    for wf in spec.weights:
        path = locate(wf)
        rows.append(FileStatus(spec.name, wf.cache, wf.name, str(path) if path else "(remote)", _present(path, wf)))
    return rows


def missing(spec: MetricSpec) -> list[FileStatus]:
    return [s for s in status(spec) if not s.present]


def is_available(spec: MetricSpec) -> bool:
    """True when the metric can produce real scores here without any download."""
    if spec.offline == "real":
        return True
    return bool(spec.weights) and not missing(spec)


def preflight(spec: MetricSpec) -> None:
    """Fail fast, in one line, when a file is missing and no download can happen."""
    gone = missing(spec)
    if not gone or network_available():
        return
    first = gone[0]
    where = Path(first.path).parent
    more = f" (+{len(gone) - 1} more: {', '.join(g.name for g in gone[1:])})" if len(gone) > 1 else ""
    hint = (
        "run `iqa-study weights seed-niqe`" if spec.name in ("niqe", "niqe_matlab")
        else f"or run `iqa-study weights fetch {spec.name}` on a connected machine"
    )
    raise WeightsMissing(
        f"metric '{spec.name}': weight file '{first.name}' is missing and the network is unreachable; "
        f"put it in {where}{more} (or point --weights-dir / $IQA_STUDY_WEIGHTS_DIR at a filled cache), {hint}"
    )


def fetch(spec: MetricSpec) -> None:
    """Download through pyiqa itself (connected machines): building the metric fills the caches."""
    if spec.name in ("niqe", "niqe_matlab"):
        seed_niqe()
        return
    import pyiqa

    pyiqa.create_metric(spec.name, device="cpu")


def _niqe_npz_from_pypi() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation", "-q", "-d", tmp, NIQE_SDIST]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise WeightsMissing(
                f"NIQE parameters: `pip download {NIQE_SDIST}` failed ({done.stderr.strip().splitlines()[-1:]}); "
                f"pass --from PATH to a niqe_pris_params.npz instead"
            )
        archive = next(Path(tmp).glob("*.tar.gz"))
        with tarfile.open(archive) as tar:
            member = tar.extractfile(NIQE_MEMBER)
            if member is None:
                raise WeightsMissing(f"NIQE parameters: {archive.name} has no {NIQE_MEMBER}")
            return member.read()


def seed_niqe(npz_path: str | Path | None = None) -> list[Path]:
    """Write pyiqa's NIQE parameter files into its cache from the BasicSR pristine parameters.

    Source: ``npz_path`` if given, else the PyPI sdist named in NIQE_SDIST. The npz is checked
    against its SHA-256, then its arrays are saved under the key names pyiqa's loader reads.
    Returns the written paths (pyiqa then loads them through its own code).
    """
    import numpy as np
    import scipy.io

    raw = Path(npz_path).read_bytes() if npz_path else _niqe_npz_from_pypi()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != NIQE_NPZ_SHA256:
        raise WeightsMissing(
            f"NIQE parameters {npz_path or NIQE_SDIST}: sha256 {digest[:16]}... is not the expected "
            f"{NIQE_NPZ_SHA256[:16]}... (BasicSR niqe_pris_params.npz)"
        )
    arrays = np.load(io.BytesIO(raw))
    out_dir = cache_dirs().pyiqa
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in NIQE_CACHE_NAMES:
        target = out_dir / name
        tmp = target.with_suffix(".mat.tmp")
        scipy.io.savemat(tmp, {"mu_prisparam": arrays["mu_pris_param"], "cov_prisparam": arrays["cov_pris_param"]})
        tmp.replace(target)
        written.append(target)
    return written
