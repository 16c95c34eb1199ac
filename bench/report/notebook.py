"""Helpers the notebooks call (notebooks/*.ipynb): find the store, pick and filter failures.

Store path rule (``resolve_store``): the notebook's ``STORE`` parameter, else ``$IQA_STUDY_STORE``,
else ``runs/demo/store`` (what ``make demo`` writes). An absolute path is used as is. A relative
path is tried against, in order: the directory ``jupyter lab`` was launched from (``$PWD``, which
the kernel inherits while its working directory is the notebook's folder), the kernel's working
directory, and the repository root. The first existing store wins and is printed; none found is
a one-line error listing every path tried.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import StudyError
from bench.store import Store
from bench.store.views import connect

REPO = Path(__file__).resolve().parents[2]
DEFAULT_STORE = "runs/demo/store"


def resolve_store(store: str | os.PathLike | None = None) -> Path:
    raw = store if store is not None else os.environ.get("IQA_STUDY_STORE") or DEFAULT_STORE
    path = Path(raw).expanduser()
    if path.is_absolute():
        tried = [path]
    else:
        bases = [Path(os.environ["PWD"])] if os.environ.get("PWD") else []
        bases += [Path.cwd(), REPO]
        tried = list(dict.fromkeys(b / path for b in bases))
    for p in tried:
        if (p / "pairs").is_dir() or (p / "scores").is_dir():
            return p.resolve()
    raise StudyError(f"store {str(raw)!r} not found; tried {', '.join(str(p.resolve()) for p in tried)} "
                     "(set STORE in the first cell or $IQA_STUDY_STORE)")


def open_store(store: str | os.PathLike | None = None):
    """(Store, DuckDB connection with the store's views), printing the resolved path."""
    path = resolve_store(store)
    print(f"store: {path}")
    s = Store(path, create=False)
    return s, connect(s)


def with_margin(frame: pd.DataFrame) -> pd.DataFrame:
    """Adds ``margin``: the majority's share of votes, max(a, b) / (a + b); NaN without votes."""
    va, vb = frame["votes_a"].astype(float), frame["votes_b"].astype(float)
    return frame.assign(margin=np.maximum(va, vb) / (va + vb))


def select_pairs(long: pd.DataFrame, pairs: pd.DataFrame, metric: str, *, wrong: bool | None = True,
                 sr_method: str | None = None, min_margin: float = 0.5, max_margin: float = 1.0) -> pd.DataFrame:
    """The decided pairs ``metric`` gets wrong (``wrong=True``), right (False) or all (None),
    optionally only pairs with ``sr_method`` on either side and a majority share of votes in
    [min_margin, max_margin] (pairs without votes pass only the default [0.5, 1.0]); strongest
    human preference first. Columns: the pair's (root, images, votes, methods, ...) and margin."""
    if metric not in set(long["metric"]):
        raise StudyError(f"metric {metric!r} has no scores on these pairs (scored: "
                         f"{', '.join(sorted(long['metric'].unique()))})")
    m = long[(long["metric"] == metric) & long["decided"]]
    if wrong is not None:
        m = m[(m["correct"] == 0) == wrong]
    rows = with_margin(m[["dataset", "pair_id"]].merge(pairs, on=["dataset", "pair_id"]))
    if sr_method is not None:
        if "method_a" not in rows:
            raise StudyError("sr_method: this store's manifests have no method_a/method_b columns")
        known = sorted(set(pairs["method_a"].dropna()) | set(pairs["method_b"].dropna()))  # every pair's, so a
        # real method without failures under this metric is an empty result, not an error
        if sr_method not in known:
            raise StudyError(f"sr_method {sr_method!r}: no such SR method in these pairs (methods: "
                             f"{', '.join(map(str, known)) or 'none'})")
        rows = rows[(rows["method_a"] == sr_method) | (rows["method_b"] == sr_method)]
    in_range = rows["margin"].between(min_margin, max_margin)
    if min_margin <= 0.5 and max_margin >= 1.0:
        in_range |= rows["margin"].isna()
    rows = rows[in_range]
    return rows.sort_values(["margin", "dataset", "pair_id"], ascending=[False, True, True],
                            na_position="last").reset_index(drop=True)


def agreement_matrices(long: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(same-choice share, both-wrong share): metric x metric over the decided pairs both scored."""
    d = long[long["decided"]]
    choice = d.pivot(index=["dataset", "pair_id"], columns="metric", values="metric_pref")
    wrong = d.pivot(index=["dataset", "pair_id"], columns="metric", values="correct").eq(0)
    metrics = list(choice.columns)
    same = pd.DataFrame(index=metrics, columns=metrics, dtype=float)
    both = pd.DataFrame(index=metrics, columns=metrics, dtype=float)
    for a in metrics:
        for b in metrics:
            ok = choice[a].notna() & choice[b].notna()
            same.loc[a, b] = (choice.loc[ok, a] == choice.loc[ok, b]).mean()
            both.loc[a, b] = (wrong.loc[ok, a] & wrong.loc[ok, b]).mean()
    return same, both
