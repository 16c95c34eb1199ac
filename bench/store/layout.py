"""On-disk store: long-format Parquet tables, written atomically, readable by plain DuckDB.

    STORE/
      pairs/<manifest_id>.parquet   manifest rows (+ manifest_id, synthetic, root)
      scores/part-*.parquet         one row per (image, metric, metric config) attempt
      runs/<run_id>.parquet         one provenance row per run (+ <run_id>.json, human readable)
      study/<table>/<key>.parquet   derived study tables (phases, ranks, complement, ...)

Every file is written to a hidden ``.tmp-*`` name in the same folder and renamed into place,
so a reader (or a run killed with SIGKILL) only ever sees complete files. Parts from several
shards or runs coexist and need no merge step: the views in ``bench.store.views`` read them all.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
from bench.atomic import atomic_write_table, atomic_write_text
from bench.errors import StoreError

SCORE_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("ref_id", pa.string()),  # full-reference metrics: content hash of the reference image; null for NR
    ("metric", pa.string()),
    ("config_hash", pa.string()),
    ("metric_config", pa.string()),
    ("score", pa.float64()),
    ("status", pa.string()),  # ok | error | nan
    ("error", pa.string()),
    ("lower_better", pa.bool_()),
    ("random_init", pa.bool_()),
    ("input_h", pa.int32()),
    ("input_w", pa.int32()),
    ("input_policy", pa.string()),
    ("batch_size", pa.int32()),
    ("seconds", pa.float64()),  # wall time of the forward call, divided over its batch
    ("device", pa.string()),
    ("dtype", pa.string()),
    ("pyiqa_version", pa.string()),
    ("torch_version", pa.string()),
    ("run_id", pa.string()),
    ("written_at", pa.timestamp("us", tz="UTC")),
])


class Store:
    def __init__(self, root: str | os.PathLike, create: bool = True):
        self.root = Path(root)
        if not self.root.exists():
            if not create:
                raise StoreError(f"{self.root}: store does not exist (create it with `iqa-study score --store {self.root}`)")
            self.root.mkdir(parents=True)
        elif not self.root.is_dir():
            raise StoreError(f"{self.root}: exists and is not a directory")
        for sub in ("pairs", "scores", "runs", "study"):
            (self.root / sub).mkdir(exist_ok=True)
        empty = self.root / "scores" / "part-empty-schema.parquet"
        if not empty.exists():  # lets every view resolve on a store with no scores yet
            atomic_write_table(SCORE_SCHEMA.empty_table(), empty)

    # --- pairs -------------------------------------------------------------------------
    def register_manifest(self, manifest: pd.DataFrame) -> str:
        """Store the manifest's pairs; idempotent (same content -> same file)."""
        meta = manifest.attrs.get("iqa_study", {})
        key_cols = ["dataset", "pair_id", "image_a_id", "image_b_id", "votes_a", "votes_b", "pref"]
        digest = hashlib.sha256(pd.util.hash_pandas_object(manifest[key_cols], index=False).values.tobytes())
        manifest_id = digest.hexdigest()[:16]
        table = manifest.copy()
        table["manifest_id"] = manifest_id
        table["synthetic"] = bool(meta.get("synthetic", False))
        table["root"] = meta.get("root", "")
        for col in table.columns:  # keep cells primitive and nullable-consistent
            if table[col].dtype == object:
                table[col] = table[col].astype("string")
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        arrow = arrow.replace_schema_metadata({b"iqa_study.manifest": json.dumps(meta, default=str).encode()})
        atomic_write_table(arrow, self.root / "pairs" / f"{manifest_id}.parquet")
        return manifest_id

    # --- scores ------------------------------------------------------------------------
    def write_scores(self, rows: list[dict], run_id: str, rank: int, seq: int) -> Path | None:
        if not rows:
            return None
        table = pa.Table.from_pylist(rows, schema=SCORE_SCHEMA)
        return atomic_write_table(table, self.root / "scores" / f"part-{run_id}-r{rank:03d}-{seq:06d}.parquet")

    def score_glob(self) -> str:
        return str(self.root / "scores" / "part-*.parquet")

    def pairs_glob(self) -> str:
        return str(self.root / "pairs" / "*.parquet")

    def has_pairs(self) -> bool:
        return any((self.root / "pairs").glob("*.parquet"))

    def existing_keys(self, metric: str, config_hash: str, include_failed: bool = True) -> set[str]:
        import duckdb

        cond = "" if include_failed else "AND status = 'ok'"
        con = duckdb.connect()
        rows = con.execute(
            f"SELECT DISTINCT image_id FROM read_parquet(?, union_by_name=true) "
            f"WHERE metric = ? AND config_hash = ? {cond}",
            [self.score_glob(), metric, config_hash],
        ).fetchall()
        return {r[0] for r in rows}

    # --- runs and study tables -----------------------------------------------------------
    def write_run(self, record: dict) -> None:
        flat = {k: (json.dumps(v, default=str) if isinstance(v, (dict, list)) else v) for k, v in record.items()}
        atomic_write_table(pa.Table.from_pylist([flat]), self.root / "runs" / f"{record['run_id']}.parquet")
        atomic_write_text(json.dumps(record, indent=2, default=str), self.root / "runs" / f"{record['run_id']}.json")

    def write_study_table(self, name: str, key: str, df: pd.DataFrame) -> Path:
        """Derived tables (phase subsets, ranks, ...): one file per key, overwritten on re-run."""
        return atomic_write_table(pa.Table.from_pandas(df, preserve_index=False), self.root / "study" / name / f"{key}.parquet")

    def study_tables(self) -> list[str]:
        return sorted(p.name for p in (self.root / "study").iterdir() if p.is_dir() and any(p.glob("*.parquet")))
