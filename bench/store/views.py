"""DuckDB over a store: named views, and the agreement definitions in one place.

Views (``connect``):

* ``scores_raw``: every row of every readable score part (bad parts are skipped and reported,
  ``bench.store.parts``). ``scores``: one row per key (image_id, ref_id, metric, config_hash) -
  ref_id is the reference's content hash for full-reference metrics, NULL for no-reference ones -
  preferring an ``ok`` row, then the newest ``written_at`` (then run_id, for a full order).
* ``pairs_all``: every registered manifest row, with ``kind`` ('human' | 'inferred'; missing =
  'human') and ``current``: true for the row of the newest registration of its (dataset, pair_id)
  and of its (dataset, unordered pair of image ids) (``registered_at`` desc, files without it last,
  then ``manifest_id``; ``bench.store.layout``). ``pairs``: current rows only, so one image pair
  counts once however many manifests registered it.
* ``pair_scores`` (current pairs) / ``pair_scores_all`` (every registration): pairs joined to the
  ``ok`` no-reference scores of both images by content hash (image ids, never path strings);
  full-reference rows (ref_id not null) never enter pair views.
* ``agreement``: per (dataset, split, metric, config_hash) over current pairs, excluding HGGT
  pairs of kind 'inferred' (no annotator compared them) unless ``connect(include_inferred=True)``.
  ``agreement_parts`` holds its additive sums per (manifest_id, current, kind, ...), so any filter
  (a manifest, inferred pairs in or out) is a sum over a small table; ``agreement()`` caches it in
  STORE/cache/ keyed by the state of the score and pair parts (``bench.store.cache``).

Definitions (every number can be recomputed from the raw tables):

* human preference ``pref`` (pairs table): 'a' if votes_a > votes_b, 'b' if fewer, else 'tie'
  (HGGT: the effective three-annotator label).
* metric preference: orientation-adjusted scores s = sign * score (sign = -1 for lower-is-better
  metrics, from the ``lower_better`` recorded with each score); 'a' if s_a > s_b, 'b' if s_a < s_b,
  else 'tie'. Raw scores are never modified.
* Over pairs with pref != 'tie' (n_decided):
  strict_acc   = share with metric preference == pref (a metric tie is wrong);
  tie_half_acc = same, a metric tie counting 0.5 (LPIPS 2AFC convention).
* Over all pairs with votes (n_voted): vote_agreement = sum of votes for the side the metric
  favours (a metric tie takes half of the pair's votes) / sum of all votes.
* 95% CIs, pairs as the independent units (z = 1.959964):
  strict_acc: Wilson score interval with n = n_decided (a Bernoulli proportion);
  tie_half_acc: normal interval with the sample variance of the per-pair values {0, 0.5, 1}
  (not a Bernoulli proportion, so not Wilson);
  vote_agreement: a ratio of sums, normal interval with the delta-method (ratio estimator)
  variance sum((y_i - R x_i)^2) / (n (n-1) xbar^2), y_i = votes for the metric's side, x_i = votes.
  Intervals are clipped to [0, 1]. An undefined interval (one pair: no variance; no votes or no
  decided pairs: no estimate) is NULL, never [0, 0]. The study (bench.study) reports
  group-bootstrap CIs instead (undefined, NaN, with fewer than two groups).
* Only pairs where both images have an ``ok`` score for the metric configuration count.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import duckdb
import pyarrow as pa

from bench.store import eval_views
from bench.store.layout import CURRENT_SQL, SCORE_SCHEMA, Store, current_scores_sql
from bench.store.parts import PartList
from bench.store.sql import empty_select, read_parquet, read_parts

Z95 = 1.959963984540054

PAIRS_EMPTY = pa.schema([
    ("pair_id", pa.string()), ("dataset", pa.string()), ("split", pa.string()), ("group", pa.string()),
    ("image_a", pa.string()), ("image_b", pa.string()), ("votes_a", pa.int64()), ("votes_b", pa.int64()),
    ("pref", pa.string()), ("image_a_id", pa.string()), ("image_b_id", pa.string()), ("manifest_id", pa.string()),
    ("synthetic", pa.bool_()), ("root", pa.string()), ("kind", pa.string()),
    ("registered_at", pa.timestamp("us", tz="UTC")),
])

# Additive sums per group: every agreement number (and its CI) is a function of sums, so filters can
# be applied after aggregation (and the sums cached). y = votes for the metric's side, x = all votes.
_VOTES_FOR = "CASE metric_pref WHEN 'a' THEN votes_a WHEN 'b' THEN votes_b ELSE (votes_a + votes_b) / 2.0 END"
AGREEMENT_PARTS_SQL = f"""
    SELECT manifest_id, current, kind, dataset, split, metric, config_hash,
           bool_or(synthetic) AS synthetic,
           count(*) AS n_pairs,
           count(*) FILTER (WHERE pref <> 'tie') AS n_decided,
           count(*) FILTER (WHERE votes_a IS NOT NULL) AS n_voted,
           count(*) FILTER (WHERE metric_pref = 'tie') AS n_metric_ties,
           count(*) FILTER (WHERE pref <> 'tie' AND metric_pref = pref) AS n_right,
           count(*) FILTER (WHERE pref <> 'tie' AND metric_pref = 'tie') AS n_tied_decided,
           sum({_VOTES_FOR}) FILTER (WHERE votes_a IS NOT NULL)::DOUBLE AS v_y,
           sum(votes_a + votes_b) FILTER (WHERE votes_a IS NOT NULL)::DOUBLE AS v_x,
           sum(({_VOTES_FOR})^2) FILTER (WHERE votes_a IS NOT NULL)::DOUBLE AS v_yy,
           sum((votes_a + votes_b)^2) FILTER (WHERE votes_a IS NOT NULL)::DOUBLE AS v_xx,
           sum(({_VOTES_FOR}) * (votes_a + votes_b)) FILTER (WHERE votes_a IS NOT NULL)::DOUBLE AS v_xy
    FROM pair_scores_all GROUP BY ALL
"""


def _wilson(p: str, n: str, bound: str) -> str:
    op = "-" if bound == "lo" else "+"
    return (
        f"CASE WHEN {n} > 0 THEN (({p}) + {Z95}^2/(2*{n}) {op} {Z95}*sqrt(({p})*(1-({p}))/{n} + {Z95}^2/(4*{n}*{n})))"
        f" / (1 + {Z95}^2/{n}) END"
    )


def _clip(expr: str) -> str:
    """``expr`` clipped to [0, 1]; NULL (undefined: one pair, no votes) or NaN stays NULL (DuckDB's
    least/greatest skip NULLs, which turned an undefined bound into 0 or 1)."""
    return f"CASE WHEN ({expr}) IS NULL OR isnan({expr}) THEN NULL ELSE least(1.0, greatest(0.0, {expr})) END"


def agreement_sql(where: str = "current") -> str:
    """The agreement table from ``agreement_parts`` rows matching ``where`` (SQL over its columns)."""
    # tie-half per-pair values x in {0, .5, 1}: sum x = right + .5 ties, sum x^2 = right + .25 ties
    # (greatest() skips NULLs, so the n = 1 case must be NULL outside it, not inside)
    half_var = ("CASE WHEN n_decided > 1 THEN greatest(0.0, (n_right + 0.25*n_tied_decided - n_decided*tie_half_acc^2)"
                " / (n_decided - 1)) END")
    ratio_var = ("greatest(0.0, v_yy - 2*vote_agreement*v_xy + vote_agreement^2*v_xx) "
                 "/ nullif(n_voted * (n_voted - 1) * (v_x / n_voted)^2, 0)")
    return f"""
        WITH s AS (
            SELECT dataset, split, metric, config_hash, bool_or(synthetic) AS synthetic,
                   sum(n_pairs)::BIGINT AS n_pairs, sum(n_decided)::BIGINT AS n_decided,
                   sum(n_voted)::BIGINT AS n_voted, sum(n_metric_ties)::BIGINT AS n_metric_ties,
                   sum(n_right)::BIGINT AS n_right, sum(n_tied_decided)::BIGINT AS n_tied_decided,
                   sum(v_y) AS v_y, sum(v_x) AS v_x, sum(v_yy) AS v_yy, sum(v_xx) AS v_xx, sum(v_xy) AS v_xy
            FROM agreement_parts WHERE {where} GROUP BY ALL
        ), g AS (
            SELECT *, n_right / nullif(n_decided, 0) AS strict_acc,
                   (n_right + 0.5*n_tied_decided) / nullif(n_decided, 0) AS tie_half_acc,
                   v_y / nullif(v_x, 0) AS vote_agreement
            FROM s
        )
        SELECT dataset, split, metric, config_hash, synthetic, n_pairs, n_decided, n_voted, n_metric_ties,
               strict_acc, tie_half_acc, vote_agreement,
               {_wilson('strict_acc', 'n_decided', 'lo')} AS strict_ci_lo,
               {_wilson('strict_acc', 'n_decided', 'hi')} AS strict_ci_hi,
               {_clip(f'tie_half_acc - {Z95}*sqrt({half_var} / n_decided)')} AS tie_half_ci_lo,
               {_clip(f'tie_half_acc + {Z95}*sqrt({half_var} / n_decided)')} AS tie_half_ci_hi,
               {_clip(f'vote_agreement - {Z95}*sqrt({ratio_var})')} AS vote_ci_lo,
               {_clip(f'vote_agreement + {Z95}*sqrt({ratio_var})')} AS vote_ci_hi
        FROM g
    """


def _kind_filter(include_inferred: bool) -> str:
    return "" if include_inferred else " AND kind <> 'inferred'"


# Built connections, one per (store, include_inferred), valid while the store's files are unchanged
# (``Store.state``): rebuilding the ~20 views reads every part's footer list and took ~0.1 s at each of ~30 calls
# of a demo run. The views name the parts (their rows are read at query time), so only which parts exist and how
# they look matters: a part added, removed, rewritten or damaged changes the state. Callers get a cursor
# (``DuckDBPyConnection.cursor``): the views are shared, while what a caller registers (``con.register``,
# temporary views) stays on its own cursor.
_BUILT: OrderedDict[tuple, tuple[tuple, duckdb.DuckDBPyConnection]] = OrderedDict()
_BUILT_MAX = 8
_LOCK = threading.Lock()


def connect(store: Store, database: str = ":memory:", *, include_inferred: bool = False,
            read_only: bool | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the store's views (``Store.connect``).

    ``read_only`` (default: the store's own ``read_only``): for untrusted SQL (``iqa-study query``). Store files
    are read through a read-only file system confined to the store root (``bench.store.readonly``); after the
    views exist, DuckDB's external access is disabled and the configuration locked, so the SQL cannot
    write, copy over, or read any file, attach databases or install extensions.

    In memory (the default ``database``), the views are built once per state of the store's files and each call
    returns a fresh cursor on them (its own registrations and temporary views; views must not be replaced on it,
    and the suite never does). A database file, and every read-only connection, is built on every call: untrusted
    SQL may replace a view, so its catalog is never shared.
    """
    read_only = store.read_only if read_only is None else read_only
    if read_only or database != ":memory:":
        return _build(store, database, include_inferred, read_only)
    key = (str(store.root.resolve()), include_inferred)
    state = store.state()
    with _LOCK:
        hit = _BUILT.get(key)
        if hit is not None and hit[0] == state:
            _BUILT.move_to_end(key)
            return hit[1].cursor()
    con = _build(store, database, include_inferred, read_only)
    with _LOCK:  # the state seen before the build: a part written during it makes the next call rebuild
        _BUILT[key] = (state, con)
        while len(_BUILT) > _BUILT_MAX:
            _BUILT.popitem(last=False)
    return con.cursor()


def _build(store: Store, database: str, include_inferred: bool, read_only: bool) -> duckdb.DuckDBPyConnection:
    from bench.store import cache

    con = duckdb.connect(database)
    prefix = ""
    if read_only:
        from bench.store.readonly import PROTOCOL, confine

        confine(con, store.root)
        prefix = PROTOCOL
    score_parts, pair_parts = store.score_parts(), store.pair_parts()
    register_pair_scores(con, score_parts, pair_parts, prefix)
    cached = cache.usable_agreement(store, score_parts, pair_parts)
    if cached is not None:
        con.execute(f"CREATE OR REPLACE VIEW agreement_parts AS SELECT * FROM {read_parquet([cached], prefix)}")
    else:
        con.execute(f"CREATE OR REPLACE VIEW agreement_parts AS {AGREEMENT_PARTS_SQL}")
    con.execute(f"CREATE OR REPLACE VIEW agreement AS {agreement_sql('current' + _kind_filter(include_inferred))}")
    runs = store.parts.list("runs")
    con.execute(f"CREATE OR REPLACE VIEW runs AS SELECT * FROM {read_parts(runs.good, prefix)}" if runs.good
                else "CREATE OR REPLACE VIEW runs AS SELECT ''::VARCHAR run_id WHERE false")
    for name in store.study_tables():
        parts = store.parts.list(f"study/{name}")
        if parts.good:
            con.execute(f'CREATE OR REPLACE VIEW "study_{name}" AS SELECT * FROM {read_parts(parts.good, prefix)}')
    eval_views.register(con, store, prefix)  # images, runs_eval, eval_fr_multigt (evaluated SR models, C4)
    store.parts.save()
    if read_only:
        from bench.store.readonly import lock

        lock(con)
    return con


def register_pair_scores(con: duckdb.DuckDBPyConnection, score_parts: PartList, pair_parts: PartList,
                         prefix: str = "", only_keys: str | None = None) -> None:
    """The views ``scores_raw``, ``scores``, ``pairs_all``, ``pairs``, ``pair_scores_all`` and
    ``pair_scores`` over exactly these parts. ``only_keys``: the name of a table of (metric,
    config_hash) rows; score rows of other keys are left out (the agreement cache rebuilds one
    slice of keys at a time: the current-row rule never looks across keys)."""
    have = score_parts.columns()
    extra = "" if "ref_id" in have or not score_parts.good else ", NULL::VARCHAR AS ref_id"
    raw = f"SELECT *{extra} FROM {read_parts(score_parts.good, prefix, SCORE_SCHEMA, one_schema=True)}"
    if only_keys is not None:  # a slice of the (metric, config_hash) keys (bench.store.cache)
        raw = f"SELECT r.* FROM ({raw}) r SEMI JOIN {only_keys} k ON r.metric = k.metric AND r.config_hash = k.config_hash"
    con.execute(f"CREATE OR REPLACE VIEW scores_raw AS {raw}")
    con.execute(f"CREATE OR REPLACE VIEW scores AS {current_scores_sql('scores_raw')}")
    if pair_parts.good:
        cols = pair_parts.columns()
        kind = ", coalesce(kind, 'human') AS kind" if "kind" in cols else ", 'human'::VARCHAR AS kind"
        reg = "" if "registered_at" in cols else ", NULL::TIMESTAMPTZ AS registered_at"
        own = [c for c in ("kind", "current") if c in cols]  # 'current' is the view's own (a part from before the
        rep = f" EXCLUDE ({', '.join(own)})" if own else ""  # reserved-column check must not override it)
        source = f"(SELECT *{rep}{kind}{reg} FROM {read_parts(pair_parts.good, prefix)})"
    else:
        source = empty_select(PAIRS_EMPTY)
    con.execute(f"""
        CREATE OR REPLACE VIEW pairs_all AS
        SELECT *, {CURRENT_SQL} AS current FROM {source}
    """)
    con.execute("CREATE OR REPLACE VIEW pairs AS SELECT * EXCLUDE (current) FROM pairs_all WHERE current")
    # the join is written in two materialised steps (pairs x side a, then side b on image, metric and config):
    # left to itself, the optimizer may join side a to side b on (metric, config) first - a cross product per metric
    con.execute("""
        CREATE OR REPLACE VIEW pair_scores_all AS
        WITH s AS MATERIALIZED (  -- the newest ok row per key (written_at, then run_id), as in ``scores``
            SELECT image_id, metric, config_hash, v.score, v.lower_better FROM (
                SELECT image_id, metric, config_hash,
                       arg_max({'score': score, 'lower_better': lower_better}, {'t': written_at, 'r': run_id}) AS v
                FROM scores_raw WHERE status = 'ok' AND ref_id IS NULL GROUP BY ALL)
        ), a AS MATERIALIZED (
            SELECT p.dataset, p.split, p."group", p.pair_id, p.manifest_id, p.current, p.kind, p.synthetic, p.pref,
                   p.votes_a, p.votes_b, p.image_a_id, p.image_b_id,
                   sa.metric, sa.config_hash, sa.lower_better, sa.score AS score_a
            FROM pairs_all p JOIN s sa ON sa.image_id = p.image_a_id
        )
        SELECT a.*, sb.score AS score_b,
               CASE WHEN a.lower_better THEN -1 ELSE 1 END AS sign,
               CASE WHEN sign * a.score_a > sign * sb.score THEN 'a'
                    WHEN sign * a.score_a < sign * sb.score THEN 'b' ELSE 'tie' END AS metric_pref
        FROM a JOIN s sb ON sb.image_id = a.image_b_id AND sb.metric = a.metric AND sb.config_hash = a.config_hash
    """)
    con.execute("CREATE OR REPLACE VIEW pair_scores AS SELECT * EXCLUDE (current) FROM pair_scores_all WHERE current")


AGREEMENT_COLUMNS = ["dataset", "split", "metric", "config_hash", "synthetic", "n_pairs", "n_decided", "n_voted",
                     "n_metric_ties", "strict_acc", "strict_ci_lo", "strict_ci_hi", "tie_half_acc", "tie_half_ci_lo",
                     "tie_half_ci_hi", "vote_agreement", "vote_ci_lo", "vote_ci_hi"]


def agreement(store: Store, only: list[tuple[str, str]] | None = None, *, manifest_id: str | None = None,
              include_inferred: bool = False):
    """The agreement table as a DataFrame (from the cached sums; built if the store changed).

    ``only`` restricts it to some (dataset, split) keys; ``manifest_id`` to the rows of that
    registration (its own votes, current or not); pairs of kind 'inferred' only with ``include_inferred``.
    """
    from bench.store import cache

    cached = cache.ensure_agreement(store)
    if cached is not None:  # the sums are all it needs: none of the store's other views
        con = duckdb.connect(":memory:")
        con.execute(f"CREATE VIEW agreement_parts AS SELECT * FROM {read_parquet([cached])}")
    else:
        con = connect(store)
    where = ("manifest_id = ?" if manifest_id else "current") + _kind_filter(include_inferred)
    df = con.execute(agreement_sql(where), [manifest_id] if manifest_id else []).df()
    if only:
        keep = set(only)
        df = df[[(d, s) in keep for d, s in zip(df["dataset"], df["split"])]]
    return df[AGREEMENT_COLUMNS].sort_values(["dataset", "split", "strict_acc", "metric"],
                                             ascending=[True, True, False, True]).reset_index(drop=True)
