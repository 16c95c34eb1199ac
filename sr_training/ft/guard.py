"""Reward-hacking guard for FT (beyond the paper, which names exploiting Q as the core risk).

Every ``schedule.val_every`` iterations (and once before the first FT step) the held-out
validation set (``val.dir``: hr/ + ``val.lr_subdir``/) is super-resolved and scored by the base
trainer's validation (8-bit outputs, FR metrics after cropping ``val.crop_border``) with Q (each
reward term), the watched NR metrics (default: the selection's top-ranked metrics other than Q and
its complementary metrics, those available here) and the watched FR metrics (default LPIPS-ST) beside ``val.metrics`` (PSNR, ...): one row per
check in ``val_log.csv``; the rule's inputs and decisions in ``guard_log.csv``.

Rule (GuardRule): with every metric oriented (sign) and divided by its table range,

    flagged(t) = Q_norm(t) > Q_norm(ref)  and  min_m [sign_m * (m(t) - m(ref)) / (hi_m - lo_m)] < -margin

where ref is the check before FT (``reference: start``) or the previous check (``previous``).
``patience`` consecutive flagged checks trip the guard: ``action: stop`` ends the run,
``keep_best`` keeps training. Either way ``checkpoints/best.pt`` holds the adapter of the
unflagged check with the highest Q_norm, and the log says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bench.errors import StudyError
from bench.metrics.table import MetricSpec, get


@dataclass
class Decision:
    iteration: int
    flagged: bool
    streak: int
    tripped: bool
    is_best: bool
    reasons: list[str] = field(default_factory=list)


class GuardRule:
    """The stateful rule; ``state()`` / ``load_state()`` hold plain types only (weights_only checkpoints)."""

    def __init__(self, cfg, specs: dict[str, MetricSpec]):
        self.cfg, self.specs = cfg, specs
        self.history: list[dict] = []
        self.streak = 0
        self.best_iter: int | None = None
        self.best_q: float | None = None

    def _delta(self, name: str, now: float, ref: float) -> float:
        spec = self.specs[name]
        return spec.normalised(now - ref)

    def update(self, iteration: int, q_norm: float, watched: dict[str, float]) -> Decision:
        row = {"iter": int(iteration), "q_norm": float(q_norm), **{k: float(v) for k, v in watched.items()}}
        if not self.history:  # the first check is the reference, never a candidate
            self.history.append(row)
            return Decision(iteration, False, 0, False, False, ["reference check"])
        ref = self.history[0] if self.cfg.reference == "start" else self.history[-1]
        self.history.append(row)
        q_up = q_norm > ref["q_norm"]
        worse = {}
        for name, value in watched.items():
            d = self._delta(name, value, ref[name])
            if d < -self.cfg.margin:
                worse[name] = d
        flagged = bool(q_up and worse)
        self.streak = self.streak + 1 if flagged else 0
        reasons = []
        if flagged:
            reasons = [f"Q_norm {ref['q_norm']:.4f}->{q_norm:.4f} while " +
                       ", ".join(f"{n} {ref[n]:.4f}->{watched[n]:.4f} ({d:+.4f} of its range)" for n, d in worse.items())]
        is_best = not flagged and (self.best_q is None or q_norm > self.best_q)
        if is_best:
            self.best_iter, self.best_q = int(iteration), float(q_norm)
        return Decision(iteration, flagged, self.streak, self.streak >= self.cfg.patience, is_best, reasons)

    def state(self) -> dict:
        return {"history": [dict(r) for r in self.history], "streak": self.streak,
                "best_iter": -1 if self.best_iter is None else self.best_iter,
                "best_q": float("nan") if self.best_q is None else self.best_q}

    def load_state(self, s: dict) -> None:
        self.history = [dict(r) for r in s["history"]]
        self.streak = int(s["streak"])
        self.best_iter = None if int(s["best_iter"]) < 0 else int(s["best_iter"])
        self.best_q = None if np.isnan(s["best_q"]) else float(s["best_q"])


TOP_WATCHED = 2  # the selection's highest-ranked metrics the guard watches (beside its complementary ones)


def watched_metrics(guard_cfg, selection: str | None, reward_names: list[str]) -> tuple[list[MetricSpec], list[str]]:
    """(NR specs to watch, notes): explicit ``guard.metrics`` must be available. Without them the guard
    watches, from the selection, the TOP_WATCHED highest-ranked NR metrics other than Q (the ones that
    agreed best with people: ``best``, then the ranking's order in ``configs``) and the complementary
    metrics, each if available here; the notes say what was watched and what was skipped and why."""
    from bench.metrics.weights import is_available

    notes = []
    if guard_cfg.metrics is not None:
        specs = [get(n) for n in guard_cfg.metrics]
        for s in specs:
            if s.mode != "NR":
                raise StudyError(f"ft.guard.metrics: '{s.name}' is full-reference; list it under ft.guard.fr")
            if not is_available(s):
                raise StudyError(f"ft.guard.metrics: '{s.name}' weights are not available here "
                                 f"(`iqa-study weights status {s.name}`)")
        return specs, notes
    if not selection:
        return [], ["no selection and no ft.guard.metrics: only Q and the FR metrics are watched"]
    from bench.study.select import read_selection

    sel = read_selection(selection)
    # configs: {metric: config_hash} written from the ranking sorted by rank (bench.study.select)
    ranked = [sel["best"]["metric"], sel["sampling_metric"]["metric"], *(sel.get("configs") or {})]
    specs: list[MetricSpec] = []
    top: list[str] = []
    for name in dict.fromkeys(ranked):
        if len(top) == TOP_WATCHED:
            break
        s = get(name)
        if s.name in reward_names or s.mode != "NR":
            continue
        if is_available(s):
            specs.append(s)
            top.append(s.name)
        else:
            notes.append(f"top-ranked metric {s.name} skipped: weights not available here")
    comp = []
    for rec in sel.get("complementary") or []:
        s = get(rec["metric"])
        if s.name in reward_names or s in specs:
            continue
        if is_available(s):
            specs.append(s)
            comp.append(s.name)
        else:
            notes.append(f"complementary metric {s.name} skipped: weights not available here")
    notes.append(f"from {selection}: top-ranked {', '.join(top) or '(none besides Q)'}; "
                 f"complementary {', '.join(comp) or '(none)'}")
    return specs, notes
