"""A scripted rater (for the demo and tests): votes through the same code path as the server
(bench.userstudy.db.record_vote), marked ``scripted`` so analyses and exports label its votes SYNTHETIC.

Rule (deterministic, from the displayed pixels only): the image with the higher PSNR against the
trial's reference when the study shows one, else the sharper image (higher variance of a
4-neighbour Laplacian); ties go left. Both rules pick the undegraded side of an attention check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bench.userstudy import db
from bench.userstudy.design import load

RULE = ("prefers the image with the higher PSNR against the shown reference (without a reference: the sharper one, "
        "variance of the Laplacian)")


def _pixels(study_dir: Path, image_id: str) -> np.ndarray:
    with Image.open(study_dir / "images" / f"{image_id}.png") as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64)


def _score(img: np.ndarray, ref: np.ndarray | None) -> float:
    if ref is not None:
        mse = float(np.mean((img - ref) ** 2))
        return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
    g = img.mean(axis=2)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(lap.var())


def choose(study_dir: Path, trial: dict) -> str:
    ref = _pixels(study_dir, trial["reference"]) if trial.get("reference") else None
    left, right = (_score(_pixels(study_dir, trial[s]), ref) for s in ("left", "right"))
    return "left" if left >= right else "right"


def run(study_dir: str | Path, n_raters: int = 1, rt_ms: int = 1500) -> list[str]:
    """Invite ``n_raters`` scripted raters and let each answer every presentation; returns their ids."""
    study_dir = Path(study_dir)
    study = load(study_dir)
    raters = db.invite(study_dir, study, n_raters, scripted=True)
    con = db.connect(study_dir)
    try:
        for rater, _token in raters:
            while (t := db.state(con, rater, study["images"])["trial"]) is not None:
                db.record_vote(con, rater, t["id"], choose(study_dir, t), rt_ms, f"scripted-{rater}-{t['id']}")
    finally:
        con.close()
    return [r for r, _ in raters]
