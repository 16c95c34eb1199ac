"""Score a folder (or one file) without a manifest, as ``pyiqa METRIC -t folder`` users do.

References for full-reference metrics come from a second folder, matched by file name: the
same name, else the one file with the same stem (``x.png`` <- ``x.jpg``); an image with no or an
ambiguous match gets no FR score and is counted in the summary. Images are keyed by content hash
like every other score, so a folder scored here joins manifests and evaluations in the store.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from bench.errors import StudyError
from bench.scoring.images import ImageRef, content_hash

log = logging.getLogger("bench.scoring")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def list_images(path: str | Path, what: str = "--images") -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise StudyError(f"{what} {p}: no such file or directory")
    entries = sorted(f for f in p.iterdir() if f.is_file())
    files = [f for f in entries if f.suffix.lower() in IMAGE_SUFFIXES]
    skipped = [f.name for f in entries if f.suffix.lower() not in IMAGE_SUFFIXES]
    if not files:
        raise StudyError(f"{what} {p}: no image files ({', '.join(IMAGE_SUFFIXES)})"
                         + (f"; skipped {len(skipped)} file(s) ({_names(skipped)})" if skipped else ""))
    if skipped:  # one line on stderr (logging's last-resort handler): stdout stays one table / CSV / JSON
        log.warning("%s %s: skipped %d file(s) without an image suffix (%s); read: %s", what, p, len(skipped),
                    _names(skipped), " ".join(IMAGE_SUFFIXES))
    return files


def _names(names: list[str], show: int = 5) -> str:
    return ", ".join(names[:show]) + (f", ... {len(names) - show} more" if len(names) > show else "")


def _describe(path: Path) -> tuple[str, int, int]:
    data = path.read_bytes()
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, ValueError, Image.DecompressionBombError):
        w = h = -1  # the engine records the decode error as a row
    return content_hash(data), w, h


def match_reference(image: Path, refs: dict[str, Path], by_stem: dict[str, list[Path]]) -> Path | None:
    if image.name in refs:
        return refs[image.name]
    cands = by_stem.get(image.stem, [])
    return cands[0] if len(cands) == 1 else None


def refs_from_folder(images: str | Path, ref_dir: str | Path | None = None) -> tuple[list[ImageRef], list[str], int]:
    """(refs, their file names, number of images without a reference when ``ref_dir`` is given)."""
    files = list_images(images)
    ref_files = list_images(ref_dir, "--ref") if ref_dir is not None else []
    by_name = {f.name: f for f in ref_files}
    by_stem: dict[str, list[Path]] = {}
    for f in ref_files:
        by_stem.setdefault(f.stem, []).append(f)
    out, names, unmatched = [], [], 0
    ref_ids: dict[Path, str] = {}
    for f in files:
        iid, w, h = _describe(f)
        names.append(f.name)
        ref = match_reference(f, by_name, by_stem) if ref_dir is not None else None
        if ref is None:
            unmatched += ref_dir is not None
            out.append(ImageRef(iid, str(f.resolve()), w, h))
            continue
        if ref not in ref_ids:
            ref_ids[ref] = content_hash(ref.read_bytes())
        out.append(ImageRef(iid, str(f.resolve()), w, h, ref_ids[ref], str(ref.resolve())))
    if ref_dir is not None and unmatched == len(files):
        raise StudyError(f"--ref {ref_dir}: no reference matches any image of {images} by file name")
    return out, names, unmatched


def score_folder(images: str | Path, metrics, store, ref_dir: str | Path | None = None, options=None, **kwargs):
    """Score a folder/file into ``store`` and record the run. ``options`` (ScoreOptions), or the keywords of
    ``ScoreOptions.resolve``. Returns (run, summaries, table, unmatched)."""
    from bench import provenance
    from bench.scoring.engine import score_and_record
    from bench.scoring.options import options_from
    from bench.scoring.report import score_table

    o = options_from(options, kwargs)
    refs, names, unmatched = refs_from_folder(images, ref_dir)
    config = {"metrics": [m.name for m in metrics], "images": str(Path(images).resolve()),
              "ref": str(Path(ref_dir).resolve()) if ref_dir else None, **o.record()}
    run = provenance.new_run("score", config, device=o.device, seed=None)
    summaries = score_and_record(refs, metrics, store, run, o)
    return run, summaries, score_table(store, refs, summaries, names), unmatched
