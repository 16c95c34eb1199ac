"""`userstudy status` and `userstudy analyse`: progress, preference rates, Bradley-Terry, rater checks.

Definitions (every number is recomputed from STUDY/votes.sqlite and study.json):

* Exclusion rule: a rater who failed more than ``max_attention_failures`` attention checks
  (chose the degraded side) is excluded, and so is every rater named in ``exclude``; the rule,
  the excluded raters and why are written into analysis.json and the section. Excluded raters'
  votes are left out of every number below (and of `export`, which applies the same rule).
* Votes counted: the first presentation of each trial (kind 'main'); repeats only measure
  consistency, attention checks only exclusion.
* Preference rate of a run: the share of its comparisons it won. 95% CIs: Wilson (binomial, the
  comparisons as independent units) and a percentile bootstrap over test images (``n_boot``
  resamples of the images with replacement, all comparisons of a drawn image kept together;
  ``bench.study.stats.group_bootstrap_ratio``), which allows for raters agreeing on an image.
* Pairwise: wins of run_a over run_b per pair of runs, Wilson CI, exact two-sided binomial test
  against 0.5 (``scipy.stats.binomtest``).
* Bradley-Terry: log-strengths by choix's I-LSR (``choix.ilsr_pairwise``, regularisation
  ``alpha = BT_ALPHA`` so that a run that always wins keeps a finite strength), centred to mean 0;
  P(i preferred to j) = 1 / (1 + exp(theta_j - theta_i)); 95% CIs from the same bootstrap over images.
* Rater consistency: over a rater's repeated trials (shown again with the sides swapped), the share
  where the same run was chosen both times. Side bias: the share of 'left' answers in main trials.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.atomic import atomic_write, atomic_write_text
from bench.errors import StudyError
from bench.userstudy import db
from bench.userstudy.design import load

BT_ALPHA = 0.01


# --- raters -----------------------------------------------------------------------------------------------------------


def rater_table(study_dir: Path, max_attention_failures: int = 0, exclude: tuple[str, ...] = ()) -> tuple:
    """(votes frame, per-rater table with the exclusion decision, rule text)."""
    if max_attention_failures < 0:
        raise StudyError(f"--max-attention-failures {max_attention_failures}: expected >= 0")
    votes, raters = db.votes_frame(study_dir)
    unknown = sorted(set(exclude) - set(raters["rater_id"]))
    if unknown:
        raise StudyError(f"--exclude {unknown[0]}: no such rater (raters: {', '.join(raters['rater_id']) or 'none'})")
    rows = []
    for r in raters.itertuples():
        v = votes[votes["rater_id"] == r.rater_id]
        att = v[v["kind"] == "attention"]
        failed = int((att["choice"] != att["correct"]).sum())
        main = v[v["kind"] == "main"]
        rep = v[v["kind"] == "repeat"].merge(main[["pres_id", "chosen_run"]], left_on="repeat_of", right_on="pres_id",
                                             suffixes=("", "_first"))
        consistent = int((rep["chosen_run"] == rep["chosen_run_first"]).sum())
        if r.rater_id in exclude:
            reason = "excluded by --exclude"
        elif failed > max_attention_failures:
            reason = f"failed {failed} of {len(att)} attention checks (more than {max_attention_failures})"
        else:
            reason = ""
        rows.append({"rater": r.rater_id, "scripted": bool(r.scripted), "done": int(r.done), "total": int(r.total),
                     "attention_seen": len(att), "attention_failed": failed, "repeats": len(rep),
                     "consistent": consistent, "consistency": consistent / len(rep) if len(rep) else np.nan,
                     "left_share": float((main["choice"] == "left").mean()) if len(main) else np.nan,
                     "median_rt_s": float(v["rt_ms"].median() / 1000) if len(v) else np.nan,
                     "last_vote": r.last_vote, "excluded": bool(reason), "reason": reason})
    rule = (f"a rater who failed more than {max_attention_failures} attention check(s) is excluded"
            + (f"; excluded by hand: {', '.join(sorted(exclude))}" if exclude else ""))
    return votes, pd.DataFrame(rows), rule


def status_table(study_dir: Path) -> pd.DataFrame:
    load(study_dir)
    _, table, _ = rater_table(study_dir)
    return table[["rater", "scripted", "done", "total", "attention_failed", "attention_seen", "repeats",
                  "consistent", "last_vote"]]


def counted_votes(study_dir: Path, study: dict, max_attention_failures: int = 0, exclude: tuple[str, ...] = ()):
    """(main votes of the raters kept, with item/run_a/run_b; rater table; rule)."""
    votes, raters, rule = rater_table(study_dir, max_attention_failures, tuple(exclude))
    keep = set(raters.loc[~raters["excluded"], "rater"]) if len(raters) else set()
    trials = pd.DataFrame(study["trials"])[["trial_id", "item", "group", "run_a", "run_b", "image_a", "image_b"]]
    main = votes[(votes["kind"] == "main") & votes["rater_id"].isin(keep)].merge(trials, on="trial_id")
    return main, raters, rule


# --- statistics -------------------------------------------------------------------------------------------------------


def wilson(k: int, n: int) -> tuple[float, float]:
    from statsmodels.stats.proportion import proportion_confint

    if n == 0:
        return np.nan, np.nan
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    return float(lo), float(hi)


def preference(main: pd.DataFrame, labels: list[str], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    from bench.study.stats import group_bootstrap_ratio

    num = np.stack([(main["chosen_run"] == lab).to_numpy(float) for lab in labels], axis=1)
    den = np.stack([((main["run_a"] == lab) | (main["run_b"] == lab)).to_numpy(float) for lab in labels], axis=1)
    _, lo, hi = group_bootstrap_ratio(num, den, main["item"].to_numpy(), n_boot=n_boot, seed=seed)
    rows = []
    for i, lab in enumerate(labels):
        n, k = int(den[:, i].sum()), int(num[:, i].sum())
        w_lo, w_hi = wilson(k, n)
        rows.append({"run": lab, "comparisons": n, "wins": k, "rate": k / n if n else np.nan, "wilson_lo": w_lo,
                     "wilson_hi": w_hi, "boot_lo": float(lo[i]), "boot_hi": float(hi[i])})
    return pd.DataFrame(rows)


def pairwise(main: pd.DataFrame, study: dict) -> pd.DataFrame:
    from scipy.stats import binomtest

    rows = []
    pairs = dict.fromkeys((t["run_a"], t["run_b"]) for t in study["trials"])
    for a, b in pairs:
        g = main[(main["run_a"] == a) & (main["run_b"] == b)]
        n, k = len(g), int((g["chosen_run"] == a).sum())
        lo, hi = wilson(k, n)
        rows.append({"run_a": a, "run_b": b, "n": n, "wins_a": k, "rate_a": k / n if n else np.nan,
                     "wilson_lo": lo, "wilson_hi": hi, "p_binomial": binomtest(k, n).pvalue if n else np.nan})
    return pd.DataFrame(rows)


def _bt_fit(winners: np.ndarray, losers: np.ndarray, n_items: int) -> np.ndarray:
    import choix

    theta = choix.ilsr_pairwise(n_items, list(zip(winners.tolist(), losers.tolist())), alpha=BT_ALPHA)
    return theta - theta.mean()


def bradley_terry(main: pd.DataFrame, labels: list[str], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    index = {lab: i for i, lab in enumerate(labels)}
    win = main["chosen_run"].map(index).to_numpy()
    lose = np.where(main["chosen_run"] == main["run_a"], main["run_b"].map(index), main["run_a"].map(index))
    theta = _bt_fit(win, lose, len(labels))
    items = np.array(sorted(main["item"].unique()))
    by_item = {it: np.flatnonzero(main["item"].to_numpy() == it) for it in items}
    rng = np.random.default_rng(seed)
    boots = np.empty((n_boot, len(labels)))
    for b in range(n_boot):
        rows = np.concatenate([by_item[it] for it in items[rng.integers(0, len(items), len(items))]])
        boots[b] = _bt_fit(win[rows], lose[rows], len(labels))
    lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
    df = pd.DataFrame({"run": labels, "bt_log_strength": theta, "bt_lo": lo, "bt_hi": hi})
    df["bt_rank"] = df["bt_log_strength"].rank(ascending=False, method="min").astype(int)
    return df.sort_values("bt_rank").reset_index(drop=True)


# --- figures and the section -------------------------------------------------------------------------------------------


def _save(fig, data: pd.DataFrame, out: Path, name: str) -> None:
    """NAME.png / NAME.pdf / NAME.csv, each written atomically (bench.atomic)."""
    import matplotlib.pyplot as plt

    atomic_write(out / f"{name}.png", lambda tmp: fig.savefig(tmp, format="png", dpi=200, bbox_inches="tight"))
    atomic_write(out / f"{name}.pdf", lambda tmp: fig.savefig(tmp, format="pdf", bbox_inches="tight"))
    plt.close(fig)
    atomic_write_text(data.to_csv(index=False), out / f"{name}.csv")


def _figures(pref: pd.DataFrame, bt: pd.DataFrame, out: Path, title: str) -> list[str]:
    from bench.report import figures

    figures.style()
    import matplotlib.pyplot as plt

    def whiskers(v, lo, hi):  # a percentile interval need not contain the point estimate: never a negative whisker
        return [np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)]

    d = pref.iloc[::-1]
    fig, ax = plt.subplots(figsize=(figures.FULL_WIDTH / 2 + 0.5, 0.42 * len(d) + 1.0))
    y = np.arange(len(d))
    ax.barh(y, d["rate"], color=figures.COLORS[0], height=0.55)
    ax.errorbar(d["rate"], y + 0.12, xerr=whiskers(d["rate"], d["wilson_lo"], d["wilson_hi"]), fmt="none",
                ecolor="black", capsize=2, lw=0.8, label="Wilson (binomial)")
    ax.errorbar(d["rate"], y - 0.12, xerr=whiskers(d["rate"], d["boot_lo"], d["boot_hi"]), fmt="none",
                ecolor=figures.COLORS[1], capsize=2, lw=0.8, label="bootstrap over images")
    ax.axvline(0.5, color="grey", lw=0.6, ls="--")
    ax.set_yticks(y, d["run"])
    ax.set_xlim(0, 1)
    ax.set_xlabel("preference rate (share of comparisons won), 95% CI")
    ax.set_title(title)
    ax.legend(loc="lower right", frameon=False)
    _save(fig, pref, out, "userstudy_preference")
    d = bt.iloc[::-1]
    fig, ax = plt.subplots(figsize=(figures.FULL_WIDTH / 2 + 0.5, 0.42 * len(d) + 1.0))
    y = np.arange(len(d))
    ax.errorbar(d["bt_log_strength"], y, xerr=whiskers(d["bt_log_strength"], d["bt_lo"], d["bt_hi"]),
                fmt="o", color=figures.COLORS[2], capsize=2, lw=0.8)
    ax.axvline(0, color="grey", lw=0.6, ls="--")
    ax.set_yticks(y, d["run"])
    ax.set_xlabel("Bradley-Terry log-strength (mean 0), 95% bootstrap CI over images")
    ax.set_title(title)
    _save(fig, bt, out, "userstudy_bradley_terry")
    return ["userstudy_preference", "userstudy_bradley_terry"]


def _fmt_ci(v, lo, hi) -> str:
    return "" if pd.isna(v) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def analyse(study_dir: str | Path, *, max_attention_failures: int = 0, exclude: tuple[str, ...] = (),
            n_boot: int = 1000, seed: int = 0, out: str | Path | None = None) -> dict:
    """Write STUDY/analysis/ (or ``out``): analysis.json, CSVs, figures, userstudy.md and userstudy.html.
    Returns {"md": path, "html": path, "json": path, ...}."""
    from bench.report.study_report import to_html, to_markdown

    study_dir = Path(study_dir)
    study = load(study_dir)
    if n_boot < 1:
        raise StudyError(f"--n-boot {n_boot}: expected a positive number of resamples")
    main, raters, rule = counted_votes(study_dir, study, max_attention_failures, tuple(exclude))
    if main.empty:
        n = len(raters)
        raise StudyError(f"{study_dir}: no votes to analyse ({n} rater(s) invited, "
                         f"{int(raters['excluded'].sum()) if n else 0} excluded)")
    labels = [r["label"] for r in study["runs"]]
    pref = preference(main, labels, n_boot, seed)
    pairs = pairwise(main, study)
    bt = bradley_terry(main, labels, n_boot, seed)
    out = Path(out) if out else study_dir / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    kept = raters[~raters["excluded"]]
    pooled = kept["consistent"].sum() / kept["repeats"].sum() if kept["repeats"].sum() else np.nan
    scripted = sorted(raters.loc[raters["scripted"] & ~raters["excluded"], "rater"])
    title = f"user study {study['name']}"
    figs = _figures(pref, bt, out, title)

    d = study["design"]
    blocks = [("h2", f"User study: {study['name']} (dataset {study['dataset']})")]
    if scripted:
        blocks.append(("warn", (f"SYNTHETIC votes: rater(s) {', '.join(scripted)} are scripted, not people; the "
                               f"numbers show that the pipeline works, not which model people prefer.")))
    blocks += [
        ("p", (f"Test set {study['source']['test_set']}: {len(study['items'])} test images, runs "
              f"{', '.join(labels)}; {'every pair of runs' if d['pairs'] == 'all' else 'each run against ' + d['baseline']}"
              f", crop {d['crop']}, reference {d['reference']}; {len(study['trials'])} trials, "
              f"{len(study['attention'])} attention checks, ~{d['repeat_fraction']:.0%} repeated with sides swapped; "
              f"seed {study['seed']}.")),
        ("p", (f"{len(raters)} rater(s) invited, {int(raters['excluded'].sum())} excluded ({rule}); {len(main)} votes "
              f"counted (first presentations of the raters kept). Pooled consistency on repeats: "
              f"{'n/a' if pd.isna(pooled) else f'{pooled:.3f}'}.")),
        ("h3", "Preference rate and Bradley-Terry ranking"),
        ("table", pref.merge(bt, on="run").sort_values("bt_rank").assign(
            **{"rate [Wilson 95%]": lambda t: [_fmt_ci(*r) for r in zip(t["rate"], t["wilson_lo"], t["wilson_hi"])],
               "rate [bootstrap over images]": lambda t: [_fmt_ci(*r) for r in zip(t["rate"], t["boot_lo"],
                                                                                 t["boot_hi"])],
               "BT log-strength [95%]": lambda t: [_fmt_ci(*r) for r in zip(t["bt_log_strength"], t["bt_lo"],
                                                                           t["bt_hi"])]})
         [["bt_rank", "run", "comparisons", "wins", "rate [Wilson 95%]", "rate [bootstrap over images]",
           "BT log-strength [95%]"]]),
        ("img", figs[0]), ("img", figs[1]),
        ("h3", "Pairwise"),
        ("table", pairs.assign(**{"rate_a [Wilson 95%]": [_fmt_ci(*r) for r in zip(pairs["rate_a"], pairs["wilson_lo"],
                                                                                    pairs["wilson_hi"])]})
         [["run_a", "run_b", "n", "wins_a", "rate_a [Wilson 95%]", "p_binomial"]]),
        ("h3", "Raters"),
        ("table", raters[["rater", "scripted", "done", "total", "attention_failed", "attention_seen", "repeats",
                          "consistency", "left_share", "median_rt_s", "excluded", "reason"]]),
        ("p", ("Preference rate = share of a run's comparisons it won (first presentations only). Wilson CIs treat "
              "comparisons as independent; the bootstrap resamples test images. Bradley-Terry: choix I-LSR, "
              f"alpha={BT_ALPHA}, log-strengths centred to mean 0. Consistency = same run chosen on a repeat shown "
              "with the sides swapped; left_share = share of 'left' answers.")),
    ]
    md = atomic_write_text(to_markdown(blocks), out / "userstudy.md")
    page = atomic_write_text(to_html(blocks, title, out), out / "userstudy.html")
    for name, df in (("preference", pref), ("pairwise", pairs), ("bradley_terry", bt), ("raters", raters)):
        atomic_write_text(df.to_csv(index=False), out / f"{name}.csv")
    record = {"study": study["name"], "dataset": study["dataset"], "exclusion_rule": rule,
              "max_attention_failures": max_attention_failures, "exclude": sorted(exclude),
              "excluded": {r.rater: r.reason for r in raters.itertuples() if r.excluded},
              "scripted_raters": scripted, "n_votes_counted": len(main), "n_boot": n_boot, "seed": seed,
              "bt_alpha": BT_ALPHA, "pooled_consistency": None if pd.isna(pooled) else float(pooled),
              "preference": json.loads(pref.to_json(orient="records")),
              "pairwise": json.loads(pairs.to_json(orient="records")),
              "bradley_terry": json.loads(bt.to_json(orient="records")),
              "raters": json.loads(raters.to_json(orient="records"))}
    js = atomic_write_text(json.dumps(record, indent=1) + "\n", out / "analysis.json")
    return {"md": md, "html": page, "json": js, "preference": pref, "pairwise": pairs, "bradley_terry": bt,
            "raters": raters, "rule": rule}
