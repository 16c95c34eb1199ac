"""Loss and validation curves of one training run (train_log.csv, val_log.csv) as one PNG beside them."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from bench.atomic import atomic_write

LOSSES = ("l1", "perceptual", "gan_g", "q", "total_g", "d_real", "d_fake")


def training_curves(run_dir: Path, name: str = "curves.png") -> Path | None:
    """``run_dir/curves.png``: every logged loss over iterations (left) and every validation metric (right,
    one panel each); None when the run logged nothing yet. Labels are plain text (no mathtext)."""
    run_dir = Path(run_dir)
    train = run_dir / "train_log.csv"
    if not train.is_file() or train.stat().st_size == 0:
        return None
    t = pd.read_csv(train)
    val = pd.read_csv(run_dir / "val_log.csv") if (run_dir / "val_log.csv").is_file() else pd.DataFrame()
    vcols = [c for c in val.columns if c != "iter"]
    fig, axes = plt.subplots(1, 1 + len(vcols), figsize=(4.2 * (1 + len(vcols)), 3.2), squeeze=False)
    ax = axes[0][0]
    for col in (c for c in LOSSES if c in t.columns):
        ax.plot(t["iter"], t[col], marker=".", label=col)
    ax.set_xlabel("iteration")
    ax.set_title(f"{run_dir.name}: losses", fontsize=9, parse_math=False)
    ax.legend(fontsize=7)
    for ax, col in zip(axes[0][1:], vcols):
        ax.plot(val["iter"], val[col], marker="o")
        ax.set_xlabel("iteration")
        ax.set_title(f"validation {col}", fontsize=9, parse_math=False)
    fig.tight_layout()
    target = run_dir / name
    atomic_write(target, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return target
