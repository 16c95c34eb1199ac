"""Append-only CSV logs of a run (train_log.csv, val_log.csv, val_images.csv, guard_log.csv): the one writer.

A log grows by appended rows (never rewritten in place, so not through bench.atomic's rename); a row whose
columns differ from the file's header is refused, so a resumed run cannot mix two layouts in one file.
Truncation after a resume (``truncate_rows``) goes through bench.atomic.
"""

from __future__ import annotations

import csv
from pathlib import Path

from bench.atomic import atomic_write
from bench.errors import StudyError


def append_row(path: Path, row: dict) -> None:
    """Append ``row`` to the CSV at ``path`` (with a header when the file is new or empty)."""
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with open(path, newline="") as fh:
            header = next(csv.reader(fh))
        if header != list(row):
            raise StudyError(f"{path}: columns {header} differ from this run's {list(row)}")
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def truncate_rows(path: Path, last_iter: int) -> int:
    """Drop rows whose 'iter' is beyond ``last_iter`` (they belong to the run after the checkpoint)."""
    if not path.is_file():
        return 0
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return 0
    header, body = rows[0], rows[1:]
    col = header.index("iter")
    keep = [r for r in body if r and int(r[col]) <= last_iter]
    if len(keep) != len(body):
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as fh:
                csv.writer(fh).writerows([header, *keep])

        atomic_write(path, write)
    return len(body) - len(keep)


def has_row(path: Path, it: int) -> bool:
    """Whether the log at ``path`` has a row for iteration ``it``."""
    if not path.is_file():
        return False
    with open(path, newline="") as fh:
        return any(r.get("iter") == str(it) for r in csv.DictReader(fh))
