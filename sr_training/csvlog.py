"""Append-only CSV logs of a run (train_log.csv, val_log.csv, val_images.csv, guard_log.csv): the one writer.

A log grows by appended rows (never rewritten in place, so not through bench.atomic's rename); a row whose
columns differ from the file's header is refused, so a resumed run cannot mix two layouts in one file.
Truncation after a resume goes through bench.atomic (sr_training.trainer ``_truncate_csv``).
"""

from __future__ import annotations

import csv
from pathlib import Path

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
