"""On-disk store: long-format Parquet tables, written atomically, readable by plain DuckDB.

    STORE/
      pairs/<manifest_id>.parquet   manifest rows (+ manifest_id, synthetic, root, registered_at)
      scores/part-*.parquet         one row per (image, reference, metric, metric config) attempt
      runs/<run_id>.parquet         one provenance row per run (+ <run_id>.json, human readable)
      study/<table>/<key>.parquet   derived study tables (phases, ranks, complement, ...)
      cache/                        derived, disposable (checked part footers, agreement cache)
      quarantine/                   unreadable parts moved aside by `iqa-study store check --repair`

Every file is written by ``bench.atomic`` (hidden ``.<name>.tmp-<uuid>`` sibling, renamed into
place), so a reader (or a run killed with SIGKILL) only ever sees complete files, and no read glob
matches a half-written one. Parts from several shards or runs coexist and need no merge step: the
views in ``bench.store.views`` read them all. The Parquet tables are the truth; ``cache/`` can be
deleted at any time.

Manifest registration (``Store.register``): each registration records ``registered_at``. When two
registered manifests hold the same (dataset, pair_id), the ``pairs`` view takes the row of the
newest registration (ties and pre-``registered_at`` files: ``manifest_id`` order). A new manifest
whose rows *conflict* with the current ones (other votes, preference, images or kind for the same
pair id) is refused unless ``replace=True`` (CLI ``--replace``); the registration then reports how
many rows of which manifests it replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.atomic import atomic_write_table, atomic_write_text
from bench.errors import StoreError
from bench.store.parts import PartIndex, PartList

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


PAIR_KEY_COLUMNS = ["dataset", "pair_id", "image_a_id", "image_b_id", "votes_a", "votes_b", "pref"]
# a registration conflicts with the current row of the same (dataset, pair_id) when any of these differ
CONFLICT_COLUMNS = ["image_a_id", "image_b_id", "votes_a", "votes_b", "pref", "kind"]


@dataclass
class Registration:
    """The outcome of registering a manifest: its id, and the current rows it replaced (if any)."""
    manifest_id: str
    n_pairs: int
    new: bool  # False when the same content was already registered and still current
    replaced: dict[str, int] = field(default_factory=dict)  # manifest_id -> rows whose votes/images it replaced
    root_change: tuple[str, str] | None = None  # (stored root, this manifest's root) of the same content

    def summary(self) -> str:
        what = "registered" if self.new else "already registered"
        if self.root_change is not None:
            old, new = self.root_change
            if self.new:
                return f"manifest {self.manifest_id} re-registered ({self.n_pairs} pairs): image root {old} -> {new}"
            return (f"manifest {self.manifest_id} already registered ({self.n_pairs} pairs) with image root {old}; "
                    f"this manifest's root is {new}: --replace records the new root")
        if not self.replaced:
            return f"manifest {self.manifest_id} {what} ({self.n_pairs} pairs)"
        rep = ", ".join(f"{n} rows of {m}" for m, n in sorted(self.replaced.items()))
        return f"manifest {self.manifest_id} registered ({self.n_pairs} pairs); replaced {rep}"


class Store:
    def __init__(self, root: str | os.PathLike, create: bool = True):
        self.root = Path(root)
        if not self.root.exists():
            if not create:
                raise StoreError(f"{self.root}: store does not exist (create it with `iqa-study score --store {self.root}`)")
            self.root.mkdir(parents=True, exist_ok=True)  # ranks of one job may race to create a fresh store
        elif not self.root.is_dir():
            raise StoreError(f"{self.root}: exists and is not a directory")
        if create:
            for sub in ("pairs", "scores", "runs", "study"):
                (self.root / sub).mkdir(exist_ok=True)
            empty = self.root / "scores" / "part-empty-schema.parquet"
            if not empty.exists():  # lets plain `read_parquet('scores/part-*.parquet')` resolve on a new store
                atomic_write_table(SCORE_SCHEMA.empty_table(), empty)
        self.parts = PartIndex(self.root)
        self.sql_prefix = ""  # file-system prefix of paths in view SQL ('iqastore://' for read-only connections)

    # --- pairs -------------------------------------------------------------------------
    @staticmethod
    def manifest_id(manifest: pd.DataFrame) -> str:
        """Content hash of the pair rows (key columns, plus ``kind`` when the manifest has it)."""
        cols = PAIR_KEY_COLUMNS + (["kind"] if "kind" in manifest.columns else [])
        digest = hashlib.sha256(pd.util.hash_pandas_object(manifest[cols], index=False).values.tobytes())
        return digest.hexdigest()[:16]

    def register_manifest(self, manifest: pd.DataFrame, replace: bool = False) -> str:
        """Store the manifest's pairs and return its id (see ``register``)."""
        return self.register(manifest, replace=replace).manifest_id

    def register(self, manifest: pd.DataFrame, replace: bool = False) -> Registration:
        """Store the manifest's pairs, stamped with the registration time.

        Idempotent: the same content, already current, is not rewritten. Rows that conflict with the
        current registration of the same (dataset, pair_id) raise StoreError naming both manifests,
        unless ``replace``; with ``replace`` this registration becomes the newest and wins.
        """
        import datetime as dt

        from bench.manifests.schema import reserved_problem

        meta = manifest.attrs.get("iqa_study", {})
        if (why := reserved_problem(manifest.columns, f"manifest {meta.get('path') or meta.get('source', '')}")):
            raise StoreError(why)
        manifest_id = self.manifest_id(manifest)
        target = self.root / "pairs" / f"{manifest_id}.parquet"
        replaced = self._conflicts(manifest, manifest_id)
        if replaced and not replace:
            (other, _), *rest = sorted(replaced.items(), key=lambda kv: -kv[1])
            more = f" and {len(rest)} other manifest(s)" if rest else ""
            raise StoreError(
                f"{self.root}: manifest {manifest_id} (dataset {', '.join(sorted(set(manifest['dataset'].astype(str))))})"
                f" conflicts with registered manifest {other}{more}: {sum(replaced.values())} pair ids with other "
                f"votes/images; pass --replace (register(..., replace=True)) to make the new registration win")
        root_change = None
        if target.exists() and not replaced:
            stored = self._stored_root(target)
            if stored is None or stored == meta.get("root", "") or not meta.get("root"):
                return Registration(manifest_id, len(manifest), new=False)
            root_change = (stored, meta.get("root", ""))  # the same pairs, images moved to another root
            if not replace:
                return Registration(manifest_id, len(manifest), new=False, root_change=root_change)
        table = manifest.copy()
        table["manifest_id"] = manifest_id
        table["synthetic"] = bool(meta.get("synthetic", False))
        table["root"] = meta.get("root", "")
        if "kind" not in table.columns:
            table["kind"] = "human"
        table["registered_at"] = pd.Timestamp(dt.datetime.now(dt.UTC))
        for col in table.columns:  # keep cells primitive and nullable-consistent
            if table[col].dtype == object:
                table[col] = table[col].astype("string")
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        arrow = arrow.replace_schema_metadata({b"iqa_study.manifest": json.dumps(meta, default=str).encode()})
        atomic_write_table(arrow, target)
        return Registration(manifest_id, len(manifest), new=True, replaced=replaced, root_change=root_change)

    @staticmethod
    def _stored_root(part: Path) -> str | None:
        """The image root a registered pair part recorded (None when it cannot say)."""
        try:
            col = pq.read_table(part, columns=["root"]).column("root")
        except (OSError, pa.ArrowException, KeyError):
            return None
        return str(col[0].as_py()) if len(col) else None

    def _conflicts(self, manifest: pd.DataFrame, manifest_id: str) -> dict[str, int]:
        """{manifest_id: rows} of current registrations that the new manifest's rows contradict."""
        import duckdb

        from bench.store.sql import read_parts

        parts = self.parts.list("pairs")
        if not parts.good:
            return {}
        have = parts.columns()
        cols = [c for c in CONFLICT_COLUMNS if c in manifest.columns or c == "kind"]
        new = manifest[[c for c in ["dataset", "pair_id"] + cols if c in manifest.columns]].copy()
        if "kind" not in new.columns:
            new["kind"] = "human"
        con = duckdb.connect()
        con.register("new_rows", new)
        kind = "coalesce(kind, 'human')" if "kind" in have else "'human'"
        order = "registered_at DESC NULLS LAST, manifest_id" if "registered_at" in have else "manifest_id"
        diff = " OR ".join(f"c.{c} IS DISTINCT FROM n.{c}" for c in cols)
        rows = con.execute(f"""
            WITH cur AS (
                SELECT dataset, pair_id, {', '.join(c for c in cols if c != 'kind')}, {kind} AS kind, manifest_id
                FROM {read_parts(parts.good)}
                QUALIFY row_number() OVER (PARTITION BY dataset, pair_id ORDER BY {order}) = 1)
            SELECT c.manifest_id, count(*) FROM cur c JOIN new_rows n USING (dataset, pair_id)
            WHERE c.manifest_id <> ? AND ({diff}) GROUP BY ALL""", [manifest_id]).fetchall()
        return {m: int(n) for m, n in rows}

    # --- scores ------------------------------------------------------------------------
    def write_scores(self, rows: list[dict], run_id: str, rank: int, seq: int) -> Path | None:
        if not rows:
            return None
        table = pa.Table.from_pylist(rows, schema=SCORE_SCHEMA)
        return atomic_write_table(table, self.root / "scores" / f"part-{run_id}-r{rank:03d}-{seq:06d}.parquet")

    def score_glob(self) -> str:
        """For plain DuckDB users; the suite itself reads ``score_parts()`` (bad parts skipped)."""
        return str(self.root / "scores" / "part-*.parquet")

    def pairs_glob(self) -> str:
        return str(self.root / "pairs" / "*.parquet")

    def score_parts(self) -> PartList:
        return self.parts.list("scores", prefix="part-")

    def pair_parts(self) -> PartList:
        return self.parts.list("pairs")

    def parquet_source(self, sub: str, prefix: str = "", empty: pa.Schema | None = None) -> str | None:
        """SQL ``read_parquet([...])`` over the readable parts of STORE/<sub> (escaped paths, bad parts
        skipped and reported), read through ``self.sql_prefix`` (set by ``connect(read_only=True)`` while
        it defines views); ``empty``'s typed empty relation, or None, when there are none."""
        from bench.store.sql import read_parts

        parts = self.parts.list(sub, prefix=prefix)
        if not parts.good and empty is None:
            return None
        return read_parts(parts.good, self.sql_prefix, empty)

    def has_pairs(self) -> bool:
        return bool(self.pair_parts().good)

    def existing_keys(self, metric: str, config_hash: str, include_failed: bool = True) -> set[str]:
        import duckdb

        from bench.store.sql import read_parts

        parts = self.score_parts()
        if not parts.good:
            return set()
        cond = "" if include_failed else "AND status = 'ok'"
        con = duckdb.connect()
        rows = con.execute(
            f"SELECT DISTINCT image_id FROM {read_parts(parts.good, one_schema=True)} WHERE metric = ? AND config_hash = ? {cond}",
            [metric, config_hash],
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
        folder = self.root / "study"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("*.parquet")))
