"""A tiny SYNTHETIC store for the user-study tests: no model is trained.

Three test images (crops of photographs scikit-image ships, 160x120 px) with an HR reference and
an LR (x4) each; three fake "runs" whose SR outputs are the HR plus a known, run-specific damage
(``fake_sharp``: faint noise, ``fake_soft``: a blur, ``fake_noisy``: strong noise). They are
registered through the same store API ``evaluate`` uses (bench.store.images.register_images); their
scores are computed here with numpy (Shannon entropy of the grey levels as ``entropy``, NR; RGB
PSNR with a 4-pixel border crop against the HR as ``psnr``, FR) and written with
``Store.write_scores`` under the config hash ``synthetic-fixture`` (as tests/test_compare.py), so
``runs_eval``, ``compare`` and ``agree`` see them as evaluated models without importing torch.
PSNR: sharp is best on every image.
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


def _entropy(arr: np.ndarray) -> float:
    grey = np.round(arr.astype(float) @ [0.299, 0.587, 0.114]).astype(int)
    p = np.bincount(grey.ravel(), minlength=256) / grey.size
    return float(-(p[p > 0] * np.log2(p[p > 0])).sum())


def _psnr(a: np.ndarray, b: np.ndarray, border: int = 4) -> float:
    d = a[border:-border, border:-border].astype(float) - b[border:-border, border:-border]
    return float(10 * np.log10(255.0 ** 2 / np.mean(d ** 2)))


def _score_row(image_id: str, ref_id: str | None, metric: str, score: float) -> dict:
    import datetime as dt

    return {"image_id": image_id, "ref_id": ref_id, "metric": metric, "config_hash": "synthetic-fixture",
            "metric_config": "{}", "score": score, "status": "ok", "error": None, "lower_better": False,
            "random_init": False, "input_h": SIZE[1], "input_w": SIZE[0], "input_policy": "native", "batch_size": 1,
            "seconds": 0.0, "device": "cpu", "dtype": "float64", "pyiqa_version": "none (numpy, test fixture)",
            "torch_version": "none", "run_id": "synthetic-fixture", "written_at": dt.datetime.now(dt.UTC)}


def build_store(base: Path, score: bool = True):
    """(Store, test set name) under ``base``."""
    from bench import provenance
    from bench.manifests.schema import file_hash
    from bench.store import Store
    from bench.store.images import register_images

    rng = np.random.default_rng(7)
    store = Store(base / "store")
    rows, scores = [], []
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
        hr_id = file_hash(hr_path)
        rows.append({**common, "image_id": hr_id, "path": str(hr_path), "role": "gt", "label": "HR"})
        scores.append(_score_row(hr_id, None, "entropy", _entropy(hr)))
        rows.append({**common, "image_id": file_hash(lr_path), "path": str(lr_path), "role": "lr"})
        for j, run in enumerate(RUNS):
            out = base / "sr" / run / f"{item}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            sr = _damage(hr, run, rng)
            Image.fromarray(sr).save(out)
            sr_id = file_hash(out)
            scores += [_score_row(sr_id, None, "entropy", _entropy(sr)), _score_row(sr_id, hr_id, "psnr", _psnr(sr, hr))]
            rows.append({**common, "image_id": sr_id, "path": str(out), "role": "sr_output",
                         "run_name": run, "run_dir": str(base / "train" / run), "arch": "fake", "sampling": "upos",
                         "iteration": 10, "checkpoint_sha256": f"{j + 1}" * 64, "weights": "ema"})
    register_images(store, rows)
    if score:
        import platform

        now = provenance.now().isoformat(timespec="seconds")  # the run record evaluate writes, without torch
        store.write_run({"run_id": "synthetic-fixture", "kind": "evaluate", "started_at": now, "finished_at": now,
                         "argv": "tests/userstudy_fixture.py", "config": {"synthetic": True, "test_set": TEST_SET},
                         "seed": 7, "device": "cpu", "device_name": "cpu", "host": "test", "git_commit": "test",
                         "versions": {"python": platform.python_version()}})
        store.write_scores(scores, "synthetic-fixture", 0, 0)
    return store, TEST_SET
