"""Beyond the paper: a learned combination of metric scores that predicts the human choice.

Model: logistic regression without intercept on standardised, orientation-adjusted score
differences d_m = sign_m * (s_m(a) - s_m(b)), scaled by their standard deviation (no centring),
so P(a > b) = sigmoid(f(a) - f(b)) with the per-image score f(x) = sum_m w_m * sign_m * s_m(x) / sd_m.
The fitted model is therefore a *scorer* for single images (``EnsembleScorer``).

Evaluation: GroupKFold over ``group`` (source image), so no source image is in both the
training and the test fold; held-out strict accuracy is reported next to the best single
metric on the same pairs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from bench import provenance
from bench.errors import StudyError
from bench.metrics.table import get
from bench.store import Store
from bench.atomic import atomic_write_text
from bench.study.outcomes import outcomes
from bench.study.phases import key_of


@dataclass
class EnsembleScorer:
    metrics: list[str]
    signs: list[int]
    scale: list[float]  # sd of each metric's oriented score difference on the training pairs
    coef: list[float]
    key: str
    cv_strict_acc: float
    n_pairs: int

    def image_score(self, raw: dict[str, float]) -> float:
        """f(x) from one image's raw metric scores (keys: metric names)."""
        return float(sum(w * s * raw[m] / sd for m, s, sd, w in zip(self.metrics, self.signs, self.scale, self.coef)))

    def score_store(self, store: Store) -> pd.DataFrame:
        from bench.store.views import connect

        wide = connect(store).execute(
            f"PIVOT (SELECT image_id, metric, score FROM scores WHERE status = 'ok' AND metric IN "
            f"({', '.join(repr(m) for m in self.metrics)})) ON metric USING first(score)").df().dropna()
        wide["ensemble"] = [self.image_score(r) for r in wide[self.metrics].to_dict("records")]
        return wide[["image_id", "ensemble"]]

    def save(self, path: Path) -> Path:
        return atomic_write_text(json.dumps(asdict(self), indent=1), path)

    @classmethod
    def load(cls, path: str | Path) -> "EnsembleScorer":
        return cls(**json.loads(Path(path).read_text()))


def _design(store: Store, metrics: list[str] | None, datasets, split):
    long = outcomes(store, datasets=datasets, split=split, metrics=metrics)
    long["diff"] = long["sign"] * (long["score_a"] - long["score_b"])
    X = long.pivot_table(index=["dataset", "pair_id"], columns="metric", values="diff", aggfunc="first").dropna()
    correct = long.pivot_table(index=["dataset", "pair_id"], columns="metric", values="correct", aggfunc="first")
    meta = long.drop_duplicates(["dataset", "pair_id"]).set_index(["dataset", "pair_id"]).loc[X.index]
    y = (meta["pref"] == "a").astype(int).to_numpy()
    groups = (meta.index.get_level_values("dataset") + "/" + meta["group"].astype(str)).to_numpy()
    return X, y, groups, correct.loc[X.index, X.columns]


def _fit(X: np.ndarray, y: np.ndarray, C: float):
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(fit_intercept=False, C=C, max_iter=1000).fit(X / scale, y)
    return scale, model


def ensemble(store: Store, *, metrics: list[str] | None = None, datasets: list[str] | None = None,
             split: str | None = None, n_splits: int = 5, C: float = 1.0) -> tuple[str, pd.DataFrame, EnsembleScorer]:
    X, y, groups, correct = _design(store, metrics, datasets, split)
    names = list(X.columns)
    if len(names) < 2:
        raise StudyError(f"ensemble: needs at least 2 scored metrics on the same pairs, found {names}")
    if len(np.unique(y)) < 2:
        raise StudyError("ensemble: the selected pairs have only one preferred side; cannot fit")
    n_groups = len(np.unique(groups))
    k = min(n_splits, n_groups)
    if k < 2:
        raise StudyError(f"ensemble: needs at least 2 groups for grouped cross-validation, found {n_groups}")
    key = key_of("ensemble", names, datasets, split, k, C, len(X))
    pred = np.full(len(y), -1)
    fold_of = np.full(len(y), -1)
    Xv = X.to_numpy()
    for fold, (tr, te) in enumerate(GroupKFold(n_splits=k).split(Xv, y, groups)):
        if set(groups[tr]) & set(groups[te]):
            raise AssertionError("GroupKFold leaked a group across train and test")
        scale, model = _fit(Xv[tr], y[tr], C)
        pred[te] = model.predict(Xv[te] / scale)
        fold_of[te] = fold
    held_out = (pred == y).astype(int)
    single = correct.mean(axis=0).sort_values(ascending=False)
    summary = pd.DataFrame([{"model": "ensemble (grouped CV)", "strict_acc": held_out.mean(), "n_pairs": len(y)}] +
                           [{"model": m, "strict_acc": a, "n_pairs": len(y)} for m, a in single.items()])
    summary["ensemble_key"] = key
    summary["n_folds"] = k
    summary["created_at"] = provenance.now()
    scale, model = _fit(Xv, y, C)
    scorer = EnsembleScorer(metrics=names, signs=[get(m).sign for m in names], scale=[float(s) for s in scale],
                            coef=[float(c) for c in model.coef_[0]], key=key, cv_strict_acc=float(held_out.mean()),
                            n_pairs=int(len(y)))
    predictions = pd.DataFrame({"dataset": X.index.get_level_values(0), "pair_id": X.index.get_level_values(1),
                                "group": groups, "fold": fold_of, "y": y, "pred": pred, "ensemble_key": key})
    store.write_study_table("ensemble_summary", key, summary)
    store.write_study_table("ensemble_cv", key, predictions)
    scorer.save(store.root / "models" / f"ensemble-{key}.json")
    return key, summary, scorer
