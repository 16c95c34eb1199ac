"""Names that become one path component (a run's, a model's weights, a test set's, an image item's).

A name from a file the suite did not write (a checkpoint's config, a model's sidecar JSON, a test-set
YAML) must never move a path out of its folder: ``safe_component`` refuses, in one line, a name that
is empty, is '.' or '..', holds a path separator ('/' or '\\'), a NUL or another control character,
or is longer than a file name may be. ``inside`` checks a built path against its root."""

from __future__ import annotations

from pathlib import Path

from bench.errors import StudyError

MAX_COMPONENT = 200  # bytes (UTF-8); file systems allow 255 and suffixes such as '-tile512' are added


def component_problem(name: object) -> str | None:
    """Why ``name`` cannot be one path component (None when it can)."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, expected a string"
    if not name.strip():
        return "is empty"
    if name in (".", ".."):
        return "is '.' or '..'"
    if "/" in name or "\\" in name:
        return "contains a path separator ('/' or '\\')"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a NUL or another control character"
    if len(name.encode("utf-8")) > MAX_COMPONENT:
        return f"is longer than {MAX_COMPONENT} bytes"
    return None


def safe_component(name: object, what: str) -> str:
    """``name`` unchanged when it is a safe single path component; a StudyError naming ``what`` otherwise."""
    why = component_problem(name)
    if why:
        raise StudyError(f"{what} {name!r} {why}: it becomes a folder or file name, which must stay one "
                         f"component inside its folder")
    return name


def inside(path: Path, root: Path, what: str) -> Path:
    """``path`` when it resolves (symlinks included) inside ``root``; a StudyError naming ``what`` otherwise."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if not resolved.is_relative_to(base):
        raise StudyError(f"{what} {path}: resolves to {resolved}, outside {base}")
    return path
