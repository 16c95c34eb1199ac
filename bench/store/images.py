"""The image table (contract C4): every image an evaluation touched, with where it came from.

    STORE/images/<key>.parquet     one row per registered image (written with bench.atomic)

Columns: ``image_id`` (content hash, bench.manifests.schema.file_hash: the key of the ``scores``
table), ``path``, ``role`` ('sr_output' | 'gt' | 'lr'), ``test_set``, ``item`` (test image
name), ``group``, ``gt_index`` (HGGT: 0 original, 1..4 enhanced; null for a single HR),
``label`` (HGGT effective label 'Original' | 'Positive' | 'Similar' | 'Negative'; 'HR' for the
one reference of a folder test set), the SR model's provenance (``run_name``, ``run_dir``,
``arch``, ``sampling``, ``ft_variant``, ``iteration``, ``checkpoint_sha256``, ``weights``;
``train_metric``: the IQA metric it was trained with, the sampling metric or an FT model's reward,
``+``-joined; ``base_sha256``: an FT model's base checkpoint, which chains it to its base run), the
evaluation run that registered it (``eval_run_id``) and ``created_at``.

References of an item (what FR metrics compare against, and the "Gold standard" rows) are its
``role = 'gt'`` images labelled 'Positive' (HGGT effective Positive) or 'HR' (``REFERENCE_LABELS``).

Idempotence: a batch's file name is a hash of its rows without ``created_at``/``eval_run_id``,
so registering the same images again writes nothing; the ``images`` view also keeps one row
per (image, role, checkpoint, weights, test set, item, GT index).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa

from bench.atomic import atomic_write_table
from bench.errors import StoreError
from bench.store.layout import Store

ROLES = ("sr_output", "gt", "lr")
REFERENCE_LABELS = ("Positive", "HR")

IMAGE_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("path", pa.string()),
    ("role", pa.string()),
    ("test_set", pa.string()),
    ("item", pa.string()),
    ("group", pa.string()),
    ("gt_index", pa.int32()),
    ("label", pa.string()),
    ("run_name", pa.string()),
    ("run_dir", pa.string()),
    ("arch", pa.string()),
    ("sampling", pa.string()),
    ("ft_variant", pa.string()),
    ("iteration", pa.int64()),
    ("checkpoint_sha256", pa.string()),
    ("weights", pa.string()),
    ("train_metric", pa.string()),
    ("base_sha256", pa.string()),
    ("eval_run_id", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")),
])
_VOLATILE = ("created_at", "eval_run_id")


def images_dir(store: Store) -> Path:
    return store.root / "images"


def has_images(store: Store) -> bool:
    return images_dir(store).is_dir() and any(images_dir(store).glob("*.parquet"))


def register_images(store: Store, rows: list[dict]) -> Path | None:
    """Write ``rows`` as one table; returns its path, or None when the same rows are already stored."""
    if not rows:
        return None
    names = set(IMAGE_SCHEMA.names)
    for i, row in enumerate(rows):
        unknown = set(row) - names
        if unknown:
            raise StoreError(f"image row {i}: unknown field(s) {sorted(unknown)}; expected fields of IMAGE_SCHEMA")
        for field in ("image_id", "path", "role", "test_set", "item"):
            if not row.get(field):
                raise StoreError(f"image row {i}: field '{field}' is empty")
        if row["role"] not in ROLES:
            raise StoreError(f"image row {i}: role {row['role']!r}; expected one of {', '.join(ROLES)}")
    stable = sorted(json.dumps({k: row.get(k) for k in IMAGE_SCHEMA.names if k not in _VOLATILE}, sort_keys=True,
                               default=str) for row in rows)
    key = hashlib.sha256("\n".join(stable).encode()).hexdigest()[:20]
    target = images_dir(store) / f"{key}.parquet"
    if target.exists():
        return None
    table = pa.Table.from_pylist([{k: row.get(k) for k in IMAGE_SCHEMA.names} for row in rows], schema=IMAGE_SCHEMA)
    return atomic_write_table(table, target)
