"""The pair manifest: one Parquet table of human-judged image pairs.

Columns (required):
    pair_id, dataset, split, group        strings
    image_a, image_b                      paths relative to the manifest root
    votes_a, votes_b                      nullable int64 (null: the dataset has labels, not votes)
    pref                                  'a' | 'b' | 'tie': the dataset's human preference. For vote
                                          sets it is the majority (a if votes_a > votes_b, b if fewer,
                                          else tie); for HGGT it is the effective three-annotator label.
    image_a_id, image_b_id                content hashes (sha256 of the file bytes, 32 hex chars)
    width_a, height_a, width_b, height_b  image sizes (for batching and pixel caps)
Any further columns are dataset-specific (methods, labels, ...).

File-level metadata (Parquet key ``iqa_study.manifest``, JSON): root, dataset, importer,
synthetic (bool), source, created_at, n_pairs. Images are identified in the store by hash,
so a moved dataset only needs a new root.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from bench.atomic import atomic_write_table
from bench.errors import ManifestError

META_KEY = b"iqa_study.manifest"
REQUIRED = ["pair_id", "dataset", "split", "group", "image_a", "image_b", "votes_a", "votes_b", "pref"]
PREFS = {"a", "b", "tie"}


def pref_from_votes(votes_a: int, votes_b: int) -> str:
    return "a" if votes_a > votes_b else "b" if votes_a < votes_b else "tie"


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:32]


def _describe(path: Path) -> tuple[str, int, int]:
    """(hash, width, height); an unreadable header gives size -1 x -1 and the scoring engine then
    records the decode error for that image (the pair is kept, nothing is dropped silently)."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, ValueError):  # PIL raises UnidentifiedImageError (an OSError) on corrupt files
        width = height = -1
    return file_hash(path), width, height


def describe_images(root: Path, relpaths: list[str], workers: int = 8) -> dict[str, tuple[str, int, int]]:
    """Hash and size every distinct image once (width/height -1 when the header cannot be read:
    the scoring engine then records the failure for that image instead of dropping the pair)."""
    unique = sorted(set(relpaths))
    missing = [p for p in unique if not (root / p).is_file()]
    if missing:
        raise ManifestError(
            f"{root}: {len(missing)} image file(s) named by the manifest do not exist, e.g. {missing[0]!r}"
        )
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(
            tqdm(pool.map(lambda p: _describe(root / p), unique), total=len(unique), desc="hash images", unit="img",
                 disable=len(unique) < 200)
        )
    return dict(zip(unique, results))


def validate(df: pd.DataFrame, source: str) -> None:
    absent = [c for c in REQUIRED if c not in df.columns]
    if absent:
        raise ManifestError(f"{source}: missing column(s) {absent}; required: {REQUIRED}")
    bad = df.loc[~df["pref"].isin(PREFS)]
    if len(bad):
        raise ManifestError(f"{source}: pair {bad.iloc[0]['pair_id']!r}: pref {bad.iloc[0]['pref']!r} not in {sorted(PREFS)}")
    dup = df["pair_id"][df["pair_id"].duplicated()]
    if len(dup):
        raise ManifestError(f"{source}: duplicate pair_id {dup.iloc[0]!r}")
    same = df.loc[df["image_a"] == df["image_b"]]
    if len(same):
        raise ManifestError(f"{source}: pair {same.iloc[0]['pair_id']!r} compares {same.iloc[0]['image_a']!r} with itself")


def finalize(df: pd.DataFrame, root: Path, *, dataset: str, importer: str, synthetic: bool, source: str,
             extra_meta: dict | None = None) -> pd.DataFrame:
    """Validate, attach content hashes and sizes, order columns; returns the manifest frame."""
    df = df.copy()
    for col in ("pair_id", "dataset", "split", "group", "image_a", "image_b", "pref"):
        if col in df.columns:
            df[col] = df[col].astype(str)
    for col in ("votes_a", "votes_b"):
        if col in df.columns:
            df[col] = df[col].astype("Int64")
    validate(df, source)
    info = describe_images(root, list(df["image_a"]) + list(df["image_b"]))
    for side in ("a", "b"):
        df[f"image_{side}_id"] = [info[p][0] for p in df[f"image_{side}"]]
        df[f"width_{side}"] = [info[p][1] for p in df[f"image_{side}"]]
        df[f"height_{side}"] = [info[p][2] for p in df[f"image_{side}"]]
    first = REQUIRED + ["image_a_id", "image_b_id", "width_a", "height_a", "width_b", "height_b"]
    df = df[first + [c for c in df.columns if c not in first]].reset_index(drop=True)
    df.attrs["iqa_study"] = {
        "root": str(Path(root).resolve()),
        "dataset": dataset,
        "importer": importer,
        "synthetic": bool(synthetic),
        "source": source,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "n_pairs": int(len(df)),
        **(extra_meta or {}),
    }
    return df


def write(df: pd.DataFrame, out: str | os.PathLike) -> Path:
    out = Path(out)
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[META_KEY] = json.dumps(df.attrs["iqa_study"]).encode()
    return atomic_write_table(table.replace_schema_metadata(meta), out)


def read(path: str | os.PathLike, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read a manifest; ``root`` overrides the recorded one (data moved)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest file does not exist")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"{path}: not a readable Parquet manifest ({exc})") from exc
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ManifestError(f"{path}: no '{META_KEY.decode()}' metadata; build it with `iqa-study manifest build`")
    df = table.to_pandas()
    validate(df, str(path))
    df.attrs["iqa_study"] = json.loads(raw)
    if root is not None:
        df.attrs["iqa_study"]["root"] = str(Path(root).resolve())
    df.attrs["iqa_study"]["path"] = str(path.resolve())
    return df
