"""A small SYNTHETIC multi-GT set in the exact HGGT layout, for the demo and the tests.

Originals: crops of the photographs scikit-image ships, or of the real photographs in a folder
(``photos=DIR``, e.g. BSD100 or DIV2K HR; a photograph smaller than the requested group size is
first upscaled with Lanczos). "Enhanced" GTs 01..04 are made by
documented operators of different strength (PIL):

    01  mild sharpening      UnsharpMask(radius 2, 80 %, threshold 2)      designed label: Positive
    02  strong sharpening    UnsharpMask(radius 2, 250 %) + contrast x1.15  designed label: Similar
    03  softening            GaussianBlur(1.2)                              designed label: Negative
    04  vivid colour         Color x1.4 + contrast x1.1                     designed label: Positive

Three synthetic annotators (A, B, C) each give the designed label with probability 0.8, else
a random one. Nothing here is a human judgement: the folder holds SYNTHETIC.md saying so, and
the label JSONs use HGGT's real structure (Picture_1..5, Time_cost).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from bench.atomic import atomic_save_image, atomic_write_text
from bench.errors import StudyError
from bench.manifests.sample import PHOTOS, bundled_photo

DESIGNED = {"01": "Positive", "02": "Similar", "03": "Negative", "04": "Positive"}
LABELS = ("Positive", "Similar", "Negative")
BUILDING = ".synthetic-building"  # present while a build runs: an interrupted build is still our own output


def enhance(img: Image.Image, k: str) -> Image.Image:
    if k == "01":
        return img.filter(ImageFilter.UnsharpMask(radius=2, percent=80, threshold=2))
    if k == "02":
        return ImageEnhance.Contrast(img.filter(ImageFilter.UnsharpMask(radius=2, percent=250, threshold=0))).enhance(1.15)
    if k == "03":
        return img.filter(ImageFilter.GaussianBlur(1.2))
    if k == "04":
        return ImageEnhance.Contrast(ImageEnhance.Color(img).enhance(1.4)).enhance(1.1)
    raise ValueError(k)


def _label_doc(stem: str, labels: list[str]) -> dict:
    doc = {"Picture_1": {"Name": f"{stem}.png", "File": "original", "Label": None}}
    for i, (k, lab) in enumerate(zip(DESIGNED, labels), start=2):
        doc[f"Picture_{i}"] = {"Name": f"{stem}_{k}.png", "File": k, "Label": lab}
    doc["Time_cost"] = {"Start": "synthetic", "End": "synthetic", "Total": 0}
    return doc


def build_synthetic_hggt(out: str | Path, groups_per_photo: int = 4, size: int = 128, seed: int = 0,
                        photos: str | Path | None = None, val_photos: int | None = None,
                        max_photos: int | None = None) -> Path:
    """Write ``out/images/{original,01..04}``, ``out/labels/{A,B,C}`` and ``out/val/{hr,lr_blind_x4}``.

    ``photos``: a folder of real photographs to cut the originals from (default: scikit-image's bundled
    ones); the enhanced GTs and labels stay SYNTHETIC (SYNTHETIC.md and source.json say so).
    ``val_photos``: how many photographs (the first by name) give a val crop (default: every one).
    ``max_photos``: use only the first this many photographs (default: every one).

    ``out`` must be new, empty, or this function's own earlier output (SYNTHETIC.md, or the BUILDING
    marker of an interrupted build): a folder holding anything else (real data) is refused, never overwritten."""
    from bench.scoring.images import read_rgb_u8
    from sr_training import infer
    from sr_training.data.folder import list_images
    from sr_training.evaluate import fixed_lr

    out = Path(out)
    if photos is not None:  # the suite's one image lister and decoder (16-bit kept, alpha over white)
        sources = [(p, lambda p=p: Image.fromarray(read_rgb_u8(p, "--photos image")))
                   for p in list_images(photos, "--photos", "expected a folder of real photographs")]
    else:
        sources = [(Path(name), lambda name=name: bundled_photo(name)) for name in PHOTOS]
    for what, n in (("val_photos", val_photos), ("max_photos", max_photos)):
        if n is not None and n < 1:
            raise StudyError(f"{what} {n}: expected >= 1")
    sources = sources[:max_photos]
    check_target(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text("an interrupted build of sr_training/data/synthetic.py; rebuild into this folder\n", out / BUILDING)
    rng = np.random.default_rng(seed)
    for sub in ["original", *DESIGNED]:
        (out / "images" / sub).mkdir(parents=True, exist_ok=True)
    for ann in "ABC":
        (out / "labels" / ann).mkdir(parents=True, exist_ok=True)
    val_hr, val_lr = out / "val" / "hr", out / "val" / "lr_blind_x4"
    val_hr.mkdir(parents=True, exist_ok=True)
    val_lr.mkdir(parents=True, exist_ok=True)
    for p, (name, read) in enumerate(sources):
        photo = read()
        if min(photo.size) < size:  # e.g. 512 px groups from chelsea (451x300): upscale, Lanczos
            f = size / min(photo.size)
            photo = photo.resize((max(size, round(photo.width * f)), max(size, round(photo.height * f))),
                                 Image.Resampling.LANCZOS)
        for g in range(groups_per_photo):
            top = int(rng.integers(0, photo.height - size + 1))
            left = int(rng.integers(0, photo.width - size + 1))
            crop = photo.crop((left, top, left + size, top + size))
            stem = f"{p + 1:04d}-{top}-{left}"  # HGGT naming: {source}-{x = top row}-{y = left column}
            atomic_save_image(crop, out / "images" / "original" / f"{stem}.png")
            for k in DESIGNED:
                atomic_save_image(enhance(crop, k), out / "images" / k / f"{stem}_{k}.png")
            for ann in "ABC":
                labels = [DESIGNED[k] if rng.random() < 0.8 else LABELS[int(rng.integers(0, 3))] for k in DESIGNED]
                atomic_write_text(json.dumps(_label_doc(stem, labels), indent=1), out / "labels" / ann / f"{stem}.json")
        if val_photos is not None and p >= val_photos:
            continue
        val = photo.crop((0, 0, size, size))
        atomic_save_image(val, val_hr / f"{Path(name).stem}.png")
        # val LR = the training degradation with a fixed seed (like Set5's lr_blind_x4), not a clean bicubic
        infer.save_png(fixed_lr(infer.load_rgb(val_hr / f"{Path(name).stem}.png"), p, seed=seed + 1000),
                       val_lr / f"{Path(name).stem}.png")
    origin = (f"the {len(sources)} REAL photographs in {Path(photos).resolve()} (image NNNN = the NNNN-th file by "
              f"name, source.json lists them)" if photos is not None else "scikit-image photographs")
    atomic_write_text(
        f"# SYNTHETIC multi-GT set\n\nBuilt by sr_training/data/synthetic.py from {origin}. The "
        "'enhanced' GTs are fixed PIL operators and the A/B/C labels are synthetic annotators, not people.\n"
        "val/ holds x4 LR inputs made by the one-stage training degradation with a fixed seed "
        "(sr_training/evaluate.py fixed_lr), for validation.\n", out / "SYNTHETIC.md")
    atomic_write_text(json.dumps({
        "originals": "real photographs" if photos is not None else "scikit-image bundled photographs",
        "photos_folder": str(Path(photos).resolve()) if photos is not None else None,
        "photos": [str(n) if photos is None else n.name for n, _ in sources],
        "enhanced_gts": "SYNTHETIC (PIL operators, sr_training/data/synthetic.py DESIGNED)",
        "labels": "SYNTHETIC annotators A, B, C (designed label with probability 0.8)",
        "groups_per_photo": groups_per_photo, "size": size, "seed": seed, "val_photos": val_photos,
        "max_photos": max_photos}, indent=1),
        out / "source.json")
    (out / BUILDING).unlink()
    return out


def check_target(out: Path) -> None:
    """Refuse (one line) a target that is a file, or a non-empty folder that is not an earlier SYNTHETIC set."""
    if out.exists() and not out.is_dir():
        raise StudyError(f"{out}: exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if (out / "SYNTHETIC.md").is_file() or (out / BUILDING).is_file():
        return
    raise StudyError(f"{out}: the folder is not empty and is not an earlier SYNTHETIC set (no SYNTHETIC.md): "
                     f"refusing to overwrite its images and labels; give a new or empty folder")
