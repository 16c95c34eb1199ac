"""A tiny SYNTHETIC store for the user-study tests: no model is trained.

Three test images (crops of photographs scikit-image ships, 160x120 px) with an HR reference and
an LR (x4) each; three fake "runs" whose SR outputs are the HR plus a known, run-specific damage
(``fake_sharp``: faint noise, ``fake_soft``: a blur, ``fake_noisy``: strong noise). They are
registered through the same store API ``evaluate`` uses (bench.store.images.register_images) and
scored by the real engine (entropy NR, psnr FR under the HGGT protocol), so ``runs_eval``,
``compare`` and ``agree`` see them as evaluated models. PSNR: sharp is best on every image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

RUNS = ("fake_sharp", "fake_soft", "fake_noisy")
TEST_SET = "synthetic_tiny"
ITEMS = ("img_a", "img_b", "img_c")


PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png")
SIZE = (160, 120)


def _hr(k: int) -> np.ndarray:
    from bench.manifests.sample import bundled_photo

    photo = bundled_photo(PHOTOS[k])
    w, h = photo.size
    side = min(w, h * 4 // 3)
    box = ((w - side) // 2, (h - side * 3 // 4) // 2, (w - side) // 2 + side, (h - side * 3 // 4) // 2 + side * 3 // 4)
    return np.asarray(photo.crop(box).resize(SIZE, Image.Resampling.LANCZOS))


def _damage(hr: np.ndarray, run: str, rng) -> np.ndarray:
    if run == "fake_sharp":
        return np.clip(hr + rng.normal(0, 3, hr.shape), 0, 255).astype(np.uint8)
    if run == "fake_soft":
        return np.asarray(Image.fromarray(hr).filter(ImageFilter.GaussianBlur(1.2)))
    return np.clip(hr + rng.normal(0, 14, hr.shape), 0, 255).astype(np.uint8)


def build_store(base: Path, score: bool = True):
    """(Store, test set name) under ``base``."""
    from bench import provenance
    from bench.manifests.schema import file_hash
    from bench.store import Store
    from bench.store.images import register_images

    rng = np.random.default_rng(7)
    store = Store(base / "store")
    rows, refs = [], []
    for k, item in enumerate(ITEMS):
        hr_path = base / "test" / "hr" / f"{item}.png"
        lr_path = base / "test" / "lr" / f"{item}.png"
        hr_path.parent.mkdir(parents=True, exist_ok=True)
        lr_path.parent.mkdir(parents=True, exist_ok=True)
        hr = _hr(k)
        Image.fromarray(hr).save(hr_path)
        Image.fromarray(hr).resize((SIZE[0] // 4, SIZE[1] // 4), Image.Resampling.BICUBIC).save(lr_path)
        common = {"test_set": TEST_SET, "item": item, "group": item, "eval_run_id": "synthetic-fixture",
                  "created_at": provenance.now()}
        rows.append({**common, "image_id": file_hash(hr_path), "path": str(hr_path), "role": "gt", "label": "HR"})
        rows.append({**common, "image_id": file_hash(lr_path), "path": str(lr_path), "role": "lr"})
        for j, run in enumerate(RUNS):
            out = base / "sr" / run / f"{item}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_damage(hr, run, rng)).save(out)
            rows.append({**common, "image_id": file_hash(out), "path": str(out), "role": "sr_output",
                         "run_name": run, "run_dir": str(base / "train" / run), "arch": "fake", "sampling": "upos",
                         "iteration": 10, "checkpoint_sha256": f"{j + 1}" * 64, "weights": "ema"})
            refs.append((file_hash(out), out, file_hash(hr_path), hr_path))
    register_images(store, rows)
    if score:
        from bench.metrics.table import get
        from bench.scoring.engine import score_refs
        from bench.scoring.images import ImageRef

        run = provenance.new_run("evaluate", {"synthetic_fixture": True})
        jobs = [ImageRef(i, str(p), *SIZE) for i, p, _, _ in refs]
        jobs += [ImageRef(i, str(p), *SIZE, ref_id=r, ref_path=str(rp)) for i, p, r, rp in refs]
        score_refs(jobs, [get("entropy"), get("psnr")], store, run=run, workers=0, progress=False, fr_protocol="hggt")
    return store, TEST_SET
