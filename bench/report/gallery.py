"""Pairs shown so a reader can judge them: both images whole with the zoom box drawn, the same
zoomed region of both (``bench.report.zoom``), the human choice and votes, and each metric's
choice with both scores. Used by the report's failure gallery and the failure notebook.

Labels are the same for every dataset: sides are "A" and "B"; the human line reads
"human: A (votes 10-5)" or, for label-based datasets (HGGT), "human: A (label)"; a metric line
reads "niqe: B  WRONG  (A 4.213, B 3.980; lower is better)".
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from bench.report.figures import FULL_WIDTH, style
from bench.report.zoom import load_checked, pair_crops


def human_line(pref: str, votes_a, votes_b) -> str:
    side = {"a": "A", "b": "B"}.get(pref, "tie")
    if pd.notna(votes_a) and pd.notna(votes_b):
        return f"human: {side} (votes {int(votes_a)}-{int(votes_b)})"
    return f"human: {side} (label)"


def metric_lines(verdicts: pd.DataFrame) -> list[str]:
    """One line per metric from rows with metric, metric_pref, pref, score_a, score_b, sign."""
    out = []
    for r in verdicts.itertuples():
        side = {"a": "A", "b": "B"}.get(r.metric_pref, "tie")
        mark = "right" if r.metric_pref == r.pref else "WRONG"
        better = "lower" if r.sign < 0 else "higher"
        out.append(f"{r.metric}: {side} {mark} (A {r.score_a:.4g}, B {r.score_b:.4g}; {better} is better)")
    return out


def draw_pair(axes, a: np.ndarray, b: np.ndarray, title: str, crop: int | None = None,
              center: tuple[int, int] | None = None, human: str | None = None) -> tuple:
    """Four axes: A whole, B whole (zoom box drawn), A zoomed, B zoomed (same region)."""
    box_a, box_b, ca, cb = pair_crops(a, b, crop, center)
    for ax, img, box, label in ((axes[0], a, box_a, "A"), (axes[1], b, box_b, "B")):
        ax.imshow(img)
        ax.add_patch(Rectangle((box.left, box.top), box.width, box.height, fill=False, ec="#ffd92f", lw=1.2))
        ax.set_title(f"{label} ({img.shape[1]}x{img.shape[0]})", fontsize=7, pad=2)
    for ax, img, label in ((axes[2], ca, "A"), (axes[3], cb, "B")):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(f"{label}, zoomed ({img.shape[1]}x{img.shape[0]} px)", fontsize=7, pad=2)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].text(0, -0.04, title, transform=axes[0].transAxes, fontsize=7, fontweight="bold", va="top")
    return box_a, box_b


def pair_label(r) -> str:
    """'dataset / pair_id: A = file (method) vs B = file (method)': what a reader needs to find the pair."""
    def side(name, method) -> str:
        m = "" if pd.isna(method) else f" ({method})"
        return f"{Path(str(name)).name}{m}"

    return (f"{r.dataset} / {r.pair_id}: A = {side(r.image_a, getattr(r, 'method_a', None))} vs "
            f"B = {side(r.image_b, getattr(r, 'method_b', None))}")


def pair_figure(rows: pd.DataFrame, verdicts: pd.DataFrame, title: str, crop: int | None = None,
                center: tuple[int, int] | None = None):
    """One row of four panels per pair in ``rows`` (dataset, pair_id, root, image_a, image_b, pref,
    votes_a, votes_b, and image_a_id / image_b_id: each file is checked against the content hash its
    scores are stored under, and a pair whose file changed on disk is marked, its pixels not shown,
    the reason in the returned frame's ``problem`` column); ``verdicts``: per-metric rows (dataset, pair_id, metric, metric_pref, pref,
    score_a, score_b, sign). Returns (figure, data frame of what is shown)."""
    style()
    n = len(rows)
    n_lines = max(1, verdicts["metric"].nunique()) + 2
    fig, axes = plt.subplots(n, 4, figsize=(FULL_WIDTH, (1.8 + 0.13 * n_lines) * n + 0.2), squeeze=False,
                             gridspec_kw={"hspace": 0.3 + 0.1 * n_lines, "wspace": 0.05})
    shown = []
    for i, r in enumerate(rows.itertuples()):
        # every image is checked against the id its scores are stored under (as scoring does)
        a, why_a = load_checked(Path(r.root) / r.image_a, getattr(r, "image_a_id", None))
        b, why_b = load_checked(Path(r.root) / r.image_b, getattr(r, "image_b_id", None))
        human, label = human_line(r.pref, r.votes_a, r.votes_b), pair_label(r)
        v = verdicts[(verdicts["dataset"] == r.dataset) & (verdicts["pair_id"] == r.pair_id)].sort_values("metric")
        lines = metric_lines(v)
        problem = "; ".join(f"{side} not shown: {why}" for side, why in (("A", why_a), ("B", why_b)) if why)
        if problem:
            for ax in axes[i]:
                ax.set_xticks([])
                ax.set_yticks([])
            axes[i][0].text(0, 0.5, f"{label}: NOT THE SCORED IMAGES\n{problem}"[:400],
                            transform=axes[i][0].transAxes, fontsize=6, color="#b2182b", va="center", wrap=True)
            box_a = None
        else:
            box_a, _ = draw_pair(axes[i], a, b, label, crop, center, human)
        axes[i][0].text(0, -0.15, "\n".join([human] + lines), transform=axes[i][0].transAxes, fontsize=6, va="top",
                        family="monospace")
        shown.append({"dataset": r.dataset, "pair_id": r.pair_id, "label": label, "image_a": r.image_a,
                      "image_b": r.image_b,
                      "human": human, "metrics": " | ".join(lines), "zoom_top": box_a.top if box_a else None,
                      "zoom_left": box_a.left if box_a else None, "zoom_size": box_a.height if box_a else None,
                      "problem": problem or None})
    axes[0][0].text(0, 1.45, title, transform=axes[0][0].transAxes, fontsize=9, va="bottom")
    return fig, pd.DataFrame(shown)
