"""On-disk store: long-format Parquet tables, written atomically, readable by plain DuckDB.

    STORE/
      pairs/<manifest_id>.parquet   manifest rows (+ manifest_id, synthetic, root, registered_at)
      scores/part-*.parquet         one row per (image, reference, metric, metric config) attempt
      runs/<run_id>.parquet         one provenance row per run (+ <run_id>.json, human readable)
      study/<table>/<key>.parquet   derived study tables (phases, ranks, complement, ...); the latest result of a
                                    table: newest created_at, then the larger key (``Store.latest_study``)
      images/                       registered evaluation images (bench.store.images)
      models/                       fitted study models (ensemble-<key>.json)
      sr/<run>/<test set>/          SR outputs of evaluated models (``evaluate``'s default --out)
      cache/                        derived, disposable (checked part footers, agreement cache)
      quarantine/                   unreadable parts moved aside by `iqa-study store check --repair`

Every file is written by ``bench.atomic`` (hidden ``.<name>.tmp-<uuid>`` sibling, renamed into
place), so a reader (or a run killed with SIGKILL) only ever sees complete files, and no read glob
matches a half-written one. Parts from several shards or runs coexist and need no merge step: the
views in ``bench.store.views`` read them all. The Parquet tables are the truth; ``cache/`` can be
deleted at any time.

Manifest registration (``Store.register``): each registration records ``registered_at``. A
manifest's id hashes *every* column of its rows (split, group, methods and any extra column, not
only the votes), so a rebuilt manifest with corrected metadata is a new manifest. One pair is one
unordered pair of images of a dataset: a registered row is *current* when no newer registration
holds the same (dataset, pair_id) nor the same (dataset, unordered pair of image ids) (ties and
pre-``registered_at`` files: ``manifest_id`` order), so the same image pair registered by two
manifests (e.g. the same CSV under another file name) is never counted twice. A new manifest
whose rows *differ* from the current ones of the same pair (other votes, images, split, group, kind
or any other column) is refused, naming the columns, unless ``replace=True`` (CLI ``--replace``);
the registration then reports how many rows of which manifests it replaced. One manifest may not
hold the same image pair twice (the pairs-csv importer merges such rows; ``bench.manifests.votes``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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


def _kinds(schema: pa.Schema) -> dict[str, str]:
    from bench.store.parts import kind_of

    return {f.name: kind_of(f.type) for f in schema}


# what a part of each folder must look like to be read (bench.store.parts.schema_problem): a part of a
# foreign schema (e.g. 'score' as text) is skipped and reported like an unreadable one
FOLDER_KINDS = {
    "scores": {"required": ["image_id", "metric", "config_hash", "score", "status"], "kinds": _kinds(SCORE_SCHEMA)},
    "pairs": {"required": ["dataset", "pair_id", "image_a_id", "image_b_id", "votes_a", "votes_b", "pref",
                           "manifest_id"],
              "kinds": {"dataset": "string", "pair_id": "string", "split": "string", "group": "string",
                        "image_a_id": "string", "image_b_id": "string", "votes_a": "number", "votes_b": "number",
                        "pref": "string", "manifest_id": "string", "kind": "string", "synthetic": "bool",
                        "registered_at": "time"}},
}

# Every folder of a store, with what it holds (the module docstring draws the tree). Code outside bench.store reaches
# one only through ``Store.folder`` or the Store's own readers and writers.
FOLDERS = {
    "pairs": "registered manifests, one Parquet file per manifest id",
    "scores": "score parts (SCORE_SCHEMA), one per flush of a run",
    "runs": "one provenance row (+ JSON) per run",
    "study": "derived study tables, study/<table>/<key>.parquet",
    "images": "registered evaluation images (bench.store.images)",
    "models": "fitted study models (the ensemble scorer, ensemble-<key>.json)",
    "sr": "SR outputs of evaluated models, sr/<run>/<test set>/ (``evaluate``'s default --out)",
    "cache": "derived, disposable (checked part footers, agreement sums)",
    "quarantine": "unreadable parts moved aside by `iqa-study store check --repair`",
}
_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")

PAIR_KEY_COLUMNS = ["dataset", "pair_id", "image_a_id", "image_b_id", "votes_a", "votes_b", "pref"]
# columns the store adds to a registered manifest's rows: never part of a manifest's content
BOOKKEEPING_COLUMNS = ("manifest_id", "synthetic", "root", "registered_at", "current")
_ORDER = "registered_at DESC NULLS LAST, manifest_id"
# a registered row is current when it is the newest of its (dataset, pair_id) and of its (dataset, image pair)
CURRENT_SQL = (f"(row_number() OVER (PARTITION BY dataset, pair_id ORDER BY {_ORDER}) = 1 AND "
               f"row_number() OVER (PARTITION BY dataset, least(image_a_id, image_b_id), "
               f"greatest(image_a_id, image_b_id) ORDER BY {_ORDER}) = 1)")

# The one current-row rule for score rows (contract C1's key: image_id, ref_id, metric, config_hash): an ok row
# before a failed one, then the newest written_at, then the larger run_id (a full order: two runs writing one key
# at the same instant give the same row on every read). Used by the ``scores`` view, the folder-scoring table and
# the engine's plan of what is left to score.
CURRENT_SCORE_ORDER = "(status = 'ok') DESC, written_at DESC, run_id DESC"


def current_scores_sql(source: str) -> str:
    """``SELECT *`` of the current row per score key of ``source`` (a FROM item with every score column)."""
    return (f"SELECT * FROM {source} QUALIFY row_number() OVER (PARTITION BY image_id, ref_id, metric, config_hash "
            f"ORDER BY {CURRENT_SCORE_ORDER}) = 1")


def quote_ident(name: str) -> str:
    """A SQL identifier for a (user-named) column."""
    return '"' + str(name).replace('"', '""') + '"'


def duplicate_image_pairs(df: pd.DataFrame) -> tuple[str, str] | None:
    """Two pair ids of ``df`` that compare the same two images (by content id, either order) in one
    dataset, or None."""
    lo = df[["image_a_id", "image_b_id"]].min(axis=1)
    hi = df[["image_a_id", "image_b_id"]].max(axis=1)
    key = pd.DataFrame({"d": df["dataset"].astype(str).to_numpy(), "lo": lo.to_numpy(), "hi": hi.to_numpy()})
    dup = key.duplicated(keep=False).to_numpy()
    if not dup.any():
        return None
    first = key[dup].iloc[0]
    same = df["pair_id"].astype(str).to_numpy()[dup & (key == first).all(axis=1).to_numpy()]
    return str(same[0]), str(same[1])


@dataclass
class Registration:
    """The outcome of registering a manifest: its id, and the current rows it replaced (if any)."""
    manifest_id: str
    n_pairs: int
    new: bool  # False when the same content was already registered and still current
    replaced: dict[str, int] = field(default_factory=dict)  # manifest_id -> rows whose votes/images it replaced
    root_change: tuple[str, str] | None = None  # (stored root, this manifest's root) of the same content
    differing: list[str] = field(default_factory=list)  # the columns in which the replaced rows differed

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
        cols = f" (differing in {', '.join(self.differing)})" if self.differing else ""
        return f"manifest {self.manifest_id} registered ({self.n_pairs} pairs); replaced {rep}{cols}"


class Store:
    """The one door to stored data. ``read_only``: nothing is created or written (every writer refuses in one
    line) and ``connect`` gives the confined, locked connection for untrusted SQL (``iqa-study query``)."""

    def __init__(self, root: str | os.PathLike, create: bool = True, *, read_only: bool = False):
        self.root = Path(root)
        self.read_only = bool(read_only)
        create = create and not self.read_only
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

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise StoreError(f"{self.root}: opened read-only; {what} refused")

    def connect(self, *, include_inferred: bool = False):
        """A DuckDB connection with the store's views (bench.store.views: ``scores`` is the one current-row rule,
        ``pairs``, ``pair_scores``, ``agreement``, ``runs``, ``study_<table>``, ``images``, ``eval_*``), built once
        per state of the store's files."""
        from bench.store.views import connect

        return connect(self, include_inferred=include_inferred)

    def current_scores(self, metric: str | None = None) -> pd.DataFrame:
        """The current score row of every key (image_id, ref_id, metric, config_hash) (CURRENT_SCORE_ORDER), as the
        ``scores`` view gives it; ``metric``: only that metric's rows."""
        con = self.connect()
        if metric is None:
            return con.execute("SELECT * FROM scores ORDER BY ALL").df()
        return con.execute("SELECT * FROM scores WHERE metric = ? ORDER BY ALL", [metric]).df()

    def state(self) -> tuple:
        """A fingerprint of every file the views read ((path, size, mtime_ns) of the Parquet parts of pairs, scores,
        runs, images and study tables, and the agreement cache): equal states give equal views."""
        out = []
        for sub in ("pairs", "scores", "runs", "images", "study", "cache"):
            top = self.root / sub
            if not top.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames.sort()
                for name in sorted(filenames):
                    if name.startswith(".") or not name.endswith((".parquet", ".json")) or name == "parts.json":
                        continue  # hidden: an atomic write in flight; parts.json: the footer memo the views write
                    st = os.stat(os.path.join(dirpath, name))
                    out.append((os.path.relpath(os.path.join(dirpath, name), self.root), st.st_size, st.st_mtime_ns))
        return tuple(out)

    # --- pairs -------------------------------------------------------------------------
    @staticmethod
    def manifest_id(manifest: pd.DataFrame) -> str:
        """Content hash of the pair rows: every column (name and values, in name order) except the
        store's bookkeeping ones; a missing ``kind`` counts as 'human'."""
        df = manifest.drop(columns=[c for c in BOOKKEEPING_COLUMNS if c in manifest.columns])
        if "kind" not in df.columns:
            df = df.assign(kind="human")
        h = hashlib.sha256()
        for col in sorted(df.columns, key=str):
            values = df[col].astype("string").fillna("\0<NA>")
            h.update(f"{col}\0{len(values)}\0".encode())
            h.update(pd.util.hash_pandas_object(values, index=False).values.tobytes())
        return h.hexdigest()[:16]

    def _pairs_path(self, manifest_id: str) -> Path:
        return self.root / "pairs" / f"{manifest_id}.parquet"

    def is_registered(self, manifest_id: str) -> bool:
        """Whether a manifest of this id was ever registered here (current or replaced)."""
        return self._pairs_path(manifest_id).is_file()

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

        self._writable("registering a manifest")
        meta = manifest.attrs.get("iqa_study", {})
        if (why := reserved_problem(manifest.columns, f"manifest {meta.get('path') or meta.get('source', '')}")):
            raise StoreError(why)
        dup = duplicate_image_pairs(manifest)
        if dup:
            raise StoreError(f"{self.root}: manifest pairs {dup[0]!r} and {dup[1]!r} compare the same two images; "
                             f"one pair may be registered once (merge their votes into one row)")
        manifest_id = self.manifest_id(manifest)
        target = self._pairs_path(manifest_id)
        replaced, differing = self._conflicts(manifest, manifest_id)
        if replaced and not replace:
            (other, _), *rest = sorted(replaced.items(), key=lambda kv: -kv[1])
            more = f" and {len(rest)} other manifest(s)" if rest else ""
            raise StoreError(
                f"{self.root}: manifest {manifest_id} (dataset {', '.join(sorted(set(manifest['dataset'].astype(str))))})"
                f" differs from registered manifest {other}{more} on {sum(replaced.values())} pair(s) (same pair id or "
                f"same two images; differing: {', '.join(differing)}); register it with `iqa-study store register "
                f"MANIFEST --store {self.root} --replace` (register(..., replace=True)) to make the new registration win")
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
        return Registration(manifest_id, len(manifest), new=True, replaced=replaced, root_change=root_change, differing=differing)

    @staticmethod
    def _stored_root(part: Path) -> str | None:
        """The image root a registered pair part recorded (None when it cannot say)."""
        try:
            col = pq.read_table(part, columns=["root"]).column("root")
        except (OSError, pa.ArrowException, KeyError):
            return None
        return str(col[0].as_py()) if len(col) else None

    def _conflicts(self, manifest: pd.DataFrame, manifest_id: str) -> tuple[dict[str, int], list[str]]:
        """({manifest_id: rows}, differing columns) of the current registrations whose rows the new
        manifest contradicts: a current row of another manifest with the same (dataset, pair_id) or the
        same (dataset, unordered image pair) that differs in any column (absent = NULL, ``kind``
        absent = 'human'), or holds that image pair under another pair id."""
        import duckdb

        from bench.store.sql import read_parts

        parts = self.pair_parts()
        if not parts.good:
            return {}, []
        have = parts.columns()
        new = manifest.drop(columns=[c for c in BOOKKEEPING_COLUMNS if c in manifest.columns]).copy()
        if "kind" not in new.columns:
            new["kind"] = "human"
        cols = sorted((set(new.columns) | have) - set(BOOKKEEPING_COLUMNS) - {"dataset"}, key=str)
        con = duckdb.connect()
        con.register("new_rows", new)
        reg = "" if "registered_at" in have else ", NULL::TIMESTAMPTZ AS registered_at"
        kind = ", 'human' AS kind" if "kind" not in have else ""

        def side(alias: str, present: set[str], c: str) -> str:
            expr = f"{alias}.{quote_ident(c)}::VARCHAR" if c in present else "NULL::VARCHAR"
            return f"coalesce({expr}, 'human')" if c == "kind" else expr

        new_cols = set(new.columns)
        diffs = [f"{side('c', have | {'kind'}, c)} IS DISTINCT FROM {side('n', new_cols, c)}" for c in cols]
        flags = ", ".join(f"bool_or({d}) AS {quote_ident('d_' + c)}" for d, c in zip(diffs, cols))
        rows = con.execute(f"""
            WITH cur AS (
                SELECT * FROM (SELECT *{reg}{kind} FROM {read_parts(parts.good)}) QUALIFY {CURRENT_SQL}),
            m AS (
                SELECT c.*, n.pair_id AS _new_pid, n.image_a_id AS _new_a, n.image_b_id AS _new_b FROM cur c
                JOIN new_rows n ON c.dataset = n.dataset AND c.pair_id = n.pair_id
                UNION ALL BY NAME
                SELECT c.*, n.pair_id AS _new_pid, n.image_a_id AS _new_a, n.image_b_id AS _new_b FROM cur c
                JOIN new_rows n ON c.dataset = n.dataset AND c.pair_id <> n.pair_id
                 AND least(c.image_a_id, c.image_b_id) = least(n.image_a_id, n.image_b_id)
                 AND greatest(c.image_a_id, c.image_b_id) = greatest(n.image_a_id, n.image_b_id))
            SELECT c.manifest_id, count(DISTINCT c.dataset || '\0' || c.pair_id) AS n, {flags}
            FROM m c JOIN new_rows n ON n.dataset = c.dataset AND n.pair_id = c._new_pid
            WHERE c.manifest_id <> ? AND ({' OR '.join(diffs)}) GROUP BY c.manifest_id""", [manifest_id]).fetchall()
        replaced = {r[0]: int(r[1]) for r in rows}
        differing = [c for i, c in enumerate(cols) if any(r[2 + i] for r in rows)]
        return replaced, differing

    # --- scores ------------------------------------------------------------------------
    def write_scores(self, rows: list[dict], run_id: str, rank: int, seq: int) -> Path | None:
        self._writable("writing scores")
        if not rows:
            return None
        table = pa.Table.from_pylist(rows, schema=SCORE_SCHEMA)
        return atomic_write_table(table, self.root / "scores" / f"part-{run_id}-r{rank:03d}-{seq:06d}.parquet")

    def score_glob(self) -> str:
        """For plain DuckDB users; the suite itself reads ``score_parts()`` (bad parts skipped)."""
        return str(self.root / "scores" / "part-*.parquet")

    def score_parts(self) -> PartList:
        return self.parts.list("scores", prefix="part-", expect=FOLDER_KINDS["scores"])

    def pair_parts(self) -> PartList:
        return self.parts.list("pairs", expect=FOLDER_KINDS["pairs"])

    def parquet_source(self, sub: str, part_prefix: str = "", empty: pa.Schema | None = None,
                       fs_prefix: str = "") -> str | None:
        """SQL ``read_parquet([...])`` over the readable parts of STORE/<sub> whose names start with
        ``part_prefix`` (escaped paths, bad parts skipped and reported), each path behind ``fs_prefix`` (the
        confined read-only file system of ``connect(read_only=True)``, passed by the caller: no state on the
        store); ``empty``'s typed empty relation, or None, when there are none."""
        from bench.store.sql import read_parts

        parts = self.parts.list(sub, prefix=part_prefix)
        if not parts.good and empty is None:
            return None
        return read_parts(parts.good, fs_prefix, empty)

    # --- runs and study tables -----------------------------------------------------------
    def write_run(self, record: dict) -> None:
        self._writable("writing a run record")
        flat = {k: (json.dumps(v, default=str) if isinstance(v, (dict, list)) else v) for k, v in record.items()}
        atomic_write_table(pa.Table.from_pylist([flat]), self.root / "runs" / f"{record['run_id']}.parquet")
        atomic_write_text(json.dumps(record, indent=2, default=str), self.root / "runs" / f"{record['run_id']}.json")

    def write_study_table(self, name: str, key: str, df: pd.DataFrame) -> Path:
        """Derived tables (phase subsets, ranks, ...): one file per key, overwritten on re-run."""
        self._writable(f"writing study table {name}")
        return atomic_write_table(pa.Table.from_pandas(df, preserve_index=False), self.study_path(name, key))

    def study_tables(self) -> list[str]:
        folder = self.root / "study"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("*.parquet")))

    def _checked(self, what: str, name) -> str:
        """``name`` when it is one safe path component (no path may leave the store), else one line."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise StoreError(f"{self.root}: {what} {name!r}: expected letters, digits, '_', '-' or '.' "
                             "(not starting with '.')")
        return name

    def study_path(self, table: str, key: str) -> Path:
        """STORE/study/<table>/<key>.parquet; both names are checked (no path may leave the store)."""
        return self.root / "study" / self._checked("study table", table) / f"{self._checked('study key', key)}.parquet"

    def has_study(self, table: str, key: str | None) -> bool:
        return bool(key) and self.study_path(table, key).is_file()

    def read_study(self, table: str, key: str) -> pd.DataFrame:
        """The result ``key`` of study table ``table``; one line naming the file when there is none."""
        path = self.study_path(table, key)
        if not path.is_file():
            raise StoreError(f"{path}: no such study result (key {key!r})")
        return pd.read_parquet(path)

    def study_results(self, table: str) -> pd.DataFrame | None:
        """Every stored result of study table ``table`` in the one latest-first order: the newest ``created_at``,
        then the larger key (file name), so equal times never give an arbitrary row; None when there is none."""
        folder = self.root / "study" / self._checked("study table", table)
        files = sorted(folder.glob("*.parquet"), reverse=True) if folder.is_dir() else []  # larger key first
        if not files:
            return None
        df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        # a stable sort keeps the key order among equal times
        return df.sort_values("created_at", ascending=False, kind="stable") if "created_at" in df else df

    def latest_study(self, table: str, key_column: str, **match) -> tuple[str | None, pd.DataFrame | None]:
        """(key, rows) of the latest result of ``table`` (``study_results``' order) whose columns equal ``match``
        (a missing value counts as ''); (None, None) when there is none."""
        df = self.study_results(table)
        if df is None:
            return None, None
        for col, value in match.items():
            if col not in df:
                return None, None
            df = df[df[col].fillna("") == value]
        if df.empty:
            return None, None
        key = str(df[key_column].iloc[0])
        return key, df[df[key_column] == key].reset_index(drop=True)

    def folder(self, name: str) -> Path:
        """A declared folder of the store (FOLDERS), created on first use: the only way to a path in it."""
        if name not in FOLDERS:
            raise StoreError(f"{self.root}: no store folder {name!r} (declared: {', '.join(FOLDERS)})")
        path = self.root / name
        if not self.read_only:
            path.mkdir(parents=True, exist_ok=True)
        return path
