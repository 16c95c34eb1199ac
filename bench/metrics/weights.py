"""Where each metric's weights live, whether they are present, how to get them, and their identity.

Locations follow pyiqa and its backbones exactly (see env.CacheDirs). A user on an offline
cluster points ``--weights-dir`` / $IQA_STUDY_WEIGHTS_DIR at a pre-populated TORCH_HOME-style
folder; nothing here re-implements a pyiqa loader. Files iqa-study itself provides (the NIQE
parameters) live in its own cache (``env.cache_dirs().study``) and are passed to pyiqa as
``pretrained_model_path``; pyiqa's cache is never written by this module.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import tarfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from bench.atomic import atomic_write_bytes, atomic_write_text
from bench.env import cache_dirs, network_available
from bench.errors import WeightsMissing
from bench.hashing import sha256_file
from bench.metrics.table import MetricSpec, WeightFile

# NIQE pristine-model parameters: BasicSR's ``basicsr/metrics/niqe_pris_params.npz`` (the file HGGT
# and BasicSR's ``calculate_niqe`` use), shipped inside the PyPI sdist of basicsr-fixed 1.4.2. We
# download that archive by URL and read one data member from it in memory: nothing from it is
# installed, built or executed (``pip download`` of an sdist runs its setup.py before any check).
NIQE_PROJECT = "basicsr-fixed"
NIQE_ARCHIVE = "basicsr-fixed-1.4.2.tar.gz"
NIQE_ARCHIVE_SHA256 = "a9dd0989bc4af9e0dda656c83e61f9b01ff89da1f432018e575e56ad25e0d684"  # PyPI, 173,663 bytes
NIQE_ARCHIVE_MAX_BYTES = 8 << 20
NIQE_MEMBER = "basicsr-fixed-1.4.2/basicsr/metrics/niqe_pris_params.npz"
NIQE_NPZ_SHA256 = "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296"
# sha256 over little-endian float64 bytes of ravel(mu_pris_param) then cov_pris_param: identifies the
# parameter *values* in any container (.npz, or a .mat whose header bytes differ).
NIQE_PARAMS_DIGEST = "f6284a2b53fd40bbc960472b76ec55b67a299a0270294b804c847e99b8cc1e30"
NIQE_DIR = "niqe"  # under env.cache_dirs().study; pyiqa's own cache is never written
NIQE_MAT = "niqe_pris_params.mat"
DEFAULT_INDEX = "https://pypi.org/simple"
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by iqa-study from BasicSR niqe_pris_params.npz"


@dataclass(frozen=True)
class FileStatus:
    metric: str
    cache: str
    name: str
    path: str
    present: bool


def locate(wf: WeightFile) -> Path | None:
    """The path pyiqa (or the backbone library, or iqa-study's own cache) reads ``wf`` from; None when not checkable."""
    dirs = cache_dirs()
    if wf.cache == "pyiqa":
        return dirs.pyiqa / wf.name
    if wf.cache == "torchvision":
        return dirs.torchvision / wf.name
    if wf.cache == "clip":
        return dirs.clip / wf.name
    if wf.cache == "hf":
        return dirs.hf_hub / ("models--" + wf.name.replace("/", "--"))
    if wf.cache == "iqa-study":
        return dirs.study / wf.name
    if wf.cache == "package":
        pkg, _, rel = wf.name.partition("/")
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            return Path(f"<package {pkg} not installed>") / rel
        return Path(next(iter(spec.submodule_search_locations))) / rel
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


def niqe_params_digest(path: str | Path) -> str | None:
    """NIQE_PARAMS_DIGEST-style digest of the parameters in a pyiqa-style ``.mat`` (None if unreadable)."""
    import numpy as np
    import scipy.io

    try:
        params = scipy.io.loadmat(path)
        mu, cov = np.ravel(params["mu_prisparam"]), params["cov_prisparam"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(mu, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(cov, dtype="<f8").tobytes())
    return h.hexdigest()


def unavailable_reason(spec: MetricSpec) -> str | None:
    """Why a metric whose files are present still must not be offered (None: no such reason).

    ``niqe_matlab`` (pyiqa: NIQE(version='matlab') loading ``niqe_matlab_params.mat``,
    pyiqa/archs/niqe_arch.py NIQE.__init__) differs from ``niqe`` only by that parameter file; a copy
    holding the BasicSR parameters (older iqa-study versions wrote one) would score exactly as
    ``niqe`` under another name, so it is refused.
    """
    if spec.name != "niqe_matlab" or missing(spec):
        return None
    path = locate(spec.weights[0])
    if niqe_params_digest(path) == NIQE_PARAMS_DIGEST:
        return (f"metric 'niqe_matlab': {path} holds BasicSR's NIQE parameters, the same as 'niqe' (written by an "
                f"older `seed-niqe`); delete it and run `iqa-study weights fetch niqe_matlab` on a connected machine")
    return None


def is_available(spec: MetricSpec) -> bool:
    """True when the metric can produce real scores here without any download."""
    if spec.offline == "real":
        return True
    return bool(spec.weights) and not missing(spec) and unavailable_reason(spec) is None


def pretrained_path(spec: MetricSpec) -> Path | None:
    """The file to pass as pyiqa's ``pretrained_model_path`` (package-shipped weights and
    iqa-study's own cache); None when pyiqa loads from its own cache."""
    if spec.weights and (spec.offline == "package" or spec.weights[0].cache == "iqa-study"):
        return locate(spec.weights[0])
    return None


def preflight(spec: MetricSpec) -> None:
    """Fail fast, in one line, when a file is missing and no download can happen."""
    reason = unavailable_reason(spec)
    if reason:
        raise WeightsMissing(reason)
    gone = missing(spec)
    own_cache = any(g.cache == "iqa-study" for g in gone)  # pyiqa never downloads these
    if not gone or (network_available() and not own_cache):
        return
    first = gone[0]
    where = Path(first.path).parent
    more = f" (+{len(gone) - 1} more: {', '.join(g.name for g in gone[1:])})" if len(gone) > 1 else ""
    if spec.name == "niqe":
        raise WeightsMissing(
            f"metric 'niqe': parameter file {first.path} is missing; run `iqa-study weights seed-niqe` "
            f"(downloads and checks BasicSR's niqe_pris_params.npz) or `seed-niqe --from FILE.npz`"
        )
    raise WeightsMissing(
        f"metric '{spec.name}': weight file '{first.name}' is missing and the network is unreachable; "
        f"put it in {where}{more} (or point --weights-dir / $IQA_STUDY_WEIGHTS_DIR at a filled cache), "
        f"or run `iqa-study weights fetch {spec.name}` on a connected machine"
    )


def fetch(spec: MetricSpec) -> None:
    """Download through pyiqa itself (connected machines): building the metric fills the caches.
    NIQE's parameters come from ``seed_niqe`` (pyiqa's own NIQE file is not what BasicSR/HGGT use).

    Files already in the caches are proven safe first (``verify.verify_spec``: pyiqa would load them
    as they are), and what the fetch leaves there is checked again, so a folder `fetch` reports as
    filled is one the next run accepts."""
    from bench.metrics.verify import verify_spec

    if spec.name == "niqe":
        seed_niqe()
        return
    verify_spec(spec)
    import pyiqa

    pyiqa.create_metric(spec.name, device="cpu")
    verify_spec(spec)


# --- weight identity (part of the metric configuration key) ---------------------------------
_HASHES: dict[tuple[str, int, int, int], str] = {}
HASH_INDEX = "weight-hashes.json"  # under env.cache_dirs().study: {path: [inode, size, mtime_ns, sha256]}


def _hash_index() -> Path:
    return cache_dirs().study / HASH_INDEX


def _load_index() -> dict:
    try:
        data = json.loads(_hash_index().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, memoised per (path, inode, size, mtime): in this process and in
    ``<iqa-study cache>/weight-hashes.json`` (multi-GB weights are hashed once per machine; a
    changed file has another inode/size/mtime and is hashed again)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _HASHES:
        return _HASHES[key]
    index = _load_index()
    entry = index.get(key[0])
    if isinstance(entry, list) and len(entry) == 4 and tuple(entry[:3]) == key[1:] and isinstance(entry[3], str):
        _HASHES[key] = entry[3]
        return entry[3]
    _HASHES[key] = sha256_file(path)
    if st.st_size >= 1 << 20:  # small files are cheaper to hash than to index
        index[key[0]] = [*key[1:], _HASHES[key]]
        try:
            atomic_write_text(json.dumps(index, indent=0, sort_keys=True), _hash_index())
        except OSError:  # a read-only cache only costs a re-hash next time
            pass
    return _HASHES[key]


def weight_identity(spec: MetricSpec, kwargs: dict | None = None) -> dict:
    """``{"weights": {name: identity}}`` for the weight files a metric loads here ({} when none).

    Identity is the file's sha256; for a Hugging Face cache entry, the snapshot revision(s). An
    explicit ``pretrained_model_path`` kwarg is identified by its own file. Files that are absent
    are left out (the metric cannot score without them). Meant to be merged into the metric
    configuration that is hashed into the store key, so scores of other weights never mix.
    """
    explicit = (kwargs or {}).get("pretrained_model_path")
    if explicit:
        path = Path(explicit)
        return {"weights": {"pretrained_model_path": file_sha256(path) if path.is_file() else "absent"}}
    out = {}
    for wf in spec.weights:
        path = locate(wf)
        if not _present(path, wf):
            continue
        if wf.cache == "hf":
            out[wf.name] = "revision:" + ",".join(sorted(p.name for p in (path / "snapshots").iterdir()))
        else:
            out[wf.name] = "sha256:" + file_sha256(path)
    return {"weights": out} if out else {}


# --- NIQE parameters: fetched as data, never executed ----------------------------------------
class _Links(HTMLParser):
    """PEP 503 simple-index page: (file name, href) of every anchor."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data):
        if self._href is not None:
            self.links.append((data.strip(), self._href))
            self._href = None


def index_urls() -> list[str]:
    """The package indexes to ask, in order: $PIP_INDEX_URL (else PyPI), then $PIP_EXTRA_INDEX_URL."""
    first = os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX
    return [first, *os.environ.get("PIP_EXTRA_INDEX_URL", "").split()]


def _get(url: str, accept: str | None = None, limit: int = NIQE_ARCHIVE_MAX_BYTES) -> tuple[bytes, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=60) as resp:
        body = resp.read(limit + 1)
        ctype = resp.headers.get("Content-Type", "") if hasattr(resp, "headers") else ""
    if len(body) > limit:
        raise WeightsMissing(f"NIQE parameters: {url} is larger than {limit} bytes; refusing it")
    return body, ctype or ""


def archive_url(index: str) -> str:
    """URL of NIQE_ARCHIVE on a simple index (PEP 691 JSON or PEP 503 HTML page of NIQE_PROJECT)."""
    page = index.rstrip("/") + f"/{NIQE_PROJECT}/"
    body, ctype = _get(page, "application/vnd.pypi.simple.v1+json, text/html;q=0.1")
    if "json" in ctype:
        links = [(f.get("filename", ""), f.get("url", "")) for f in json.loads(body).get("files", [])]
    else:
        parser = _Links()
        parser.feed(body.decode("utf-8", "replace"))
        links = parser.links
    for name, href in links:
        if name == NIQE_ARCHIVE:
            return urllib.parse.urljoin(page, href.split("#", 1)[0])
    raise WeightsMissing(f"NIQE parameters: {page} does not list {NIQE_ARCHIVE}")


def npz_from_archive(raw: bytes, source: str) -> bytes:
    """Check the archive's pinned sha256, then read the one .npz member (a regular file) into memory.
    Nothing is extracted to disk and no other member is read."""
    digest = hashlib.sha256(raw).hexdigest()
    if digest != NIQE_ARCHIVE_SHA256:
        raise WeightsMissing(f"NIQE parameters: {source}: archive sha256 {digest[:16]}... is not the pinned "
                             f"{NIQE_ARCHIVE_SHA256[:16]}... of {NIQE_ARCHIVE}; refusing it")
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            member = tar.getmember(NIQE_MEMBER)
            fh = tar.extractfile(member) if member.isfile() else None
            if fh is None:
                raise WeightsMissing(f"NIQE parameters: {source}: {NIQE_MEMBER} is not a regular file")
            return fh.read()
    except (tarfile.TarError, KeyError, OSError) as exc:
        raise WeightsMissing(f"NIQE parameters: {source}: cannot read {NIQE_MEMBER} ({exc})") from None


def _niqe_npz_from_index() -> tuple[bytes, str]:
    errors = []
    for index in index_urls():
        try:
            url = archive_url(index)
            raw, _ = _get(url)
        except (OSError, ValueError, WeightsMissing) as exc:  # URLError is an OSError
            errors.append(f"{index}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            continue
        return npz_from_archive(raw, url), url
    raise WeightsMissing(f"NIQE parameters: could not download {NIQE_ARCHIVE} ({'; '.join(errors)}); "
                         f"pass --from PATH to a niqe_pris_params.npz instead")


def niqe_mat_path() -> Path:
    return cache_dirs().study / NIQE_DIR / NIQE_MAT


def seed_niqe(npz_path: str | Path | None = None) -> list[Path]:
    """Put BasicSR's NIQE pristine parameters into iqa-study's own cache as a pyiqa-loadable .mat.

    Source: ``npz_path`` if given, else NIQE_ARCHIVE from the configured package index (see
    ``index_urls``; archive sha256 pinned, one member read, nothing executed). The npz must match
    NIQE_NPZ_SHA256. Its arrays are saved under the keys pyiqa's NIQE reads (``mu_prisparam``,
    ``cov_prisparam``: pyiqa/archs/niqe_arch.py NIQE.__init__) with a fixed header, so the file
    bytes (and its weight identity) are the same on every machine. The factory passes the file as
    ``pretrained_model_path``; pyiqa's own cache names are never written. Returns [npz, mat].
    """
    import numpy as np
    import scipy.io

    if npz_path:
        src = Path(npz_path)
        if not src.is_file():
            raise WeightsMissing(f"seed-niqe --from {src}: file does not exist (expected BasicSR's niqe_pris_params.npz)")
        raw, source = src.read_bytes(), str(src)
    else:
        raw, source = _niqe_npz_from_index()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != NIQE_NPZ_SHA256:
        raise WeightsMissing(f"NIQE parameters {source}: sha256 {digest[:16]}... is not the expected "
                             f"{NIQE_NPZ_SHA256[:16]}... (BasicSR niqe_pris_params.npz)")
    arrays = np.load(io.BytesIO(raw), allow_pickle=False)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"mu_prisparam": arrays["mu_pris_param"], "cov_prisparam": arrays["cov_pris_param"]})
    mat = bytearray(buf.getvalue())
    mat[:116] = _MAT_HEADER.ljust(116)  # MAT-5 header: 116 bytes of free text (scipy puts a timestamp here)
    out = niqe_mat_path()
    return [atomic_write_bytes(raw, out.with_name("niqe_pris_params.npz")), atomic_write_bytes(bytes(mat), out)]
