"""The small-scale reproduction's tables, figures and claim verdicts, from the evaluation store (the one door to
the scores: bench.report.compare.load_per_image) and the FT runs' guard/validation logs.

Statistics: a variant's score is the mean over seeds and test images (Set14 and Set5 pooled, each image once);
its 95 % CI and every difference's CI come from a crossed bootstrap that resamples seeds and images with
replacement (2,000 draws, seed 0). Differences are paired: same seed, same image (a seed-less reference --
bicubic, the PSNR init, the gold standard -- is broadcast over seeds). A claim is *reproduced* when the CI of
its difference excludes 0 in the paper's direction, *contradicted* when it excludes 0 the other way, and
*inconclusive* otherwise. Nothing here is tuned: the verdict rules are fixed in CLAIMS below.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.atomic import atomic_write_text
from bench.errors import StudyError
from bench.report.figures import save_figure
from sr_training.repro import plan as P

REFERENCES = {"bicubic": "bicubic", "psnr_init_swinir_tiny": "PSNR init", "Gold standard": "gold (HR)"}
GOLD_LABEL = REFERENCES["Gold standard"]
METRICS = ("psnr", "ssim", "stlpips", "niqe", "piqe", "entropy")
N_BOOT = 2000

# (claim, paper's statement, comparison a - b, {metric: wanted sign of the ORIENTED difference (+1 = a better)})
CLAIMS = (
    ("AMO >= UPos without labels", "label-free AMO beats human-label UPos on perceptual metrics (method.md 8.5)",
     ("amo", "upos"), {"niqe": +1, "stlpips": +1}),
    ("FT raises NR quality at a PSNR cost", "AMO+FT vs AMO: MUSIQ up, PSNR down (method.md 7)",
     ("amo_ft", "amo"), {"niqe": +1, "psnr": -1}),
    ("FT_HP recovers mid-level metrics", "FT_HP vs FT: LPIPS-type better, NR worse (method.md 8.2)",
     ("amo_ft_hp", "amo_ft"), {"stlpips": +1, "niqe": -1}),
    ("FT_IG adds nothing", "FT_IG vs FT: no clear gain (method.md 8.2)", ("amo_ft_ig", "amo_ft"), {}),
    ("LoRA regularises", "full FT exploits Q: more reward, worse watched metrics than LoRA FT (method.md 4)",
     ("amo_ft_full", "amo_ft"), {"niqe": +1, "stlpips": -1}),
    ("AMO+FT >= UPos+FT", "AMO+FT better than UPos+FT on SwinIR (method.md 8.4)", ("amo_ft", "upos_ft"),
     {"niqe": +1, "stlpips": +1}),
)


def _oriented(lower_better: bool) -> float:
    return -1.0 if lower_better else 1.0


class Scores:
    """Per (variant, metric): a seeds x images matrix; references as 1 x images."""

    def __init__(self, per: pd.DataFrame):
        per = per.assign(image=per["test_set"] + "/" + per["item"])
        self.images = sorted(per["image"].unique())
        self.lower = per.groupby("metric")["lower_better"].first().astype(bool).to_dict()
        self.m: dict[tuple[str, str], np.ndarray] = {}
        self.seeds: dict[str, list[int]] = {}
        for label, g in per.groupby("label"):
            variant, seed = REFERENCES.get(label), None
            if variant is None:
                stem, _, s = label.rpartition("_s")
                if stem not in P.BY_NAME or not s.isdigit():
                    raise StudyError(f"repro store: run '{label}' is not <variant>_s<seed> of the plan")
                variant, seed = stem, int(s)
            self.seeds.setdefault(variant, [])
            if seed is not None:
                self.seeds[variant].append(seed)
            for metric, h in g.groupby("metric"):
                row = h.set_index("image")["score"].reindex(self.images).to_numpy(float)
                key = (variant, metric)
                self.m.setdefault(key, {})[seed] = row
        self.mat = {}
        for key, by_seed in self.m.items():
            seeds = sorted(k for k in by_seed if k is not None) or [None]
            self.mat[key] = (seeds, np.stack([by_seed[s] for s in seeds]))

    def variants(self) -> list[str]:
        return sorted({v for v, _ in self.mat})

    def has(self, variant: str, metric: str) -> bool:
        return (variant, metric) in self.mat


def _boot(x: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOT) -> tuple[float, float, float]:
    """(mean, lo, hi) of a seeds x images matrix (NaN images left out), crossed bootstrap."""
    keep = ~np.isnan(x).any(axis=0)
    x = x[:, keep]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    s, n = x.shape
    means = np.empty(n_boot)
    for b in range(n_boot):
        means[b] = x[rng.integers(0, s, s)][:, rng.integers(0, n, n)].mean()
    return float(x.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def difference(sc: Scores, a: str, b: str, metric: str) -> np.ndarray | None:
    """a - b per (seed, image), paired by seed (a seed-less side broadcast)."""
    if not (sc.has(a, metric) and sc.has(b, metric)):
        return None
    (sa, xa), (sb, xb) = sc.mat[(a, metric)], sc.mat[(b, metric)]
    if sa == [None] or sb == [None]:
        return xa - xb
    common = [s for s in sa if s in sb]
    if not common:
        return None
    return xa[[sa.index(s) for s in common]] - xb[[sb.index(s) for s in common]]


def main_table(sc: Scores, baseline: str = "upos") -> pd.DataFrame:
    rows = []
    order = [*REFERENCES.values(), *[v.name for v in P.VARIANTS]]
    for variant in [v for v in order if any(sc.has(v, m) for m in METRICS)]:
        for metric in METRICS:
            if not sc.has(variant, metric):
                continue
            rng = np.random.default_rng(0)
            seeds, x = sc.mat[(variant, metric)]
            mean, lo, hi = _boot(x, rng)
            row = {"variant": variant, "what": P.BY_NAME[variant].what if variant in P.BY_NAME else "reference",
                   "metric": metric, "lower_better": sc.lower[metric], "n_seeds": 0 if seeds == [None] else len(seeds),
                   "n_images": int((~np.isnan(x).any(axis=0)).sum()), "mean": mean, "ci_lo": lo, "ci_hi": hi}
            d = difference(sc, variant, baseline, metric) if variant != baseline else None
            if d is not None:
                dm, dlo, dhi = _boot(d, np.random.default_rng(0))
                row |= {f"delta_vs_{baseline}": dm, "d_lo": dlo, "d_hi": dhi}
            rows.append(row)
    return pd.DataFrame(rows)


def comparisons(sc: Scores) -> pd.DataFrame:
    """The paper's ablations as paired differences a - b (raw units; 'better' says which side wins)."""
    pairs = [("sampling", a, "upos") for a in ("original", "sma", "smp", "amo", "amo_pos")]
    pairs += [("sampling", "amo", "sma"), ("sampling", "amo", "smp"), ("sampling", "amo_pos", "amo")]
    pairs += [("FT", "amo_ft", "amo"), ("FT", "upos_ft", "upos"), ("FT variants", "amo_ft_hp", "amo_ft"),
              ("FT variants", "amo_ft_ig", "amo_ft"), ("labels", "amo_ft", "upos_ft"),
              ("LoRA vs full", "amo_ft_full", "amo_ft"), ("LoRA vs full", "amo_ft_full", "amo")]
    pairs += [("lambda_Q", v.name, "amo") for v in P.VARIANTS if v.group == "lambda"]  # lambda 100 = amo_ft, under FT
    rows = []
    for group, a, b in pairs:
        for metric in METRICS:
            d = difference(sc, a, b, metric)
            if d is None:
                continue
            m, lo, hi = _boot(d, np.random.default_rng(0))
            sign = _oriented(sc.lower[metric])
            verdict = ("a better" if sign * lo > 0 and sign * hi > 0 else "b better" if sign * lo < 0 and sign * hi < 0
                       else "no difference detected")
            rows.append({"group": group, "a": a, "b": b, "metric": metric, "delta": m, "ci_lo": lo, "ci_hi": hi,
                         "n_seeds": d.shape[0], "result": verdict})
    return pd.DataFrame(rows)


def claim_verdicts(cmp: pd.DataFrame, skipped: dict[str, str]) -> pd.DataFrame:
    rows = []
    for claim, paper, (a, b), wanted in CLAIMS:
        sub = cmp[(cmp["a"] == a) & (cmp["b"] == b)]
        if sub.empty:
            why = skipped.get(a) or skipped.get(b) or "not run"
            rows.append({"claim": claim, "paper": paper, "measured": f"not tested: {why}", "verdict": "not tested"})
            continue
        parts, verdicts = [], []
        metrics = wanted or {m: 0 for m in sub["metric"]}
        for metric, want in metrics.items():
            r = sub[sub["metric"] == metric]
            if r.empty:
                continue
            r = r.iloc[0]
            parts.append(f"{metric} {r.delta:+.3g} [{r.ci_lo:+.3g}, {r.ci_hi:+.3g}]")
            won = {"a better": +1, "b better": -1}.get(r.result, 0)
            if want == 0:  # 'adds nothing': every metric without a detected difference
                verdicts.append("reproduced" if won == 0 else "contradicted")
            else:
                verdicts.append("reproduced" if won == want else "contradicted" if won == -want else "inconclusive")
        verdict = ("reproduced" if all(v == "reproduced" for v in verdicts) else
                   "contradicted" if all(v == "contradicted" for v in verdicts) else
                   "inconclusive" if all(v == "inconclusive" for v in verdicts) else
                   ("partly: " if "reproduced" in verdicts else "not reproduced: ")
                   + ", ".join(f"{m} {v}" for m, v in zip(metrics, verdicts)))
        rows.append({"claim": claim, "paper": paper, "measured": f"{a} - {b}: " + "; ".join(parts),
                     "verdict": verdict})
    return pd.DataFrame(rows)


def _fmt(v: float, metric: str) -> str:
    d = 3 if metric in ("ssim", "stlpips") else 2
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{d}f}"


def main_wide(t: pd.DataFrame, baseline: str = "upos", sep: str = "; ") -> pd.DataFrame:
    """The main table: one row per model (and its seed count), one column per metric (named with ↑/↓), each
    cell 'mean [lo, hi]' then ``sep`` and 'Δ d [lo, hi]' against ``baseline`` where there is one."""
    metrics = [m for m in METRICS if m in set(t.metric)]
    dcol = f"delta_vs_{baseline}"
    rows = []
    for variant, g in t.groupby("variant", sort=False):
        row = {"model": variant, "seeds": int(g.n_seeds.iloc[0]) or "–"}
        for m in metrics:
            r = g[g.metric == m]
            if r.empty:
                row[m] = "–"
                continue
            r = r.iloc[0]
            cell = f"{_fmt(r['mean'], m)} [{_fmt(r.ci_lo, m)}, {_fmt(r.ci_hi, m)}]"
            if dcol in r and not pd.isna(r[dcol]):
                cell += f"{sep}Δ {r[dcol]:+.3g} [{r.d_lo:+.3g}, {r.d_hi:+.3g}]"
            row[m] = cell
        rows.append(row)
    arrow = {m: "↓" if bool(t[t.metric == m].lower_better.iloc[0]) else "↑" for m in metrics}
    return pd.DataFrame(rows).rename(columns={m: f"{m} {arrow[m]}" for m in metrics})


def main_markdown(t: pd.DataFrame, baseline: str = "upos") -> str:
    w = main_wide(t, baseline, sep="<br>")
    lines = ["| " + " | ".join(w.columns) + " |", "|" + "---|" * len(w.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in w.itertuples(index=False)]
    return "\n".join(lines)


def off_scale(values: pd.Series) -> pd.Series:
    """True for a model mean far outside the others on one axis (Tukey's far-out rule: beyond 3 IQR from the
    quartiles of every model and reference), e.g. a diverged run; the P-D axes span the rest so their
    differences stay readable. References are never off-scale (``_plot_pd``)."""
    q1, q3 = values.quantile(0.25), values.quantile(0.75)
    span = 3 * (q3 - q1)
    return (values < q1 - span) | (values > q3 + span)


def _plot_pd(t: pd.DataFrame, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    nr = "niqe"
    means = t[t.variant != GOLD_LABEL].pivot_table(index="variant", columns="metric", values="mean", sort=False)
    far = {m: off_scale(means[m].dropna()) for m in ("psnr", "stlpips", nr) if m in means}
    # the references (bicubic, PSNR init) are the anchors: always on the axes
    outliers = sorted({v for m in far.values() for v, f in m.items() if f and v not in REFERENCES.values()})
    notes = []
    for ax, x in zip(axes, ("psnr", "stlpips")):
        kept = [v for v in means.index if v not in outliers and not pd.isna(means.loc[v].get(x))]
        lims = {}
        for m in (x, nr):
            g = t[(t.metric == m) & t.variant.isin(kept if m == x else [*kept, GOLD_LABEL])]
            lo, hi = g.ci_lo.min(), g.ci_hi.max()
            pad = 0.06 * (hi - lo)
            lims[m] = (lo - pad, hi + pad)
        for variant, g in t.groupby("variant", sort=False):
            gx, gy = g[g.metric == x], g[g.metric == nr]
            if gy.empty:
                continue
            if gx.empty:  # the gold standard: NR only
                ax.axhline(gy["mean"].iloc[0], ls="--", c="k", lw=1, label=f"{variant} {nr}")
                continue
            mx, my = gx["mean"].iloc[0], gy["mean"].iloc[0]
            if variant in outliers:  # drawn on the edge, its values written out
                cx, cy = np.clip(mx, *lims[x]), np.clip(my, *lims[nr])
                ax.plot([cx], [cy], marker="X", ms=10, c="crimson", ls="none",
                        label=f"{variant} (off-scale)")
                ax.annotate(f"{variant} off-scale:\n{x} {mx:.3g}, {nr} {my:.3g}", (cx, cy), fontsize=7, c="crimson",
                            xytext=(6, -14 if cy > np.mean(lims[nr]) else 6), textcoords="offset points")
                if ax is axes[0]:
                    notes.append(f"{variant} ({x} {mx:.3g}, {nr} {my:.3g})")
                continue
            ref = variant in REFERENCES.values()
            ax.errorbar(gx["mean"], gy["mean"], xerr=[gx["mean"] - gx.ci_lo, gx.ci_hi - gx["mean"]],
                        yerr=[gy["mean"] - gy.ci_lo, gy.ci_hi - gy["mean"]], fmt="s" if ref else "o",
                        c="grey" if ref else None, ms=6, capsize=2, label=variant, elinewidth=0.7, alpha=0.8)
            ax.annotate(variant, (mx, my), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlim(*lims[x])
        ax.set_ylim(*lims[nr])
        ax.set_xlabel(f"{x} ({'↓' if x == 'stlpips' else '↑'} better)")
        ax.set_ylabel(f"{nr} (↓ better)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    extra = f"; off-scale (diverged, X on the edge): {', '.join(notes)}" if notes else ""
    fig.suptitle("Perception-distortion, Set14+Set5 pooled (mean over seeds and images, 95% crossed-bootstrap CI)\n"
                 f"tiny SwinIR on SYNTHETIC multi-GT data from real BSD100 photographs{extra}", fontsize=9)
    fig.tight_layout()
    path = out / "pd.png"
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def lambda_deltas(sc: Scores, base: str = "amo") -> pd.DataFrame:
    """Per lambda_Q variant and metric: the paired difference to the FT base (same seed and image), 95% CI."""
    rows = []
    for v in P.VARIANTS:
        lam = P.lambda_of(v)
        if lam is None:
            continue
        for m in ("psnr", "stlpips", "niqe"):
            d = difference(sc, v.name, base, m)
            if d is None:
                continue
            mean, lo, hi = _boot(d, np.random.default_rng(0))
            rows.append({"variant": v.name, "lambda_q": lam, "metric": m, "lower_better": sc.lower[m],
                         "delta": mean, "ci_lo": lo, "ci_hi": hi})
    return pd.DataFrame(rows)


def _plot_lambda(sc: Scores, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = lambda_deltas(sc)
    if d.empty or d.variant.nunique() < 2:
        return None
    atomic_write_text(d.to_csv(index=False), out / "lambda_tradeoff.csv")
    lams = sorted(d.lambda_q.unique())
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, m in zip(axes, ("psnr", "stlpips", "niqe")):
        g = d[d.metric == m].sort_values("lambda_q")
        if g.empty:
            continue
        pos = [lams.index(v) for v in g.lambda_q]
        ax.errorbar(pos, g.delta, yerr=[g.delta - g.ci_lo, g.ci_hi - g.delta], fmt="o-", capsize=3)
        ax.axhline(0, c="grey", ls=":", label="AMO base (before FT)")
        ax.set_xticks(range(len(lams)), [f"{v:g}" for v in lams])
        ax.set_xlabel("λ_Q (on Q / 100)")
        ax.set_ylabel(f"Δ {m} vs AMO base")
        ax.set_title(f"{m} ({'↓' if g.lower_better.iloc[0] else '↑'} better)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("AMO+FT λ_Q sweep (LoRA, NIQE reward), Set14+Set5: difference to the AMO base, paired by seed and "
                 "image (95% crossed-bootstrap CI); the paper's tiers: PSNR -> LPIPS-ST -> NR", fontsize=9)
    fig.tight_layout()
    path = out / "lambda_tradeoff.png"
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def ft_trajectories(runs_dir: Path, metric: str) -> pd.DataFrame:
    """One row per FT validation check (SYNTHETIC val crops of training photographs): Q and watched metrics."""
    rows = []
    for d in sorted(runs_dir.glob("*_s*")):
        variant, _, seed = d.name.rpartition("_s")
        g, v = d / "guard_log.csv", d / "val_log.csv"
        if variant not in P.BY_NAME or P.BY_NAME[variant].base is None or not g.is_file():
            continue
        guard = pd.read_csv(g)
        val = pd.read_csv(v)[["iter", "psnr"]] if v.is_file() else pd.DataFrame(columns=["iter", "psnr"])
        t = guard.merge(val, on="iter", how="left")
        t = t.rename(columns={f"Q_{metric}": metric}) if f"Q_{metric}" in t else t
        rows.append(t.assign(variant=variant, seed=int(seed)))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _plot_hacking(traj: pd.DataFrame, out: Path, metric: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    show = [v for v in ("amo_ft", "amo_ft_full", "amo_ft_l1000") if v in set(traj.get("variant", []))]
    if not show:
        return None
    cols = [c for c in (metric, "piqe", "stlpips", "psnr") if c in traj]
    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.6))
    for ax, c in zip(np.atleast_1d(axes), cols):
        for v in show:
            g = traj[traj.variant == v].groupby("iter")[c].agg(["mean", "min", "max"]).reset_index()
            ax.plot(g["iter"], g["mean"], "o-", label=v, ms=3)
            ax.fill_between(g["iter"], g["min"], g["max"], alpha=0.15)
        ax.set_xlabel("FT iteration")
        ax.set_title(c + (" (the reward Q)" if c == metric else ""))
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle("Reward hacking? Q and the watched metrics over FT steps, LoRA vs full-parameter FT (mean over seeds,"
                 " band = min..max); SYNTHETIC val crops of training photographs", fontsize=9)
    fig.tight_layout()
    path = out / "reward_hacking.png"
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


CROP_RUNS = ("bicubic", "psnr_init_swinir_tiny", "upos_s0", "amo_s0", "amo_ft_s0", "amo_ft_full_s0", "amo_ft_l1000_s0")


def _crop_grids(store, per: pd.DataFrame, runs: pd.DataFrame, out: Path) -> tuple[list[Path], list[str]]:
    """Seed-0 crop grids (bench.report.compare.crop_grid: every panel checked against its stored image id)."""
    from bench.report.compare import GOLD, compare_table, crop_grid

    keep = runs[runs["run_name"].isin(CROP_RUNS)]
    sub = per[per["label"].isin([*keep["label"], GOLD])]
    paths, notes = [], []
    for ts in sorted(sub["test_set"].unique()):
        t = compare_table(sub, keep, ts, "upos_s0" if (keep["run_name"] == "upos_s0").any() else None, n_boot=200)
        png, why = crop_grid(store, sub, t, ts, out)
        paths += [png] if png else []
        notes += why
    return paths, notes


def write_report(run_dir: Path, out: Path) -> list[Path]:
    """Tables (CSV + Markdown), figures and an HTML page from ``run_dir`` (an `iqa-study repro` folder)."""
    from bench.report import html_page
    from bench.report.compare import load_per_image
    from bench.store import Store

    plan_file = run_dir / "plan.json"
    if not plan_file.is_file():
        raise StudyError(f"{run_dir}: no plan.json; not an `iqa-study repro` folder")
    plan = json.loads(plan_file.read_text())
    store = Store(run_dir / "store", create=False)
    per, runs, notes = load_per_image(store)
    sc = Scores(per)
    out.mkdir(parents=True, exist_ok=True)
    t = main_table(sc)
    cmp = comparisons(sc)
    claims = claim_verdicts(cmp, plan.get("skipped", {}))
    traj = ft_trajectories(run_dir / "runs", plan["metric"])
    timings = pd.DataFrame([json.loads(p.read_text()) for p in sorted((run_dir / "runs").glob("*/repro_done.json"))])
    written = [atomic_write_text(t.to_csv(index=False), out / "main.csv"),
               atomic_write_text(cmp.to_csv(index=False), out / "ablations.csv"),
               atomic_write_text(claims.to_csv(index=False), out / "claims.csv"),
               atomic_write_text(timings.to_csv(index=False), out / "timings.csv")]
    if not traj.empty:
        written.append(atomic_write_text(traj.to_csv(index=False), out / "ft_trajectories.csv"))
    figs = [p for p in (_plot_pd(t, out), _plot_lambda(sc, out),
                        _plot_hacking(traj, out, plan["metric"]) if not traj.empty else None) if p]
    grids, grid_notes = _crop_grids(store, per, runs, out)
    notes += [(None, n) for n in grid_notes]
    figs += grids
    seeds = plan["seeds"]
    label = (f"Real photographs (BSD100 for training, Set14 + Set5 for testing, fixed-seed blind LR); SYNTHETIC enhanced "
             f"GTs and annotators; TINY SwinIR from the shipped PSNR init, {plan['base_iters']} base / "
             f"{plan['ft_iters']} FT CPU iterations; seeds {seeds}; sampling and reward metric {plan['metric']}. "
             "The figures say whether the method's mechanisms move a small model, not how good it is at paper scale."
             + (" ONE seed (--quick): the CIs cover the test images only, not training randomness." if len(seeds) < 2
                else ""))
    cmp_md = "\n".join(f"| {r.group} | {r.a} − {r.b} | {r.metric} | {r.delta:+.4g} [{r.ci_lo:+.4g}, {r.ci_hi:+.4g}] | "
                       f"{r.result} |" for r in cmp.itertuples())
    claims_md = "\n".join(f"| {r.claim} | {r.paper} | {r.measured} | **{r.verdict}** |" for r in claims.itertuples())
    total = timings[["train_s", "eval_s"]].sum().sum() if not timings.empty else 0.0
    md = ["# The method at small scale (`iqa-study repro`)", "", f"> {label}", "",
          "## Claims", "", "| claim | paper | measured (Δ = a − b, 95% CI over seeds and images) | verdict |",
          "|---|---|---|---|", claims_md, "",
          "## Main table (Set14 + Set5 pooled; mean [95% CI]; Δ vs UPos, paired by seed and image)", "",
          main_markdown(t), "", "## Ablations (a − b, raw units)", "",
          "| group | comparison | metric | Δ [95% CI] | result |", "|---|---|---|---|---|", cmp_md, "",
          "## Skipped", "", *([f"- {k}: {v}" for k, v in plan.get("skipped", {}).items()] or ["- none"]), "",
          *[f"- note: {text}" for _, text in notes],
          "## Timings", "", (f"{len(timings)} runs, {total / 60:.1f} min of training + evaluation in total "
                             "(timings.csv per run; the machine's other load is not subtracted)."), "",
          *[f"![{p.stem}]({p.name})" for p in figs], ""]
    written.append(atomic_write_text("\n".join(md), out / "README.md"))
    body = [("h1", "The method at small scale"), ("note", label), ("h2", "Claims"), ("table", claims),
            ("h2", "Figures")]
    body += [x for p in figs for x in (("h3", p.stem), ("figure", {"src": p.name, "alt": p.stem}))]
    body += [("h2", "Main table (Set14 + Set5 pooled; mean [95% CI]; Δ vs UPos, paired by seed and image)"),
             ("table", main_wide(t)), ("h2", "Ablations (a − b, raw units)"), ("table", cmp.round(4)),
             ("p", (f"main.csv, ablations.csv, claims.csv, timings.csv: the data; {len(timings)} runs, "
                   f"{total / 60:.1f} min of training + evaluation."))]
    written.append(atomic_write_text(html_page.render("iqa-study repro", body,
                                                      "body{font-family:sans-serif;max-width:1300px;margin:2em auto}"
                                                      "img{max-width:100%}.note{background:#fff3cd;padding:6px}"),
                                     out / "index.html"))
    return written + figs

