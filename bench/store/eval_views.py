"""DuckDB views over evaluated SR models (contract C4); ``register`` is called by views.connect.

* ``images``: the image table (bench.store.images), one row per
  (image_id, role, checkpoint_sha256, weights, test_set, item, gt_index), earliest registration kept.
* ``eval_scores``: score rows keyed by (image_id, ref_id, metric, config_hash) - ref_id is null
  for no-reference metrics - one per key: an ``ok`` row first, then the newest. Defined here from
  ``scores_raw`` so the evaluation never depends on how the study's ``scores`` view dedups.
* ``eval_refs``: the references of each test item: images with role 'gt' and label 'Positive'
  (HGGT effective Positive) or 'HR' (the single HR of a folder test set).
* ``eval_fr_multigt``: the HGGT multi-GT protocol (PosNegGTSR/scripts/metrics/
  calculate_multigt_labeled_*.py): an SR output's full-reference score against every reference of
  its item, averaged per image (``score``); ``n_refs`` scores were found out of ``n_refs_expected``
  references (``complete`` when equal). The average over images is taken by the compare report.
  Per-reference rows stay in ``eval_scores``; nothing here is stored.
* ``eval_gold``: the "Gold standard" (method.md 6): no-reference scores of the references
  themselves, averaged per item.
* ``runs_eval``: "which run, at which iteration, scored what": one row per (SR output, metric,
  config) with the model's provenance, NR scores (``kind`` 'NR') and the per-image multi-GT FR
  averages (``kind`` 'FR') side by side.
* ``runs_eval_summary``: one row per evaluated model and test set (run, arch, sampling, ft_variant,
  iteration, checkpoint_sha256, weights, test_set): ``n_images`` SR outputs, ``mean`` a MAP from
  metric to its mean over the images with an ok score (``mean['niqe']``; a metric scored under
  several configurations appears once per configuration as ``metric@hash8``), ``n_scored`` the
  same MAP of image counts, ``lower_better`` the MAP of directions.
"""

from __future__ import annotations

import duckdb

from bench.store.images import REFERENCE_LABELS
from bench.store.layout import Store

_EMPTY_IMAGES = """SELECT * FROM (SELECT ''::VARCHAR image_id, ''::VARCHAR path, ''::VARCHAR role, ''::VARCHAR test_set,
    ''::VARCHAR item, ''::VARCHAR "group", 0::INTEGER gt_index, ''::VARCHAR label, ''::VARCHAR run_name,
    ''::VARCHAR run_dir, ''::VARCHAR arch, ''::VARCHAR sampling, ''::VARCHAR ft_variant, 0::BIGINT iteration,
    ''::VARCHAR checkpoint_sha256, ''::VARCHAR weights, ''::VARCHAR train_metric, ''::VARCHAR base_sha256,
    ''::VARCHAR eval_run_id, now()::TIMESTAMPTZ created_at)
    WHERE false"""

_MODEL = ("i.run_name, i.run_dir, i.arch, i.sampling, i.ft_variant, i.iteration, i.checkpoint_sha256, i.weights, "
          "i.train_metric, i.base_sha256, i.test_set, i.item, i.image_id, i.path")


def register(con: duckdb.DuckDBPyConnection, store: Store, fs_prefix: str = "") -> None:
    # through the store's part list: escaped paths, bad parts skipped, the read-only file system under `query`
    source = store.parquet_source("images", fs_prefix=fs_prefix)
    if source is not None:
        con.execute(f"""
            CREATE OR REPLACE VIEW images AS
            SELECT * FROM (SELECT * FROM {source} UNION ALL BY NAME {_EMPTY_IMAGES})  -- older parts: new columns null
            QUALIFY row_number() OVER (PARTITION BY image_id, role, checkpoint_sha256, weights, test_set, item, gt_index
                                       ORDER BY created_at) = 1
        """)
    else:
        con.execute(f"CREATE OR REPLACE VIEW images AS {_EMPTY_IMAGES}")
    # the one current-row rule of bench.store.views ``scores`` (ok first, newest written_at, then run_id):
    # a copy here lacked the run_id tie-break, so two runs writing one key at the same instant gave an arbitrary row
    con.execute("CREATE OR REPLACE VIEW eval_scores AS SELECT * FROM scores")
    labels = ", ".join(f"'{lab}'" for lab in REFERENCE_LABELS)
    con.execute(f"""
        CREATE OR REPLACE VIEW eval_refs AS
        SELECT DISTINCT test_set, item, "group", image_id AS ref_id, path AS ref_path, gt_index, label
        FROM images WHERE role = 'gt' AND label IN ({labels})
    """)
    con.execute(f"""
        CREATE OR REPLACE VIEW eval_fr_multigt AS
        WITH n AS (SELECT test_set, item, count(*) AS n_refs_expected FROM eval_refs GROUP BY ALL)
        SELECT {_MODEL}, s.metric, s.config_hash, any_value(s.lower_better) AS lower_better,
               avg(s.score) AS score, count(*) AS n_refs, any_value(n.n_refs_expected) AS n_refs_expected,
               count(*) = any_value(n.n_refs_expected) AS complete
        FROM images i
        JOIN eval_refs r ON r.test_set = i.test_set AND r.item = i.item
        JOIN eval_scores s ON s.image_id = i.image_id AND s.ref_id = r.ref_id AND s.status = 'ok'
        JOIN n ON n.test_set = i.test_set AND n.item = i.item
        WHERE i.role = 'sr_output'
        GROUP BY ALL
    """)
    con.execute("""
        CREATE OR REPLACE VIEW eval_gold AS
        SELECT r.test_set, r.item, s.metric, s.config_hash, any_value(s.lower_better) AS lower_better,
               avg(s.score) AS score, count(*) AS n_refs
        FROM eval_refs r JOIN eval_scores s ON s.image_id = r.ref_id AND s.ref_id IS NULL AND s.status = 'ok'
        GROUP BY ALL
    """)
    con.execute(f"""
        CREATE OR REPLACE VIEW runs_eval AS
        SELECT {_MODEL}, 'NR' AS kind, s.metric, s.config_hash, s.lower_better, s.score, s.status, s.error,
               1::BIGINT AS n_refs
        FROM images i JOIN eval_scores s ON s.image_id = i.image_id AND s.ref_id IS NULL
        WHERE i.role = 'sr_output'
        UNION ALL BY NAME
        SELECT run_name, run_dir, arch, sampling, ft_variant, iteration, checkpoint_sha256, weights, train_metric,
               base_sha256, test_set, item, image_id, path, 'FR' AS kind, metric, config_hash, lower_better, score,
               CASE WHEN complete THEN 'ok' ELSE 'incomplete' END AS status,
               CASE WHEN complete THEN NULL ELSE n_refs || ' of ' || n_refs_expected || ' references scored' END AS error,
               n_refs
        FROM eval_fr_multigt
    """)
    con.execute("""
        CREATE OR REPLACE VIEW runs_eval_summary AS
        WITH per AS (
            SELECT run_name, arch, sampling, ft_variant, iteration, checkpoint_sha256, weights, test_set, metric,
                   config_hash, any_value(lower_better) AS lower_better, avg(score) AS mean,
                   count(DISTINCT image_id) AS n
            FROM runs_eval WHERE status = 'ok' GROUP BY ALL),
        keyed AS (
            SELECT *, CASE WHEN count(*) OVER (PARTITION BY checkpoint_sha256, weights, test_set, metric) > 1
                           THEN metric || '@' || left(config_hash, 8) ELSE metric END AS key
            FROM per),
        outputs AS (
            SELECT run_name, arch, sampling, ft_variant, iteration, checkpoint_sha256, weights, test_set,
                   count(DISTINCT image_id) AS n_images
            FROM images WHERE role = 'sr_output' GROUP BY ALL)
        SELECT o.run_name AS run, o.arch, o.sampling, o.ft_variant, o.iteration, o.checkpoint_sha256, o.weights,
               o.test_set, o.n_images,
               map_from_entries(list({'key': k.key, 'value': k.mean} ORDER BY k.key)
                                FILTER (WHERE k.key IS NOT NULL)) AS mean,
               map_from_entries(list({'key': k.key, 'value': k.n} ORDER BY k.key)
                                FILTER (WHERE k.key IS NOT NULL)) AS n_scored,
               map_from_entries(list({'key': k.key, 'value': k.lower_better} ORDER BY k.key)
                                FILTER (WHERE k.key IS NOT NULL)) AS lower_better
        FROM outputs o LEFT JOIN keyed k USING (checkpoint_sha256, weights, test_set)
        GROUP BY ALL
    """)
