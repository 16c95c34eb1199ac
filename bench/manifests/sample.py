"""The embedded offline default: a SYNTHETIC SR preference set built from photographs that
scikit-image ships (no download).

For each photograph: HR = 256x256 crop; LR = HR downscaled x4 (bicubic, antialiased); every
candidate is an x4 upscale of that LR, degraded along one axis at three strengths:

    upsampler   bicubic  >  bilinear  >  nearest
    noise       Gaussian sigma 2/255  >  8/255  >  20/255   (added after bicubic x4)
    blur        Gaussian sigma 0.6  >  1.5  >  3.0 px       (applied after bicubic x4)
    jpeg        quality 75  >  35  >  10                    (of the bicubic x4 result)

Pairs compare two strengths of the same axis; the **synthetic preference** is the weaker
degradation, with synthetic votes 7-3 for a one-step gap and 9-1 for a two-step gap. One tie
pair per photograph compares two noise draws of equal strength (votes 5-5). These are not
human judgements: every manifest and report built on this set is labelled synthetic. Each pair
is a direct (simulated) comparison of the two images, so its ``kind`` is 'human' (not 'inferred'
from other labels); the manifest metadata says ``synthetic: true``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from bench.atomic import atomic_save_image
from bench.manifests.schema import finalize

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "camera.png")
SIZE, SCALE = 256, 4
AXES = {
    "upsampler": ("bicubic", "bilinear", "nearest"),
    "noise": (2, 8, 20),
    "blur": (0.6, 1.5, 3.0),
    "jpeg": (75, 35, 10),
}
VOTES = {1: (7, 3), 2: (9, 1)}
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


def bundled_photo(name: str) -> Image.Image:
    """One of the photographs scikit-image ships (no download), as RGB."""
    from importlib import resources

    with resources.files("skimage.data").joinpath(name).open("rb") as fh:
        return Image.open(fh).convert("RGB")


def _photo(name: str) -> Image.Image:
    img = bundled_photo(name)
    short = min(img.size)
    left, top = (img.width - short) // 2, (img.height - short) // 2
    return img.crop((left, top, left + short, top + short)).resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def _variant(lr: Image.Image, axis: str, level, rng: np.random.Generator) -> Image.Image:
    up = lr.resize((SIZE, SIZE), _RESAMPLE[level] if axis == "upsampler" else Image.Resampling.BICUBIC)
    if axis == "noise":
        arr = np.asarray(up, dtype=np.float32) + rng.normal(0, level, size=(SIZE, SIZE, 3))
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    if axis == "blur":
        return up.filter(ImageFilter.GaussianBlur(level))
    if axis == "jpeg":
        buf = io.BytesIO()
        up.save(buf, format="JPEG", quality=level)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return up


def build_sample(out: str | Path, seed: int = 0) -> pd.DataFrame:
    """Write images under ``out/images`` and return the (synthetic) manifest frame."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    rows = []
    for file in PHOTOS:
        photo = Path(file).stem
        hr = _photo(file)
        lr = hr.resize((SIZE // SCALE, SIZE // SCALE), Image.Resampling.BICUBIC, reducing_gap=None)
        folder = out / "images" / photo
        folder.mkdir(parents=True, exist_ok=True)
        atomic_save_image(hr, folder / "hr.png")
        names = {}
        for axis, levels in AXES.items():
            for strength, level in enumerate(levels):
                name = f"{axis}{strength}.png"
                atomic_save_image(_variant(lr, axis, level, rng), folder / name)
                names[(axis, strength)] = f"images/{photo}/{name}"
        atomic_save_image(_variant(lr, "noise", AXES["noise"][1], rng), folder / "noise1_redraw.png")
        for axis in AXES:
            for i in range(3):
                for j in range(i + 1, 3):
                    better, worse = names[(axis, i)], names[(axis, j)]
                    vb, vw = VOTES[j - i]
                    if rng.random() < 0.5:  # sides in random order: no position cue
                        a, b, va, vbb, pref = better, worse, vb, vw, "a"
                    else:
                        a, b, va, vbb, pref = worse, better, vw, vb, "b"
                    rows.append({"pair_id": f"{photo}:{axis}{i}-{axis}{j}", "dataset": "sample-synthetic",
                                 "split": "all", "group": photo, "image_a": a, "image_b": b, "votes_a": va,
                                 "votes_b": vbb, "pref": pref, "axis": axis, "gap": j - i})
        rows.append({"pair_id": f"{photo}:noise1-noise1_redraw", "dataset": "sample-synthetic", "split": "all",
                     "group": photo, "image_a": names[("noise", 1)], "image_b": f"images/{photo}/noise1_redraw.png",
                     "votes_a": 5, "votes_b": 5, "pref": "tie", "axis": "noise", "gap": 0})
    return finalize(pd.DataFrame(rows), out, dataset="sample-synthetic", importer="sample", synthetic=True,
                    source="scikit-image bundled photographs; synthetic degradations and votes (bench/manifests/sample.py)",
                    extra_meta={"seed": seed, "photos": list(PHOTOS)})
