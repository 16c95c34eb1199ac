"""Read-only DuckDB connections for untrusted SQL (``iqa-study query``).

DuckDB's own limits are not enough on their own: ``allowed_directories`` grants writes as well as
reads, so with the store directory allowed, ``COPY (...) TO 'STORE/scores/part-x.parquet'`` would
silently replace a part. Instead the views read the store through an fsspec file system registered
under the ``iqastore://`` protocol that (1) opens files for reading only and refuses every write,
delete, move or mkdir, and (2) refuses any path outside the store root (after resolving symlinks).
Then ``allowed_directories=['iqastore://']``, ``enable_external_access=false`` and
``lock_configuration=true`` close every other route: local paths, ``ATTACH``, ``INSTALL``/``LOAD``,
and changing these settings back.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb
from fsspec.implementations.local import LocalFileSystem

PROTOCOL = "iqastore://"
_ESCAPED = re.compile(r"\[([\[\]*?])\]")  # bench.store.sql.glob_escape's one-character classes


def _refuse(*_args, **_kwargs):
    raise PermissionError("the store is opened read-only for this query")


class ReadOnlyStoreFS(LocalFileSystem):
    """A local file system confined to one folder, read-only."""

    protocol = "iqastore"
    cachable = False

    def __init__(self, root: Path, **kwargs):
        super().__init__(**kwargs)
        self.confined_root = os.path.realpath(root)

    def _inside(self, path) -> str:
        local = self._strip_protocol(path)
        real = os.path.realpath(local)
        if real != self.confined_root and not real.startswith(self.confined_root + os.sep):
            raise PermissionError(f"{local}: outside the store")
        return local

    def _open(self, path, mode="rb", **kwargs):
        if any(c in mode for c in "wax+"):
            _refuse()
        return super()._open(self._inside(path), mode, **kwargs)

    def info(self, path, **kwargs):
        return super().info(self._inside(path), **kwargs)

    def ls(self, path, detail=False, **kwargs):
        return super().ls(self._inside(path), detail=detail, **kwargs)

    def glob(self, path, **kwargs):
        """A literal path (glob characters escaped as one-character classes by
        ``bench.store.sql.glob_escape``, as the views write them) matches only itself; a real pattern
        must start inside the store, and only matches inside it are returned."""
        text = str(path)
        if not any(c in _ESCAPED.sub("", text) for c in "*?["):
            local = self._inside(_ESCAPED.sub(r"\1", text))
            return [local] if os.path.exists(local) else []
        self._inside(re.split(r"[*?\[]", text, maxsplit=1)[0] or "/")
        out = super().glob(path, **kwargs)
        keep = [m for m in out if self._is_inside(m)]
        return {m: out[m] for m in keep} if isinstance(out, dict) else keep

    def _is_inside(self, path) -> bool:
        try:
            self._inside(path)
        except PermissionError:
            return False
        return True

    touch = mkdir = makedirs = rm = rm_file = _rm = rmdir = mv = move = cp_file = copy = put_file = put = link = \
        symlink = _refuse


def confine(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    con.register_filesystem(ReadOnlyStoreFS(root))


def lock(con: duckdb.DuckDBPyConnection) -> None:
    """After the views exist: no other file access, no extensions, settings locked."""
    con.execute("SET autoinstall_known_extensions=false")
    con.execute("SET autoload_known_extensions=false")
    con.execute(f"SET allowed_directories=['{PROTOCOL}']")
    con.execute("SET enable_external_access=false")
    con.execute("SET lock_configuration=true")
