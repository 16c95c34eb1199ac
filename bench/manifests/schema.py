"""The pair manifest: one Parquet table of human-judged image pairs.

Columns (required):
    pair_id, dataset, split, group        strings
    image_a, image_b                      paths relative to the manifest root
    votes_a, votes_b                      nullable int64 (null: the dataset has labels, not votes)
    pref                                  'a' | 'b' | 'tie': the dataset's human preference. For vote
                                          sets it is the majority (a if votes_a > votes_b, b if fewer,
                                          else tie); for HGGT it is the effective three-annotator label.
    image_a_id, image_b_id                content hashes (sha256 of the file bytes, 32 hex chars)
    width_a, height_a, width_b, height_b  image sizes (for batching and pixel caps); -1 when the header
                                          cannot be read (corrupt file, decompression bomb): the pair is
                                          kept and the scoring engine records the failure for that image
    kind                                  'human' (an annotator compared the two images) or 'inferred'
                                          (derived from other labels, e.g. HGGT enhanced-vs-enhanced);
                                          a manifest without the column is all 'human' (contract C2)
Any further columns are dataset-specific (methods, labels, per-observer votes, ...).

Image paths are relative to the root, never absolute, never containing '..', and must not
resolve (through symlinks) outside the root; the two images of a pair must differ in resolved
path and in content.

File-level metadata (Parquet key ``iqa_study.manifest``, JSON): root, dataset, importer,
synthetic (bool), source, created_at, n_pairs. Images are identified in the store by hash,
so a moved dataset only needs a new root.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath, PureWindowsPath

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from bench.atomic import atomic_write_table
from bench.errors import ManifestError
from bench.hashing import sha256_file
from bench.progress import progress_bar

META_KEY = b"iqa_study.manifest"
REQUIRED = ["pair_id", "dataset", "split", "group", "image_a", "image_b", "votes_a", "votes_b", "pref"]
PREFS = {"a", "b", "tie"}
KINDS = ("human", "inferred")
MAX_VOTES = 2**31 - 1  # a vote count above this is a corrupt file, not a study
# Columns the store adds to every registered row (bench.store.layout.Store.register) or its views add
# (bench.store.views: pairs_all.current): a manifest column of the same name would override them
# (a stale manifest's 'current' winning over `store register --replace`), so none may be in a manifest.
RESERVED = ("manifest_id", "synthetic", "root", "registered_at", "current")


def reserved_problem(columns, source: str) -> str | None:
    """The one-line refusal for manifest columns named like the store's own (None when there are none)."""
    clash = [c for c in RESERVED if c in set(map(str, columns))]
    if not clash:
        return None
    return (f"{source}: column(s) {clash} are reserved (the store adds {', '.join(RESERVED)} to every registered "
            f"pair); rename or drop them")


def pref_from_votes(votes_a: int, votes_b: int) -> str:
    return "a" if votes_a > votes_b else "b" if votes_a < votes_b else "tie"


def file_hash(path: Path) -> str:
    """Image id: the first 32 hex digits of the file's SHA-256 (as bench.scoring.images.content_hash)."""
    return sha256_file(path)[:32]


def _describe(path: Path) -> tuple[str, int, int, str | None]:
    """(hash, width, height, problem); an unreadable header (corrupt file, or a decompression bomb:
    more pixels than PIL's MAX_IMAGE_PIXELS guard allows) gives size -1 x -1 and the reason, and
    the scoring engine then records the failure for that image (the pair is kept, nothing is
    dropped silently, no traceback)."""
    problem = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        width = height = -1
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    return file_hash(path), width, height, problem


def relpath_problem(rel: str) -> str | None:
    """Why ``rel`` is not an acceptable image path relative to a root (None when it is)."""
    if not rel or rel in ("nan", "None"):
        return "is empty"
    if "\0" in rel:
        return "contains a NUL byte"
    if rel.startswith(("/", "\\")) or PureWindowsPath(rel).drive or PurePosixPath(rel).is_absolute():
        return "is an absolute path; paths must be relative to the root"
    if ".." in PurePosixPath(rel.replace("\\", "/")).parts:
        return "contains '..'; paths must stay inside the root"
    return None


def safe_path(root: Path, rel: str, where: str) -> Path:
    """``root / rel`` after checking that ``rel`` is relative, has no '..' and does not resolve
    (through a symlink) outside ``root``; a ManifestError naming ``where`` (file/row) otherwise."""
    why = relpath_problem(rel)
    if why:
        raise ManifestError(f"{where}: {rel!r} {why}")
    path = Path(root) / rel
    resolved, base = path.resolve(), Path(root).resolve()
    if not resolved.is_relative_to(base):
        raise ManifestError(f"{where}: {rel!r} resolves to {resolved}, outside the root {base} (symlink?)")
    return path


def describe_images(root: Path, relpaths: list[str], workers: int = 8) -> dict[str, tuple[str, int, int, str | None]]:
    """Hash and size every distinct image once (width/height -1 and a reason when the header cannot
    be read: the scoring engine then records the failure for that image instead of dropping the pair).
    Paths must already be checked with ``safe_path`` (``finalize`` does, per pair)."""
    unique = sorted(set(relpaths))
    missing = [p for p in unique if not (root / p).is_file()]
    if missing:
        raise ManifestError(
            f"{root}: {len(missing)} image file(s) named by the manifest do not exist, e.g. {missing[0]!r}"
        )
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(
            progress_bar(pool.map(lambda p: _describe(root / p), unique), total=len(unique), desc="hash images", unit="img",
                 disable=len(unique) < 200)
        )
    return dict(zip(unique, results))


def validate(df: pd.DataFrame, source: str) -> None:
    absent = [c for c in REQUIRED if c not in df.columns]
    if absent:
        raise ManifestError(f"{source}: missing column(s) {absent}; required: {REQUIRED}")
    if (why := reserved_problem(df.columns, source)) is not None:
        raise ManifestError(why)
    bad = df.loc[~df["pref"].isin(PREFS)]
    if len(bad):
        raise ManifestError(f"{source}: pair {bad.iloc[0]['pair_id']!r}: pref {bad.iloc[0]['pref']!r} not in {sorted(PREFS)}")
    if "kind" in df.columns:
        bad = df.loc[~df["kind"].isin(KINDS)]
        if len(bad):
            raise ManifestError(f"{source}: pair {bad.iloc[0]['pair_id']!r}: kind {bad.iloc[0]['kind']!r}, "
                                f"expected one of {', '.join(KINDS)}")
    dup = df["pair_id"][df["pair_id"].duplicated()]
    if len(dup):
        raise ManifestError(f"{source}: duplicate pair_id {dup.iloc[0]!r}")
    for pid, a, b in zip(df["pair_id"], df["image_a"], df["image_b"]):
        for col, rel in (("image_a", a), ("image_b", b)):
            why = relpath_problem(str(rel))
            if why:
                raise ManifestError(f"{source}: pair {pid!r}: {col} {rel!r} {why}")
        if os.path.normpath(str(a)) == os.path.normpath(str(b)):
            raise ManifestError(f"{source}: pair {pid!r} compares {a!r} with itself")


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
    if "kind" not in df.columns:
        df["kind"] = "human"
    df["kind"] = df["kind"].astype(str)
    validate(df, source)
    for pid, a, b in zip(df["pair_id"], df["image_a"], df["image_b"]):
        pa_, pb_ = safe_path(root, a, f"{source}: pair {pid!r}: image_a"), safe_path(root, b, f"{source}: pair {pid!r}: image_b")
        if pa_.resolve() == pb_.resolve():
            raise ManifestError(f"{source}: pair {pid!r}: image_a {a!r} and image_b {b!r} are the same file")
    info = describe_images(root, list(df["image_a"]) + list(df["image_b"]))
    for side in ("a", "b"):
        df[f"image_{side}_id"] = [info[p][0] for p in df[f"image_{side}"]]
        df[f"width_{side}"] = [info[p][1] for p in df[f"image_{side}"]]
        df[f"height_{side}"] = [info[p][2] for p in df[f"image_{side}"]]
    same = df.loc[df["image_a_id"] == df["image_b_id"]]
    if len(same):
        r = same.iloc[0]
        raise ManifestError(f"{source}: pair {r['pair_id']!r}: image_a {r['image_a']!r} and image_b {r['image_b']!r} "
                            f"have identical content (sha256 {r['image_a_id'][:12]}...); a pair must compare two images")
    from bench.store.layout import duplicate_image_pairs

    dup = duplicate_image_pairs(df)
    if dup:
        raise ManifestError(f"{source}: pairs {dup[0]!r} and {dup[1]!r} compare the same two images (by content); "
                            f"one pair may appear once (merge their votes into one row)")
    unreadable = {p: v[3] for p, v in info.items() if v[3]}
    first = REQUIRED + ["image_a_id", "image_b_id", "width_a", "height_a", "width_b", "height_b"]
    df = df[first + [c for c in df.columns if c not in first]].reset_index(drop=True)
    df.attrs["iqa_study"] = {
        "root": str(Path(root).resolve()),
        "dataset": dataset,
        "importer": importer,
        "synthetic": bool(synthetic),
        "source": source,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "n_pairs": len(df),
        "n_unreadable_images": len(unreadable),
        "unreadable_examples": dict(sorted(unreadable.items())[:5]),
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
