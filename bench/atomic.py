"""Atomic file writes, the one writer for every file the suite publishes (store parts, manifests,
JSON records, weight files).

The data goes to a hidden temporary file in the target folder, ``.<name>.tmp-<uuid>``, which is
flushed to disk and then renamed over the target (``os.replace``, atomic on POSIX within one file
system). Readers, and a process killed with SIGKILL, only ever see complete files. The temporary
name starts with a dot and does not end in the target's suffix, so no read glob (``*.parquet``,
``part-*.parquet``, ``*.json``) can match a half-written file. Folders are created with
``exist_ok`` (several ranks may create a fresh store at the same time).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TMP_MARKER = ".tmp-"


def temp_name(target: Path) -> Path:
    """The temporary sibling of ``target``: hidden, and never ending in the target's suffix."""
    return target.with_name(f".{target.name}{TMP_MARKER}{uuid.uuid4().hex}")


def is_temp_name(name: str) -> bool:
    """True for a temporary file of this writer (or of the older ``.tmp-*`` naming)."""
    return name.startswith(".") and TMP_MARKER in name


def atomic_write(target: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` to produce the file, fsync it, and rename it over ``target``.

    On any error the temporary file is removed and the error propagates; the target is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp.unlink(missing_ok=True)  # rename() of two links to one file does nothing and keeps tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_write_table(table: pa.Table, target: str | os.PathLike) -> Path:
    """Parquet with page checksums, so a reader can tell a corrupted page from data (bench.store.parts)."""
    return atomic_write(target, lambda tmp: pq.write_table(table, tmp, write_page_checksum=True))


def atomic_write_bytes(data: bytes, target: str | os.PathLike) -> Path:
    return atomic_write(target, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(text: str, target: str | os.PathLike) -> Path:
    return atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_save_image(image, target: str | os.PathLike, **save_kwargs) -> Path:
    """A PIL image saved through the atomic writer, in the format PIL registers for the target's suffix (the
    temporary name has none)."""
    from PIL import Image

    fmt = Image.registered_extensions()[Path(target).suffix.lower()]
    return atomic_write(target, lambda tmp: image.save(tmp, format=fmt, **save_kwargs))


def atomic_copy(src: str | os.PathLike, target: str | os.PathLike, link: bool = True) -> Path:
    """Publish a copy of ``src`` at ``target`` (e.g. ``best.pt`` from a checkpoint): a hard link when
    ``link`` and the file system allows it (no second copy of a large file), else a byte copy."""
    def write(tmp: Path) -> None:
        if link:
            try:
                os.link(src, tmp)
                return
            except OSError:
                pass  # another file system, or links unsupported: copy the bytes instead
        shutil.copyfile(src, tmp)

    return atomic_write(target, write)
