"""Beyond the paper: a learned combination of metric scores that predicts the human choice.

Model: logistic regression without intercept on standardised, orientation-adjusted score
differences d_m = sign_m * (s_m(a) - s_m(b)), scaled by their standard deviation (no centring),
so P(a > b) = sigmoid(f(a) - f(b)) with the per-image score f(x) = sum_m w_m * sign_m * s_m(x) / sd_m.
The fitted model is therefore a *scorer* for single images (``EnsembleScorer``).

Evaluation: GroupKFold over ``group`` (source image), so no source image is in both the
training and the test fold; held-out strict accuracy is reported next to the best single
metric on the same pairs.

Scope (``bench.study.scope``): by default the Phase II metrics on the Phase II pairs, under the
configurations Phase II used (recorded per metric in ``config_hash`` and in the saved scorer).
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
from bench.atomic import atomic_write_text
from bench.errors import StudyError
from bench.metrics.table import get
from bench.store import Store
from bench.study.outcomes import correctness_matrix
from bench.study.phases import key_of
from bench.study.scope import study_scope


def ensemble_model_path(store: Store, key: str) -> Path:
    """Where ensemble ``key``'s fitted scorer lives: STORE/models/ensemble-<key>.json."""
    return store.folder("models") / f"ensemble-{key}.json"


@dataclass
class EnsembleScorer:
    metrics: list[str]
    signs: list[int]
    scale: list[float]  # sd of each metric's oriented score difference on the training pairs
    coef: list[float]
    key: str
    cv_strict_acc: float
    n_pairs: int
    config_hashes: list[str] | None = None  # per metric; None in files written before configs were recorded
    phase2_key: str = ""

    def image_score(self, raw: dict[str, float]) -> float:
        """f(x) from one image's raw metric scores (keys: metric names)."""
        return float(sum(w * s * raw[m] / sd for m, s, sd, w in zip(self.metrics, self.signs, self.scale, self.coef)))

    def score_store(self, store: Store) -> pd.DataFrame:
        from bench.store.views import connect

        if self.config_hashes is None:
            raise StudyError(f"ensemble {self.key}: saved without its metric configurations; re-run `iqa-study ensemble`")
        con = connect(store)
        con.register("_wanted", pd.DataFrame({"metric": self.metrics, "config_hash": self.config_hashes}))
        cols = {r[0] for r in con.execute("DESCRIBE scores").fetchall()}
        nr = "AND ref_id IS NULL" if "ref_id" in cols else ""
        long = con.execute("SELECT image_id, metric, score FROM scores JOIN _wanted USING (metric, config_hash) "
                           f"WHERE status = 'ok' {nr}").df()
        wide = long.pivot(index="image_id", columns="metric", values="score").reindex(columns=self.metrics)
        wide = wide.dropna().reset_index()
        wide["ensemble"] = [self.image_score(r) for r in wide[self.metrics].to_dict("records")]
        return wide[["image_id", "ensemble"]]

    def save(self, path: Path) -> Path:
        return atomic_write_text(json.dumps(asdict(self), indent=1), path)

    @classmethod
    def load(cls, path: str | Path) -> EnsembleScorer:
        return cls(**json.loads(Path(path).read_text()))


def _design(long: pd.DataFrame):
    long = long[long["decided"]].copy()
    long["diff"] = long["sign"] * (long["score_a"] - long["score_b"])
    X = long.pivot(index=["dataset", "pair_id"], columns="metric", values="diff").dropna()
    correct = correctness_matrix(long)
    meta = long.drop_duplicates(["dataset", "pair_id"]).set_index(["dataset", "pair_id"]).loc[X.index]
    y = (meta["pref"] == "a").astype(int).to_numpy()
    groups = meta["source_group"].to_numpy()
    return X, y, groups, correct.loc[X.index, X.columns]


def _fit(X: np.ndarray, y: np.ndarray, C: float):
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(fit_intercept=False, C=C, max_iter=1000).fit(X / scale, y)
    return scale, model


def ensemble(store: Store, *, metrics: list[str] | None = None, datasets: list[str] | None = None,
             split: str | None = None, n_splits: int = 5, C: float = 1.0, phase2_key: str | None = None,
             include_inferred: bool | None = None, pins: dict[str, str] | None = None
             ) -> tuple[str, pd.DataFrame, EnsembleScorer]:
    scope = study_scope(store, metrics=metrics, datasets=datasets, split=split, phase2_key=phase2_key,
                        include_inferred=include_inferred, pins=pins)
    oc = scope.outcomes(store, "ensemble")
    configs = oc.config_map()
    X, y, groups, correct = _design(oc.long)
    names = list(X.columns)
    if len(names) < 2:
        raise StudyError(f"ensemble: needs at least 2 scored metrics on the same pairs, found {names}")
    if len(np.unique(y)) < 2:
        raise StudyError("ensemble: the selected pairs have only one preferred side; cannot fit")
    n_groups = len(np.unique(groups))
    k = min(n_splits, n_groups)
    if k < 2:
        raise StudyError(f"ensemble: needs at least 2 groups for grouped cross-validation, found {n_groups}")
    key = key_of("ensemble", sorted(configs.items()), scope.phase2_key, datasets, split, k, C, len(X),
                 scope.include_inferred)
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
    summary["config_hash"] = summary["model"].map(configs)
    summary["ensemble_key"] = key
    summary["phase2_key"] = scope.phase2_key or ""
    summary["configs"] = json.dumps(configs, sort_keys=True)
    summary["include_inferred"] = scope.include_inferred
    summary["n_folds"] = k
    summary["created_at"] = provenance.now()
    scale, model = _fit(Xv, y, C)
    scorer = EnsembleScorer(metrics=names, signs=[get(m).sign for m in names], scale=[float(s) for s in scale],
                            coef=[float(c) for c in model.coef_[0]], key=key, cv_strict_acc=float(held_out.mean()),
                            n_pairs=len(y), config_hashes=[configs[m] for m in names],
                            phase2_key=scope.phase2_key or "")
    predictions = pd.DataFrame({"dataset": X.index.get_level_values(0), "pair_id": X.index.get_level_values(1),
                                "group": groups, "fold": fold_of, "y": y, "pred": pred, "ensemble_key": key})
    store.write_study_table("ensemble_summary", key, summary)
    store.write_study_table("ensemble_cv", key, predictions)
    scorer.save(ensemble_model_path(store, key))
    return key, summary, scorer
