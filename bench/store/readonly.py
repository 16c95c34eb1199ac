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
from pathlib import Path

import duckdb
from fsspec.implementations.local import LocalFileSystem

PROTOCOL = "iqastore://"


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
        self._inside(str(path).split("*", 1)[0] or "/")
        return super().glob(path, **kwargs)

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
