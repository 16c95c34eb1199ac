"""SQL text for file sources: every path is a quoted, escaped literal, never spliced raw.

DuckDB table functions inside a view cannot take bind parameters, so file lists are written as
string literals with ``'`` doubled (SQL standard escaping); everything else uses ``?`` parameters.
DuckDB expands glob patterns in *every* path it reads, list elements and bound parameters
included, so a store at ``g2/exp[1]`` would read ``g2/exp1``: each file path handed to a reader is
passed through ``glob_escape`` first (``*``, ``?``, ``[`` and ``]`` each become a one-character
class, e.g. ``[[]``), which DuckDB and the read-only file system both match literally.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

UNION_BY_NAME_MAX = 64

_DUCK_TYPES = {
    pa.string(): "VARCHAR", pa.large_string(): "VARCHAR", pa.float64(): "DOUBLE", pa.float32(): "FLOAT",
    pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.bool_(): "BOOLEAN",
}


def literal(text: str) -> str:
    """A SQL string literal for ``text`` (quotes doubled; NUL refused)."""
    if "\0" in text:
        raise ValueError(f"NUL byte in a path: {text!r}")
    return "'" + text.replace("'", "''") + "'"


_GLOB = re.compile(r"([\[\]*?])")


def glob_escape(path: str | Path) -> str:
    """``path`` as a pattern that matches only itself (``exp[1]`` -> ``exp[[]1[]]``)."""
    return _GLOB.sub(r"[\1]", str(path))


def file_literal(path: str | Path, prefix: str = "") -> str:
    """A SQL literal for a file a reader opens: quotes doubled, glob characters escaped."""
    return literal(prefix + glob_escape(path))


def duck_type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "TIMESTAMP WITH TIME ZONE" if t.tz else "TIMESTAMP"
    return _DUCK_TYPES.get(t, "VARCHAR")


def empty_select(schema: pa.Schema) -> str:
    """A typed, empty relation with ``schema``'s columns (for a folder without readable parts)."""
    cols = ", ".join(f"NULL::{duck_type(f.type)} AS \"{f.name}\"" for f in schema)
    return f"(SELECT {cols} WHERE false)"


def read_parquet(paths: Iterable[Path | str], prefix: str = "", empty: pa.Schema | None = None) -> str:
    """``read_parquet([...], union_by_name=true)`` over exactly ``paths``; ``empty`` if there are none."""
    items = [file_literal(p, prefix) for p in paths]
    if not items:
        if empty is None:
            raise ValueError("no files and no schema for an empty relation")
        return empty_select(empty)
    return f"read_parquet([{', '.join(items)}], union_by_name=true)"


def read_parts(parts, prefix: str = "", empty: pa.Schema | None = None, one_schema: bool = False) -> str:
    """Like ``read_parquet`` over ``bench.store.parts.Part``s.

    ``union_by_name`` opens every file's footer each time a view over it is bound (seconds for
    thousands of score parts). With ``one_schema`` (folders whose writer uses one fixed Arrow
    schema: score parts) parts are grouped by their column lists, a group of more than
    ``UNION_BY_NAME_MAX`` parts is read without it, and groups (older schemas) are combined with
    ``UNION ALL BY NAME``. Other folders (runs, study tables, manifests) always use union_by_name.
    """
    parts = list(parts)
    if not parts:
        return read_parquet([], prefix, empty)
    if not one_schema:
        return read_parquet([p.path for p in parts], prefix, empty)
    groups: dict[tuple[str, ...], list] = {}
    for p in parts:
        groups.setdefault(tuple(p.columns), []).append(p)
    selects = []
    for g in groups.values():
        files = ", ".join(file_literal(p.path, prefix) for p in g)
        by_name = ", union_by_name=true" if len(g) <= UNION_BY_NAME_MAX else ""
        selects.append(f"read_parquet([{files}]{by_name})")
    if len(selects) == 1:
        return selects[0]
    return "(" + " UNION ALL BY NAME ".join(f"SELECT * FROM {s}" for s in selects) + ")"
