"""DuckDB over a store: named views, and the agreement definitions in one place.

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
* 95% CIs: Wilson score interval, z = 1.959964, with n = n_decided for both accuracies and
  n = n_voted (pairs, not votes: votes within a pair are not independent) for vote_agreement.
* Only pairs where both images have an ``ok`` score for the metric configuration count.
"""

from __future__ import annotations

import duckdb

from bench.store import eval_views
from bench.store.layout import Store

Z95 = 1.959963984540054


def _wilson(p: str, n: str, bound: str) -> str:
    op = "-" if bound == "lo" else "+"
    return (
        f"CASE WHEN {n} > 0 THEN (({p}) + {Z95}^2/(2*{n}) {op} {Z95}*sqrt(({p})*(1-({p}))/{n} + {Z95}^2/(4*{n}*{n})))"
        f" / (1 + {Z95}^2/{n}) END"
    )


def connect(store: Store, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(database)
    con.execute(f"CREATE OR REPLACE VIEW scores_raw AS SELECT * FROM read_parquet('{store.score_glob()}', union_by_name=true)")
    con.execute("""
        CREATE OR REPLACE VIEW scores AS
        SELECT * FROM scores_raw
        QUALIFY row_number() OVER (PARTITION BY image_id, metric, config_hash
                                   ORDER BY (status = 'ok') DESC, written_at DESC) = 1
    """)
    if store.has_pairs():
        con.execute(f"""
            CREATE OR REPLACE VIEW pairs AS
            SELECT * FROM read_parquet('{store.pairs_glob()}', union_by_name=true)
            QUALIFY row_number() OVER (PARTITION BY dataset, pair_id ORDER BY manifest_id) = 1
        """)
    else:
        con.execute("""CREATE OR REPLACE VIEW pairs AS SELECT * FROM (SELECT
            ''::VARCHAR pair_id, ''::VARCHAR dataset, ''::VARCHAR split, ''::VARCHAR "group", ''::VARCHAR image_a,
            ''::VARCHAR image_b, 0::BIGINT votes_a, 0::BIGINT votes_b, ''::VARCHAR pref, ''::VARCHAR image_a_id,
            ''::VARCHAR image_b_id, ''::VARCHAR manifest_id, false synthetic) WHERE false""")
    con.execute("""
        CREATE OR REPLACE VIEW pair_scores AS
        SELECT p.dataset, p.split, p."group", p.pair_id, p.manifest_id, p.synthetic, p.pref, p.votes_a, p.votes_b,
               sa.metric, sa.config_hash, sa.lower_better,
               sa.score AS score_a, sb.score AS score_b,
               CASE WHEN sa.lower_better THEN -1 ELSE 1 END AS sign,
               CASE WHEN sign * sa.score > sign * sb.score THEN 'a'
                    WHEN sign * sa.score < sign * sb.score THEN 'b' ELSE 'tie' END AS metric_pref
        FROM pairs p
        JOIN scores sa ON sa.image_id = p.image_a_id AND sa.status = 'ok'
        JOIN scores sb ON sb.image_id = p.image_b_id AND sb.status = 'ok'
                       AND sb.metric = sa.metric AND sb.config_hash = sa.config_hash
    """)
    strict = "avg(CASE WHEN metric_pref = pref THEN 1.0 ELSE 0.0 END) FILTER (WHERE pref <> 'tie')"
    half = ("avg(CASE WHEN metric_pref = pref THEN 1.0 WHEN metric_pref = 'tie' THEN 0.5 ELSE 0.0 END)"
            " FILTER (WHERE pref <> 'tie')")
    votes = ("sum(CASE metric_pref WHEN 'a' THEN votes_a WHEN 'b' THEN votes_b ELSE (votes_a + votes_b) / 2.0 END)"
             " FILTER (WHERE votes_a IS NOT NULL) / nullif(sum(votes_a + votes_b) FILTER (WHERE votes_a IS NOT NULL), 0)")
    con.execute(f"""
        CREATE OR REPLACE VIEW agreement AS
        WITH g AS (
            SELECT dataset, split, metric, config_hash, bool_or(synthetic) AS synthetic,
                   count(*) AS n_pairs,
                   count(*) FILTER (WHERE pref <> 'tie') AS n_decided,
                   count(*) FILTER (WHERE votes_a IS NOT NULL) AS n_voted,
                   count(*) FILTER (WHERE metric_pref = 'tie') AS n_metric_ties,
                   {strict} AS strict_acc, {half} AS tie_half_acc, {votes} AS vote_agreement
            FROM pair_scores GROUP BY ALL
        )
        SELECT *,
               {_wilson('strict_acc', 'n_decided', 'lo')} AS strict_ci_lo,
               {_wilson('strict_acc', 'n_decided', 'hi')} AS strict_ci_hi,
               {_wilson('tie_half_acc', 'n_decided', 'lo')} AS tie_half_ci_lo,
               {_wilson('tie_half_acc', 'n_decided', 'hi')} AS tie_half_ci_hi,
               {_wilson('vote_agreement', 'n_voted', 'lo')} AS vote_ci_lo,
               {_wilson('vote_agreement', 'n_voted', 'hi')} AS vote_ci_hi
        FROM g
    """)
    con.execute(f"CREATE OR REPLACE VIEW runs AS SELECT * FROM read_parquet('{store.root / 'runs'}/*.parquet', union_by_name=true)"
                if any((store.root / "runs").glob("*.parquet")) else "CREATE OR REPLACE VIEW runs AS SELECT ''::VARCHAR run_id WHERE false")
    for name in store.study_tables():
        con.execute(f"CREATE OR REPLACE VIEW study_{name} AS "
                    f"SELECT * FROM read_parquet('{store.root / 'study' / name}/*.parquet', union_by_name=true)")
    eval_views.register(con, store)  # images, runs_eval, eval_fr_multigt (evaluated SR models, contract C4)
    return con


AGREEMENT_COLUMNS = ["dataset", "split", "metric", "config_hash", "synthetic", "n_pairs", "n_decided", "n_voted",
                     "n_metric_ties", "strict_acc", "strict_ci_lo", "strict_ci_hi", "tie_half_acc", "tie_half_ci_lo",
                     "tie_half_ci_hi", "vote_agreement", "vote_ci_lo", "vote_ci_hi"]


def agreement(store: Store, only: list[tuple[str, str]] | None = None):
    """The agreement table as a DataFrame; ``only`` restricts it to some (dataset, split) keys."""
    df = connect(store).execute("SELECT * FROM agreement").df()
    if only:
        keep = set(only)
        df = df[[(d, s) in keep for d, s in zip(df["dataset"], df["split"])]]
    return df[AGREEMENT_COLUMNS].sort_values(["dataset", "split", "strict_acc"], ascending=[True, True, False]).reset_index(drop=True)
