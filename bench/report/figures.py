"""Plot helpers for print: every figure is saved as PNG (screen, e-mail) and PDF (vector, TrueType
fonts, for a paper), each with the CSV of the data it shows.

Sizes follow a two-column paper: full width 7.0 in, 8-pt text. Labels come from data (dataset,
metric, run names), so text is never parsed as mathtext (``PLAIN_TEXT``: a ``$`` or ``\\`` is shown
as it is). Every file goes through bench.atomic (``save_figure``, ``save_csv``): a kill mid-save
leaves the previous file or none, never a truncated PDF.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # headless for the CLI; a notebook keeps its inline backend
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bench.atomic import atomic_write

FULL_WIDTH = 7.0  # inches, a two-column paper's text width
VECTOR = "pdf"
STYLE = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
         "legend.fontsize": 7, "pdf.fonttype": 42, "ps.fonttype": 42, "axes.spines.top": False,
         "axes.spines.right": False}
PLAIN_TEXT = {"text.parse_math": False}  # read when a Text is made, tick labels included (at draw time)
STYLE.update(PLAIN_TEXT)
COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]


def style() -> None:
    plt.rcParams.update(STYLE)


def plain_text(fn):
    """Run a plotting function (figure creation *and* saving) with ``PLAIN_TEXT`` in force, for plots
    that do not use ``style()``."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with plt.rc_context(PLAIN_TEXT):
            return fn(*args, **kwargs)
    return wrapper


def save_figure(fig, path: Path, **kwargs) -> Path:
    """``fig.savefig`` through bench.atomic (the format from ``path``'s suffix)."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=Path(path).suffix[1:], **kwargs))


def save_csv(data: pd.DataFrame, path: Path) -> Path:
    return atomic_write(path, lambda tmp: data.to_csv(tmp, index=False))


def save(fig, data: pd.DataFrame, out_dir: Path, name: str) -> Path:
    """``name``.png (200 dpi), ``name``.pdf (vector) and ``name``.csv (the plotted data), each atomic."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{name}.png"
    try:
        save_figure(fig, png, dpi=200, bbox_inches="tight")
        save_figure(fig, out_dir / f"{name}.{VECTOR}", bbox_inches="tight")
    finally:
        plt.close(fig)
    save_csv(data, out_dir / f"{name}.csv")
    return png


def accuracy_bars(df: pd.DataFrame, value: str, lo: str, hi: str, title: str, highlight: set[str] | None = None,
                  xlabel: str | None = None, ceiling: tuple[float, float, float] | None = None,
                  notes: dict[str, str] | None = None):
    """Horizontal bars with CI whiskers, best on top; ``highlight`` names in a second colour;
    ``ceiling`` = (value, lo, hi) of the human split-half agreement, drawn as a band;
    ``notes`` = text printed right of a metric's bar (e.g. a McNemar p)."""
    style()
    d = df.sort_values(value, ascending=True)
    fig, ax = plt.subplots(figsize=(FULL_WIDTH / 2 + 0.5, 0.28 * len(d) + 1.1))
    colors = [COLORS[1] if highlight and m in highlight else COLORS[0] for m in d["metric"]]
    ax.barh(d["metric"], d[value], color=colors, xerr=[d[value] - d[lo], d[hi] - d[value]], capsize=2,
            ecolor="#333333", error_kw={"lw": 0.8})
    ax.axvline(0.5, color="grey", lw=0.8, ls="--", label="chance (0.5)")
    if ceiling is not None and np.isfinite(ceiling[0]):
        ax.axvspan(ceiling[1], ceiling[2], color="#377eb8", alpha=0.15, lw=0)
        ax.axvline(ceiling[0], color="#377eb8", lw=1, label="human split-half agreement")
    for i, m in enumerate(d["metric"]):
        if notes and m in notes:
            ax.text(1.01, i, notes[m], va="center", fontsize=6, transform=ax.get_yaxis_transform())
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel or f"{value} (95% CI)")
    ax.set_title(title)
    fig.tight_layout()  # the x label inside the figure, so the legend below it overlaps neither label nor bars
    fig.legend(*ax.get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=2,
               frameon=False)
    return fig


def grouped_points(df: pd.DataFrame, x: str, title: str, xlabel: str, order: list[str] | None = None,
                   metrics: list[str] | None = None):
    """Accuracy (``acc``, ``ci_lo``, ``ci_hi``) per ``x`` category, one dodged series per metric
    (in the order ``metrics``, e.g. the Phase II ranking; default: by name)."""
    style()
    cats = order or list(dict.fromkeys(df[x]))
    metrics = [m for m in (metrics or sorted(df["metric"].unique())) if m in set(df["metric"])]
    fig, ax = plt.subplots(figsize=(FULL_WIDTH / 2 + 0.5, 2.4))
    width = 0.7 / max(len(metrics), 1)
    for k, m in enumerate(metrics):
        d = df[df["metric"] == m].set_index(x).reindex(cats)
        pos = np.arange(len(cats)) - 0.35 + width * (k + 0.5)
        ax.errorbar(pos, d["acc"], yerr=[d["acc"] - d["ci_lo"], d["ci_hi"] - d["acc"]], fmt="o", ms=3, capsize=2,
                    lw=0.8, color=COLORS[k % len(COLORS)], label=m)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(cats)), cats)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("strict accuracy (95% CI)")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(frameon=False, ncols=min(len(metrics), 4), loc="lower center", bbox_to_anchor=(0.5, 1.08))
    return fig


def chance_oracle(first: float, steps) -> np.ndarray:
    """Oracle accuracy when every metric after the first is an independent fair coin: each one gets half of
    the pairs still wrong right, so k coins after the first give 1 - (1 - first)·0.5^k."""
    k = np.asarray(steps, dtype=float) - np.asarray(steps, dtype=float)[0]
    return 1.0 - (1.0 - first) * 0.5**k


def greedy_curve(greedy: pd.DataFrame, single: float | None, title: str):
    """Oracle accuracy (share of pairs at least one chosen metric gets right) as metrics are added."""
    style()
    fig, ax = plt.subplots(figsize=(FULL_WIDTH / 2 + 0.5, 2.3))
    steps = greedy["step"].to_numpy()
    ax.plot(steps, greedy["oracle_acc"], "o-", color=COLORS[2], ms=3, lw=1, label="oracle of the chosen set")
    ax.plot(steps, chance_oracle(float(greedy["oracle_acc"].iloc[0]), steps), "--", color="grey", lw=0.8,
            label="chance: each added metric a coin")
    if single is not None:
        ax.axhline(single, color=COLORS[0], lw=0.8, ls=":", label=f"best alone ({greedy['metric'].iloc[0]})")
    labels = [greedy["metric"].iloc[0]] + [f"+ {m}" for m in greedy["metric"].iloc[1:]]
    ax.set_xticks(steps, labels, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("oracle accuracy")
    ax.set_title(title)
    ax.legend(frameon=False, loc="lower right")
    return fig


def heatmap(mat: pd.DataFrame, title: str, label: str, vmin: float = 0.0, vmax: float | None = None,
            cmap: str = "rocket_r"):
    import seaborn as sns

    style()
    n = len(mat)
    fig, ax = plt.subplots(figsize=(min(FULL_WIDTH, 1.2 + 0.45 * n), min(FULL_WIDTH, 0.9 + 0.4 * n)))
    sns.heatmap(mat, annot=n <= 12, fmt=".2f", cmap=cmap, vmin=vmin, vmax=vmax, ax=ax, square=True,
                annot_kws={"fontsize": 6}, cbar_kws={"label": label})
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title(title)
    return fig
