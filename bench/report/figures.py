"""Plot helpers: print-readable figures, each saved with the CSV of its data."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def save(fig, data: pd.DataFrame, out_dir: Path, name: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{name}.png"
    fig.savefig(png, dpi=150, bbox_inches="tight")
    plt.close(fig)
    data.to_csv(out_dir / f"{name}.csv", index=False)
    return png


def accuracy_bars(df: pd.DataFrame, value: str, lo: str, hi: str, title: str, highlight: set[str] | None = None):
    """Horizontal bars with CI whiskers, best on top; ``highlight`` names are drawn in a second colour."""
    d = df.sort_values(value, ascending=True)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(d) + 1.4))
    colors = ["#d95f02" if highlight and m in highlight else "#1b9e77" for m in d["metric"]]
    ax.barh(d["metric"], d[value], color=colors,
            xerr=[d[value] - d[lo], d[hi] - d[value]], capsize=3, ecolor="#333333")
    ax.axvline(0.5, color="grey", lw=1, ls="--", label="chance (0.5)")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"{value} (95% CI)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    return fig
