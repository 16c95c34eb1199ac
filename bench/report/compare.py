"""`iqa-study compare`: the paper's main table, perception-distortion plots and a crop grid, from the store.

Definitions (every number is recomputed from the views of bench.store.eval_views):

* A *run* is one evaluated model: (checkpoint_sha256, weights). Its label is the training run name;
  models sharing a name get ``(arch / sampling / metric)``, then ``@iteration`` as needed (``run_labels``).
* Per test set and metric: an NR value is the mean over test images of the SR output's score; an
  FR value is the mean over test images of the per-image average against every reference
  (``eval_fr_multigt``, HGGT protocol; images whose references are not all scored are left out and
  counted in the notes). "Gold standard" = mean over images of the NR scores of the references.
* Delta = mean over the images both runs have of (run - baseline) per image; 95% CI = percentiles
  2.5 / 97.5 of ``n_boot`` paired bootstrap resamples of those per-image differences (images
  resampled with replacement, numpy default_rng(seed 0)).
* Baseline: ``--baseline`` (a label or a unique run name), else the first (label order) run with
  sampling 'upos' and no FT variant, else the first run; the table states which.
* Ambiguity is refused, never resolved by picking a row: a run with two SR outputs for one image
  (e.g. tiled and untiled), or a metric scored under two configurations for a test set's SR outputs.
* P-D plots: PSNR and LPIPS-ST (y) against each NR metric (x), one point per run; a line joins one
  chain only: a base run, then the FT runs started from its checkpoint (``base_sha256``) by FT variant
  (a lambda sweep is a set of FT variants); reference rows (bicubic, a PSNR init) are grey points. Crop grid: the window (1/3 of the image side, clamped to [96, 128] px (NIQE needs
  96) and to the image) where the
  first reference has the most gradient energy, from the LR (bicubic), each run and that reference,
  with PSNR / LPIPS-ST (pyiqa, on the crop, against the reference crop) and the first NR metrics
  computed on the crop.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from bench.atomic import atomic_write_text
from bench.errors import StudyError
from bench.report import html_page
from bench.report.figures import plain_text, save_csv, save_figure
from bench.report.zoom import load_checked
from bench.store import Store
from bench.store.views import connect

FR_ORDER = ("psnr", "ssim", "stlpips", "lpips", "dists")
DISPLAY = {"psnr": "PSNR", "ssim": "SSIM", "stlpips": "LPIPS-ST", "lpips": "LPIPS", "dists": "DISTS", "musiq": "MUSIQ",
           "nima": "NIMA", "qalign": "Q-Align", "topiq_nr": "TOPIQ", "niqe": "NIQE", "piqe": "PIQE", "entropy": "Entropy"}
SAMPLING_ORDER = ("original", "uniform_all", "upos", "sma", "smp", "amo")
GOLD = "Gold standard"
MIN_CI_IMAGES = 10  # below this many paired images a bootstrap CI is reported with a warning


def _name(metric: str) -> str:
    return DISPLAY.get(metric, metric)


def bootstrap_ci(diffs: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile CI of the mean of paired per-image differences (sorted first, so a seed gives
    the same interval whatever the order of the rows)."""
    diffs = np.sort(np.asarray(diffs, dtype=float))
    if len(diffs) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(n_boot, len(diffs)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


# --- data ---------------------------------------------------------------------------------------------------------------


def load_per_image(store: Store, test_set: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple]]:
    """(per-image scores of every run and of the Gold standard, run table, notes as (test set or None, text))."""
    con = connect(store)
    where, args = ("WHERE test_set = ?", [test_set]) if test_set else ("", [])
    df = con.execute(f"SELECT * FROM runs_eval {where}", args).df()
    if df.empty:
        raise StudyError(f"{store.root}: no evaluated SR outputs{' for test set ' + repr(test_set) if test_set else ''} "
                         f"(run `iqa-study evaluate` first)")
    notes = []
    dup = (df.drop_duplicates(["checkpoint_sha256", "weights", "test_set", "item", "image_id"])
           .groupby(["checkpoint_sha256", "weights", "test_set", "item"]).size())
    if (dup > 1).any():
        (sha, weights, ts, item) = dup[dup > 1].index[0]
        name = df.loc[df["checkpoint_sha256"] == sha, "run_name"].iloc[0]
        raise StudyError(f"run {name} ({weights}, checkpoint {sha[:12]}) has {int(dup.max())} different SR outputs for "
                         f"'{item}' of test set {ts} (evaluated with different --tile?); keep one store per setting")
    bad = df[df["status"] != "ok"]
    if len(bad):
        for (ts, metric, status), g in bad.groupby(["test_set", "metric", "status"]):
            first = f": {g['error'].dropna().iloc[0]}" if g["error"].notna().any() else ""
            notes.append((ts, f"{len(g)} {_name(metric)} image score(s) left out ({status}{first})"))
    df = df[df["status"] == "ok"]
    configs = df.groupby(["test_set", "metric"])["config_hash"].nunique()
    if (configs > 1).any():
        ts, metric = configs[configs > 1].index[0]
        hashes = sorted(df[(df.test_set == ts) & (df.metric == metric)]["config_hash"].unique())
        raise StudyError(f"test set {ts}: metric {metric} was scored under {len(hashes)} configurations "
                         f"({', '.join(hashes)}); compare needs one (score again with one setting, or one store each)")
    for col in ("train_metric", "base_sha256"):  # stores evaluated before these were recorded
        if col not in df:
            df[col] = None
    runs = (df.drop_duplicates(["checkpoint_sha256", "weights"])
            [["checkpoint_sha256", "weights", "run_name", "iteration", "arch", "sampling", "ft_variant", "run_dir",
              "train_metric", "base_sha256"]]
            .reset_index(drop=True))
    runs["label"] = run_labels(runs)
    df = df.merge(runs[["checkpoint_sha256", "weights", "label"]], on=["checkpoint_sha256", "weights"])
    per = df[["label", "test_set", "item", "metric", "config_hash", "lower_better", "kind", "score"]]
    used = per[["test_set", "metric", "config_hash"]].drop_duplicates()
    gold = con.execute(f"SELECT * FROM eval_gold {where}", args).df().merge(used, on=["test_set", "metric", "config_hash"])
    gold = gold.assign(label=GOLD, kind="NR")[per.columns]
    random = con.execute("SELECT DISTINCT metric FROM eval_scores WHERE random_init").fetchall()
    if random:
        notes.append((None, f"random-init (NOT quality) scores present for: {', '.join(r[0] for r in random)}"))
    return pd.concat([per, gold], ignore_index=True), runs, notes


def _text(v) -> str | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) or pd.isna(v) else str(v)


def run_labels(runs: pd.DataFrame) -> list[str]:
    """A label per row of ``runs`` (one evaluated model each): the run name when it is unique; a name
    several models share gets what tells them apart, in this order: ``(arch / sampling / metric)`` (the
    IQA metric it was trained with), ``@iteration``, the weights; the checkpoint hash only as the last
    resort, for models that agree on all of these."""
    names = [str(r.run_name) for r in runs.itertuples()]
    shared = pd.Series(names).duplicated(keep=False).tolist()

    def describe(r) -> str:
        parts = [_text(r.arch), _text(r.sampling) or ("FT" if _text(r.ft_variant) else None),
                 _text(getattr(r, "train_metric", None))]
        return " / ".join(p for p in parts if p) or "-"

    labels = [f"{n} ({describe(r)})" if dup else n for n, dup, r in zip(names, shared, runs.itertuples())]
    for extra in (lambda r: f"@{int(r.iteration)}" if _text(r.iteration) else "", lambda r: f" {r.weights}",
                  lambda r: f" #{str(r.checkpoint_sha256)[:8]}"):
        dup = pd.Series(labels).duplicated(keep=False).tolist()
        if not any(dup):
            break
        labels = [lab + extra(r) if d else lab for lab, d, r in zip(labels, dup, runs.itertuples())]
    return labels


def is_reference(r) -> bool:
    """Bicubic, or a model with no sampling strategy and no FT (e.g. a PSNR init): a reference row."""
    return r.arch == "bicubic" or (pd.isna(r.sampling) and pd.isna(r.ft_variant))


def pd_chains(t: pd.DataFrame) -> tuple[list[list], list]:
    """(chains, references) over the run rows of a compare table: a chain is a base run followed by the FT
    runs whose base checkpoint (``base_sha256``) is that run's (sorted by FT variant); an FT run whose base
    was not evaluated is a chain of its own. References (``is_reference``) are points joined to nothing."""
    rows = [r for r in t.itertuples() if r.run != GOLD]
    refs = [r for r in rows if is_reference(r)]
    rest = [r for r in rows if not is_reference(r)]
    by_sha = {(r.checkpoint_sha256): r for r in rest if pd.isna(r.ft_variant)}
    chains: dict[str, list] = {r.run: [r] for r in rest if pd.isna(r.ft_variant)}
    for r in sorted((r for r in rest if pd.notna(r.ft_variant)), key=lambda r: (str(r.ft_variant), r.run)):
        base = by_sha.get(getattr(r, "base_sha256", None))
        if base is not None:
            chains[base.run].append(r)
        else:
            chains[r.run] = [r]
    return list(chains.values()), refs


def _order(runs: pd.DataFrame) -> list[str]:
    """References first (bicubic, then models without a sampling strategy, e.g. a PSNR init), then by arch,
    sampling strategy, FT variant and label."""
    def rank(r) -> int:
        return 0 if r.arch == "bicubic" else 1 if is_reference(r) else 2

    key = lambda r: (rank(r), str(r.arch), SAMPLING_ORDER.index(r.sampling) if r.sampling in SAMPLING_ORDER else 99,
                     pd.notna(r.ft_variant), str(r.ft_variant), str(r.label))
    return [r.label for r in sorted(runs.itertuples(), key=key)]


def pick_baseline(runs: pd.DataFrame, baseline: str | None) -> tuple[str | None, str]:
    """(label, why): ``--baseline``, else the first UPos run without FT (the default rule); with no
    such run there is no baseline (None) and no Δ columns: another run (an FT or AMO one) is not a
    stand-in the reader could take for the paper's reference."""
    if baseline:
        hit = runs[(runs["label"] == baseline) | (runs["run_name"] == baseline)]
        if len(hit) == 1:
            return hit["label"].iloc[0], "--baseline"
        what = "matches several runs" if len(hit) else "matches no evaluated run"
        raise StudyError(f"--baseline {baseline!r} {what}; evaluated runs: {', '.join(sorted(runs['label']))}")
    upos = runs[(runs["sampling"] == "upos") & runs["ft_variant"].isna()].sort_values("label")
    if len(upos):
        return upos["label"].iloc[0], "first UPos run without FT (default rule)"
    return None, "no UPos run without FT, the default rule's baseline; choose one with --baseline RUN"


def metric_order(metrics) -> list[str]:
    fr = [m for m in FR_ORDER if m in set(metrics)]
    return fr + sorted(m for m in set(metrics) if m not in fr)


def compare_table(per: pd.DataFrame, runs: pd.DataFrame, test_set: str, baseline: str | None, n_boot: int = 2000) -> pd.DataFrame:
    """One row per run (+ Gold standard): n_images, mean per metric, delta vs baseline with CI."""
    d = per[per["test_set"] == test_set]
    metrics = metric_order(d["metric"].unique())
    wide = d.pivot_table(index=["label", "item"], columns="metric", values="score", aggfunc="first")
    labels = [lab for lab in _order(runs) if lab in wide.index.get_level_values(0)]
    if GOLD in wide.index.get_level_values(0):
        labels.append(GOLD)
    base = wide.loc[baseline] if baseline in wide.index.get_level_values(0) else None
    rows = []
    for lab in labels:
        w = wide.loc[lab]
        row = {"run": lab, "n_images": len(w)}
        for m in metrics:
            col = w[m].dropna() if m in w else pd.Series(dtype=float)
            row[m] = float(col.mean()) if len(col) else np.nan
        for m in metrics:
            if base is None or m not in w or m not in base or lab == baseline:
                row[f"d_{m}"] = row[f"d_{m}_lo"] = row[f"d_{m}_hi"] = np.nan
                continue
            pair = pd.concat([w[m], base[m]], axis=1, keys=["run", "base"]).dropna()
            diffs = (pair["run"] - pair["base"]).to_numpy()
            row[f"d_{m}"] = float(diffs.mean()) if len(diffs) else np.nan
            row[f"d_{m}_lo"], row[f"d_{m}_hi"] = bootstrap_ci(diffs, n_boot) if len(diffs) else (np.nan, np.nan)
            row[f"n_{m}_paired"] = len(diffs)
        rows.append(row)
    out = pd.DataFrame(rows)
    meta = runs.set_index("label")
    for col in ("arch", "sampling", "ft_variant", "iteration", "checkpoint_sha256", "weights", "train_metric",
                "base_sha256"):
        out[col] = [meta[col].get(lab) if lab in meta.index else None for lab in out["run"]]
    out.attrs["metrics"] = metrics
    out.attrs["baseline"] = baseline
    out.attrs["lower_better"] = d.groupby("metric")["lower_better"].first().to_dict()
    return out


def small_n_warning(t: pd.DataFrame, test_set: str) -> str | None:
    """One line when a Δ CI of ``t`` rests on fewer than MIN_CI_IMAGES paired images (else None)."""
    cols = [c for c in t.columns if c.startswith("n_") and c.endswith("_paired")]
    counts = t[cols].stack().dropna() if cols else pd.Series(dtype=float)
    counts = counts[counts > 0]  # no pairs: no CI at all ("–"), nothing to warn about
    if counts.empty or counts.min() >= MIN_CI_IMAGES:
        return None
    return (f"warning: test set {test_set}: the bootstrap CIs rest on {int(counts.min())} paired image(s) "
            f"(fewer than {MIN_CI_IMAGES}); they are rough at best, read them as indications only")


def _digits(metric: str) -> int:
    return 2 if metric in ("psnr", "musiq", "piqe", "brisque", "nima", "qalign") else 3


def _fmt(v, metric: str) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    return f"{v:.{_digits(metric)}f}"


def _markdown(df: pd.DataFrame) -> str:
    cells = [list(map(str, df.columns))] + [[str(v) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("---" for _ in df.columns) + "|")
    return "\n".join(lines)


def display_table(t: pd.DataFrame) -> pd.DataFrame:
    """Human-readable: 'mean' and 'delta [lo, hi]' per metric, arrows for the better direction."""
    metrics, lb = t.attrs["metrics"], t.attrs["lower_better"]
    rows = []
    for r in t.to_dict("records"):
        row = {"run": r["run"], "n": r["n_images"]}
        for m in metrics:
            row[f"{_name(m)} {'↓' if lb.get(m) else '↑'}"] = _fmt(r[m], m)
        for m in metrics if t.attrs.get("baseline", True) is not None else ():  # no baseline: no Δ columns
            if not np.isnan(r.get(f"d_{m}", np.nan)):
                dg = _digits(m)
                row[f"Δ{_name(m)} [95% CI]"] = f"{r[f'd_{m}']:+.{dg}f} [{r[f'd_{m}_lo']:+.{dg}f}, {r[f'd_{m}_hi']:+.{dg}f}]"
            else:
                row[f"Δ{_name(m)} [95% CI]"] = "–"
        rows.append(row)
    return pd.DataFrame(rows)


# --- figures ------------------------------------------------------------------------------------------------------------


@plain_text
def pd_plot(t: pd.DataFrame, test_set: str, out_dir: Path, note: str = "") -> list[Path]:
    """PSNR and LPIPS-ST (rows) against each NR metric (columns); PNG + SVG + CSV. [] if no FR/NR pair."""
    metrics, lb = t.attrs["metrics"], t.attrs["lower_better"]
    ys = [m for m in ("psnr", "stlpips") if m in metrics]
    xs = [m for m in metrics if m not in FR_ORDER]
    if not ys or not xs:
        return []
    gold = t[t["run"] == GOLD]
    fig, axes = plt.subplots(len(ys), len(xs), figsize=(4.2 * len(xs), 3.6 * len(ys)), squeeze=False)
    colors = plt.get_cmap("tab10")
    chains, refs = pd_chains(t)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            ax = axes[i][j]
            for k, rs in enumerate(chains):  # a base run and its FT runs: one line
                xv, yv = [getattr(r, x) for r in rs], [getattr(r, y) for r in rs]
                ax.plot(xv, yv, "-o" if len(rs) > 1 else "o", color=colors(k % 10), ms=6, lw=1.2,
                        label=rs[0].run + (f" + {len(rs) - 1} FT" if len(rs) > 1 else ""))
                for r, a, b in zip(rs, xv, yv):
                    ax.annotate(r.run, (a, b), textcoords="offset points", xytext=(4, 4), fontsize=7)
            for r in refs:  # reference rows: separate points, joined to nothing
                ax.plot([getattr(r, x)], [getattr(r, y)], "s", color="grey", ms=5)
                ax.annotate(r.run, (getattr(r, x), getattr(r, y)), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color="grey")
            if len(gold) and not np.isnan(gold[x].iloc[0]):
                ax.axvline(gold[x].iloc[0], color="goldenrod", ls="--", lw=1, label=GOLD)
            ax.set_xlabel(f"{_name(x)} {'↓' if lb.get(x) else '↑'} (NR, SR output)")
            ax.set_ylabel(f"{_name(y)} {'↓' if lb.get(y) else '↑'} (vs references)")
            ax.ticklabel_format(useOffset=False)  # tiny differences: print the values, not an offset
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"Perception-distortion, test set {test_set}" + (f"\n{note}" if note else ""), fontsize=9)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"pd_{test_set}.png", out_dir / f"pd_{test_set}.svg"
    try:
        save_figure(fig, png, dpi=130)
        save_figure(fig, svg)
    finally:
        plt.close(fig)
    chain_of = {r.run: rs[0].run for rs in chains for r in rs}
    save_csv(t[["run", "arch", "sampling", "ft_variant", *ys, *xs]].assign(chain=[chain_of.get(r) for r in t["run"]]),
             out_dir / f"pd_{test_set}.csv")
    return [png, svg]


def _crop_box(ref: np.ndarray, scale_hint: int = 4) -> tuple[int, int, int]:
    """(top, left, size): the window with the most gradient energy in the reference (module docstring)."""
    h, w = ref.shape[:2]
    side = min(h, w)
    size = max(scale_hint, min(side, max(96, min(128, side // 3))) // scale_hint * scale_hint)
    gray = ref.astype(np.float64).mean(axis=2)
    energy = np.zeros_like(gray)
    energy[:, 1:] += np.abs(np.diff(gray, axis=1))
    energy[1:, :] += np.abs(np.diff(gray, axis=0))
    integral = np.pad(energy, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    step = max(scale_hint, size // 4 // scale_hint * scale_hint)
    best = (-1.0, 0, 0)
    for top in range(0, h - size + 1, step):
        for left in range(0, w - size + 1, step):
            e = (integral[top + size, left + size] - integral[top, left + size] - integral[top + size, left]
                 + integral[top, left])
            if e > best[0]:
                best = (e, top, left)
    return best[1], best[2], size


def _crop_scores(crops: dict[str, np.ndarray], ref: np.ndarray, nr: list[str]) -> tuple[dict[str, str], list[str]]:
    """Per panel a text line with pyiqa scores of the crop, FR metrics under the evaluation's FR protocol
    (bench.scoring.protocol.configured 'hggt', as the table's numbers); notes for metrics that failed on a crop."""
    import torch

    from bench.metrics.table import get
    from bench.metrics.weights import is_available
    from bench.scoring.protocol import configured

    def tensor(a):
        return torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)[None]

    wanted = [m for m in ("psnr", "stlpips") if is_available(get(m))] + nr[:2]
    created, notes = {}, []
    for m in wanted:
        cm = configured(m, "hggt")
        try:
            created[m] = (cm, cm.create("cpu"))
        except (StudyError, ImportError, OSError) as exc:
            notes.append(f"crop {_name(m)} not shown: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    text = {}
    ref_t = tensor(ref)
    for label, crop in crops.items():
        parts = []
        for m, (cm, metric) in created.items():
            spec = cm.spec
            try:
                with torch.no_grad():
                    v = float(metric(cm.border(tensor(crop)), cm.border(ref_t)) if spec.mode == "FR"
                              else metric(tensor(crop)))
            except (RuntimeError, ValueError, IndexError, np.linalg.LinAlgError) as exc:
                notes.append(f"crop {_name(m)} not shown for some panels: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:100]}")
                continue
            if spec.mode == "FR" and label == "reference":
                continue
            parts.append(f"{_name(m)} {v:.2f}" if m in ("psnr", "piqe", "musiq") else f"{_name(m)} {v:.3f}")
        text[label] = ", ".join(parts)
    return text, sorted(set(notes))


@plain_text
def crop_grid(store: Store, per: pd.DataFrame, t: pd.DataFrame, test_set: str, out_dir: Path,
              item: str | None = None) -> tuple[Path | None, list[str]]:
    con = connect(store)
    refs = con.execute("SELECT item, ref_path, ref_id, gt_index, label FROM eval_refs WHERE test_set = ? "
                       "ORDER BY item, gt_index",
                       [test_set]).df()
    if refs.empty:
        return None, [f"{test_set}: no references, so no crop grid"]
    item = item or refs["item"].iloc[0]
    ref_rows = refs[refs["item"] == item]
    if ref_rows.empty:
        raise StudyError(f"--crop-item {item!r}: not a test image with a reference in test set {test_set}")
    # every panel's file is checked against the image id its scores are stored under (as scoring does)
    ref, why = load_checked(ref_rows["ref_path"].iloc[0], ref_rows["ref_id"].iloc[0])
    if ref is None:
        return None, [f"{test_set}: no crop grid, the reference changed on disk since evaluation ({why})"]
    changed = []
    outs = con.execute("SELECT DISTINCT checkpoint_sha256, weights, path, image_id FROM images "
                       "WHERE role = 'sr_output' AND test_set = ? AND item = ?", [test_set, item]).df()
    lr = con.execute("SELECT path, image_id FROM images WHERE role = 'lr' AND test_set = ? AND item = ? LIMIT 1",
                     [test_set, item]).fetchone()
    top, left, size = _crop_box(ref)
    crops: dict[str, np.ndarray] = {}
    if lr and not (t["arch"] == "bicubic").any():  # with the bicubic reference row, its panel is this one
        lr_px, why = load_checked(lr[0], lr[1])
        if lr_px is None:
            changed.append(f"LR ({why})")
        else:
            up = np.asarray(Image.fromarray(lr_px).resize((ref.shape[1], ref.shape[0]), Image.Resampling.BICUBIC))
            crops["LR (bicubic)"] = up[top:top + size, left:left + size]
    labels = t[t["run"] != GOLD][["run", "checkpoint_sha256", "weights"]]
    for r in labels.itertuples():
        hit = outs[(outs.checkpoint_sha256 == r.checkpoint_sha256) & (outs.weights == r.weights)]
        if len(hit):
            px, why = load_checked(hit["path"].iloc[0], hit["image_id"].iloc[0])
            if px is None:
                changed.append(f"{r.run} ({why})")
            else:
                crops[r.run] = px[top:top + size, left:left + size]
    ref_label = f"GT ({ref_rows['label'].iloc[0]}{'' if pd.isna(ref_rows['gt_index'].iloc[0]) else ' ' + str(int(ref_rows['gt_index'].iloc[0]))})"
    crops["reference"] = ref[top:top + size, left:left + size]
    nr = [m for m in t.attrs["metrics"] if m not in FR_ORDER]
    text, notes = _crop_scores(crops, crops["reference"], nr)
    notes += [f"crop panel left out, its file changed on disk since evaluation: {c}" for c in changed]
    n = len(crops)
    cols = min(n, 6)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.1 * cols, 3.5 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (label, crop) in zip(axes.ravel(), crops.items()):
        ax.imshow(crop, interpolation="nearest")
        ax.set_title((ref_label if label == "reference" else label) + "\n" + text.get(label, ""), fontsize=7)
    fig.suptitle(f"{test_set} / {item}: crop {size}x{size} at (top {top}, left {left}); scores computed on the crop (FR: the table's protocol)",
                 fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.9 if nrows == 1 else 0.95))
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"crops_{test_set}.png"
    try:
        save_figure(fig, png, dpi=130)
    finally:
        plt.close(fig)
    return png, notes


# --- the report ---------------------------------------------------------------------------------------------------------


def _test_set_notes(store: Store, test_set: str) -> list[str]:
    con = connect(store)
    rows = con.execute("SELECT config FROM runs WHERE kind = 'evaluate'").fetchall() if _has_runs(con) else []
    notes = set()
    for (cfg,) in rows:
        c = json.loads(cfg) if isinstance(cfg, str) else cfg
        if c.get("test_set") != test_set:
            continue
        if c.get("synthetic"):
            notes.add("SYNTHETIC test data (generated images and synthetic labels: not a benchmark)")
        notes.add(f"NR metrics: {c.get('nr_metrics_why')}")
        notes.add(f"FR metrics: {c.get('fr_metrics_why')}")
    return sorted(notes)


def _has_runs(con) -> bool:
    cols = [r[0] for r in con.execute("DESCRIBE runs").fetchall()]
    return "kind" in cols and "config" in cols


_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto}table.t{border-collapse:collapse;font-size:13px}"
          ".t td,.t th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}img{max-width:100%}"
          ".note{background:#fff3cd;padding:6px}")


def write_compare(store: Store, out: Path, baseline: str | None = None, test_set: str | None = None,
                  n_boot: int = 2000, crop_item: str | None = None, title: str = "iqa-study compare",
                  preamble: list[str] = ()) -> list[Path]:
    """compare.md, compare.csv, compare.html and the figures in ``out``; returns the written paths."""
    if n_boot < 1:
        raise StudyError(f"--n-boot {n_boot}: expected >= 1")
    per, runs, notes = load_per_image(store, test_set)
    base, why = pick_baseline(runs, baseline)
    out.mkdir(parents=True, exist_ok=True)
    tables, md, body, written = [], [f"# {title}", "", *[f"> {p}" for p in preamble], ""], [], []
    body += [("note", p) for p in preamble]
    for ts in sorted(per["test_set"].unique()):
        t = compare_table(per, runs, ts, base, n_boot)
        shown = display_table(t)
        t.insert(0, "test_set", ts)
        tables.append(t)
        ts_notes = [*_test_set_notes(store, ts), *[text for where, text in notes if where in (ts, None)]]
        small = small_n_warning(t, ts)
        if small:
            print(small, file=sys.stderr)
            ts_notes.insert(0, small)
        head = (f"Test set {ts}: baseline for Δ = {base} ({why}); Δ = mean paired per-image difference, 95% paired "
                f"bootstrap CI ({n_boot} resamples)" if base else f"Test set {ts}: no baseline for Δ ({why})")
        figs = pd_plot(t, ts, out, note="; ".join(n for n in ts_notes if n.startswith("SYNTHETIC")))
        grid, grid_notes = crop_grid(store, per, t, ts, out, crop_item)
        written += figs + ([grid] if grid else [])
        md += [f"## {ts}", "", head, "", *[f"- {n}" for n in ts_notes + grid_notes], "", _markdown(shown), ""]
        md += [f"![perception-distortion]({p.name})" for p in figs if p.suffix == ".png"]
        md += [f"![crop grid]({grid.name})", ""] if grid else [""]
        body += [("h2", ts), ("p", head), ("ul", ts_notes + grid_notes), ("table", shown)]
        body += [("figure", {"src": p.name, "alt": f"perception-distortion plot {ts}",
                             "links": [("SVG", p.with_suffix(".svg").name)]}) for p in figs if p.suffix == ".png"]
        if grid:
            body.append(("figure", {"src": grid.name, "alt": f"crop grid {ts}"}))
    save_csv(pd.concat(tables, ignore_index=True), out / "compare.csv")
    atomic_write_text("\n".join(md) + "\n", out / "compare.md")
    body.append(("links", [("compare.csv: means, deltas and CI bounds per metric", "compare.csv")]))
    atomic_write_text(html_page.render(title, [("h1", title), *body], _STYLE), out / "compare.html")
    return [out / "compare.md", out / "compare.csv", out / "compare.html", *written]
