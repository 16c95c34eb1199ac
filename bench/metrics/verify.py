"""Prove every weight file a metric would read safe *before* pyiqa opens it.

pyiqa loads its checkpoints with ``torch.load(weights_only=False)`` (pyiqa/archs/arch_util.py
``load_pretrained_network``), CLIP and ARNIQA files with ``torch.jit.load``, and transformers runs
the Python files of a ``trust_remote_code`` Hugging Face entry. A weights folder shared between
users (``--weights-dir``) is therefore a trust boundary: a crafted file there would run code in
every process that scores with it. ``verify_spec`` checks each file the metric's table row names
(metrics.yaml ``weights``; the test suite checks that table against pyiqa) and raises one
``WeightsRefused`` line naming the first file that is not proven safe; nothing is handed to pyiqa.

Rules, by what a file *is* (its bytes), not only what it is called:

- anything pyiqa or a backbone could hand to ``torch.load`` (``.pth``/``.pt``/``.bin``/``.ckpt``
  and every name not listed as data below) must load with ``torch.load(weights_only=True)``: plain
  tensors in plain containers (plus numpy arrays/scalars and ``argparse.Namespace``, which carry
  no behaviour). A file torch cannot read at all (truncated: ``PytorchStreamReader failed``, EOF,
  bad zip) raises ``WeightsUnreadable`` instead (damaged, not crafted: the metric is unavailable,
  "its weights do not load"); it is not handed to pyiqa either. A name carrying torch hub's hash
  prefix (``name-<hex>.pth``) must also match it;
- a TorchScript archive is code: accepted only when its full sha256 is pinned (``pinned_sha256``:
  the hashes CLIP's own download table carries, plus ``PINNED_SHA256``);
- a safetensors file must have a valid header (``safetensors.safe_open``); ``.npy``/``.npz`` must
  load with ``allow_pickle=False``; ``.mat`` (read by scipy), JSON, text and tokenizer files are data;
- Python source in a Hugging Face entry (``trust_remote_code`` models) is refused: iqa-study does
  not run code from a weights folder;
- a path must be a regular file (a FIFO or device would hang or flood the check) and a Hugging
  Face snapshot link must stay inside its own ``models--*`` folder.

Verdicts are memoised per (path, device, inode, size, mtime_ns, ctime_ns) in this process and in
``verified-weights.json`` in the user's own iqa-study cache ($IQA_STUDY_HOME, else
``$XDG_CACHE_HOME/iqa-study``), never inside the weights folder, whose contents are what is being
checked. A rewrite of a file changes its ctime, which no user can set back. What remains is the
window between the check and pyiqa's own open: a writer racing that window needs to know when a
run starts; treat the weights folder as read-only for others.
"""

from __future__ import annotations

import json
import os
import re
import stat
import zipfile
from functools import cache
from pathlib import Path

from bench.atomic import atomic_write_text
from bench.errors import WeightsRefused, WeightsUnreadable
from bench.hashing import sha256_file
from bench.metrics.table import MetricSpec

MEMO_NAME = "verified-weights.json"
RULES = "v1"  # part of every memo key: a change of the rules below re-checks every file
DATA_SUFFIXES = {".mat", ".json", ".txt", ".md", ".model", ".tiktoken", ".vocab", ".merges", ".png", ".jpg",
                 ".jpeg", ".gitattributes", ".yaml", ".yml", ".spm", ".csv"}
HF_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".tar", ".th"}
CODE_SUFFIXES = {".py", ".pyc", ".so", ".pyd", ".dll", ".dylib", ".sh"}
# TorchScript archives pyiqa reads whose sha256 was reviewed (name -> sha256). CLIP's are added from
# pyiqa's own download table (pinned_sha256). ARNIQA's regressor_*.pth are TorchScript too; pin them
# here after checking them against the published files.
PINNED_SHA256: dict[str, str] = {}
_HUB_PREFIX = re.compile(r"-([a-f0-9]{6,})\.")  # torch.hub.HASH_REGEX, at least 6 digits to mean a hash
_MEMO: dict[str, list] = {}


def _memo_path() -> Path:
    home = os.environ.get("IQA_STUDY_HOME")
    base = Path(home).expanduser() if home else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "iqa-study"
    return base / MEMO_NAME


def _load_memo() -> dict:
    try:
        data = json.loads(_memo_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_memo(memo: dict) -> None:
    try:
        atomic_write_text(json.dumps(memo, indent=0, sort_keys=True), _memo_path())
    except OSError:  # a read-only cache only costs a re-check next time
        pass


@cache
def pinned_sha256() -> dict[str, str]:
    """``PINNED_SHA256`` plus the sha256 CLIP's download URLs carry (``.../<sha256>/<name>.pt`` in
    pyiqa/archs/clip_model.py and afineclip_model.py ``_MODELS``; read as text, nothing imported)."""
    import importlib.util

    pins = dict(PINNED_SHA256)
    spec = importlib.util.find_spec("pyiqa")
    if spec and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations))) / "archs"
        for module in ("clip_model.py", "afineclip_model.py"):
            try:
                text = (root / module).read_text()
            except OSError:
                continue
            for sha, name in re.findall(r"/([a-f0-9]{64})/([\w.@-]+\.pt)\b", text):
                pins.setdefault(name, sha)
    return pins


def _refuse(path: Path, why: str) -> WeightsRefused:
    return WeightsRefused(f"weight file {path}: {why}; refusing to hand it to pyiqa (replace it with the "
                          f"published file, e.g. `iqa-study weights fetch` on a trusted connected machine)")


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/__torch__/" in n for n in names)


def _unsafe_globals(path: Path) -> str:
    """`` (it pickles a.b, ...)`` for a zip checkpoint, else "" (a legacy or broken file's detail is
    the loader's own first line)."""
    import torch

    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path) if zipfile.is_zipfile(path) else []
    except Exception:  # noqa: BLE001 - a zip torch cannot list: the load error already says why
        found = []
    return f" (it pickles {', '.join(found[:3])})" if found else ""


def _torch_load_plain(path: Path, shown: Path) -> None:
    import argparse

    import numpy as np
    import torch
    from numpy._core import multiarray

    safe: list = [argparse.Namespace, np.dtype, np.ndarray,
                  *{type(np.dtype(t)) for t in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "b1")}]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x / 2.x pickles
        safe += [(multiarray._reconstruct, f"{mod}._reconstruct"), (multiarray.scalar, f"{mod}.scalar")]
    try:
        with torch.serialization.safe_globals(safe):
            torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except (EOFError, zipfile.BadZipFile, RuntimeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        if not isinstance(exc, RuntimeError) or "PytorchStreamReader" in first:  # damaged, not crafted
            raise WeightsUnreadable(f"weight file {shown}: does not load ({type(exc).__name__}: {first[:160]}); "
                                    f"it is truncated or damaged: re-fetch it") from exc
        raise _refuse(shown, f"does not load as plain tensors with torch.load(weights_only=True): {first[:160]}"
                            f"{_unsafe_globals(path)}") from None
    except Exception as exc:  # noqa: BLE001 - any other failure means "not proven plain tensors"
        detail = _unsafe_globals(path)
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        if "Weights only load failed" in first:
            first = "it holds pickled objects beyond tensors"
        raise _refuse(shown, f"does not load as plain tensors with torch.load(weights_only=True): {first[:160]}"
                            f"{detail}") from None


def _check_content(path: Path, shown: Path, kind: str) -> str:
    """Raise WeightsRefused (naming ``shown``, the path as the cache names it) unless ``path`` (its
    resolved file) is proven safe; return a short verdict."""
    name = shown.name
    suffix = Path(name).suffix.lower()
    if suffix in CODE_SUFFIXES:
        raise _refuse(shown, "is code (a Hugging Face trust_remote_code model runs it); iqa-study does not run "
                            "code from a weights folder")
    prefix, script = _HUB_PREFIX.search(name), _is_torchscript(path)
    sha = sha256_file(path) if prefix or script else None
    if prefix and not sha.startswith(prefix.group(1)):
        raise _refuse(shown, f"its sha256 {sha[:12]}... does not start with the {prefix.group(1)} its name carries")
    if script:
        pin = pinned_sha256().get(name)
        if pin != sha:
            raise _refuse(shown, "is a TorchScript archive (code) whose sha256 " + sha[:16] + "... is not pinned"
                          + (f" (expected {pin[:16]}...)" if pin else " in bench/metrics/verify.py PINNED_SHA256"))
        return "pinned:" + sha
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                fh.keys()
        except Exception as exc:  # noqa: BLE001 - any failure means "not a safetensors file"
            raise _refuse(shown, f"is not a valid safetensors file ({str(exc).splitlines()[0][:120]})") from None
        return "safetensors"
    if suffix in {".npy", ".npz"}:
        import numpy as np

        try:
            np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise _refuse(shown, f"does not load with numpy allow_pickle=False ({exc})") from None
        return "numpy"
    if (suffix not in HF_PICKLE_SUFFIXES) if kind == "hf" else (suffix in DATA_SUFFIXES):
        return "data"  # pyiqa's own caches: every name not known as data may reach torch.load
    _torch_load_plain(path, shown)
    return "tensors"


def verify_file(path: str | Path, kind: str = "pyiqa", root: Path | None = None) -> str:
    """Verify one file (memoised); ``root``: the folder a resolved link must stay inside."""
    path = Path(path)
    name = path.name
    real = path.resolve()
    if root is not None and not real.is_relative_to(root.resolve()):
        raise _refuse(path, f"links outside its cache entry ({real})")
    try:
        st = os.stat(real)
    except OSError as exc:
        raise _refuse(path, f"cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, "is not a regular file")
    key = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    ident = f"{RULES}|{real}|{name}|{kind}"
    if not _MEMO:
        _MEMO.update(_load_memo())
    entry = _MEMO.get(ident)
    if isinstance(entry, list) and entry[:5] == key and len(entry) == 6:
        return entry[5]
    verdict = _check_content(real, path, kind)
    _MEMO[ident] = [*key, verdict]
    _save_memo(dict(_MEMO))
    return verdict


def _hf_files(entry: Path) -> list[Path]:
    snaps = entry / "snapshots"
    if not snaps.is_dir():
        return []
    return sorted(p for p in snaps.rglob("*") if not p.is_dir())


def spec_files(spec: MetricSpec, kwargs: dict | None = None) -> list[tuple[Path, str, Path | None]]:
    """(path, kind, root) of every present file ``spec`` makes pyiqa read here."""
    from bench.metrics.weights import locate

    out: list[tuple[Path, str, Path | None]] = []
    explicit = (kwargs or {}).get("pretrained_model_path")
    if explicit:
        out.append((Path(explicit), "pyiqa", None))
    for wf in spec.weights:
        if wf.cache in ("package", "url"):  # installed package files are installed code's own data
            continue
        path = locate(wf)
        if path is None:
            continue
        if wf.cache == "hf":
            out.extend((f, "hf", path) for f in _hf_files(path))
        elif os.path.lexists(path):
            out.append((path, wf.cache, None))
    return out


def verify_spec(spec: MetricSpec, kwargs: dict | None = None) -> None:
    """Raise ``WeightsRefused`` (one line, naming the file) unless every present weight file of
    ``spec`` is proven safe; absent files are left to ``weights.preflight``."""
    for path, kind, root in spec_files(spec, kwargs):
        verify_file(path, kind, root)
