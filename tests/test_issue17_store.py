"""Issue 17: one current-row rule. ``eval_scores`` (evaluation tables, compare) picks the row ``scores`` picks.

Old behaviour (before this test): ``eval_scores`` ordered by (ok, written_at) only, so two runs that wrote
the same (image, ref, metric, config) key with the same ``written_at`` gave DuckDB's arbitrary row (measured on this
test's store: the fixture run's 5.0 instead of run 'zz-run''s 9.25); ``scores`` broke the tie by ``run_id``. Now both views are one rule.
"""

from __future__ import annotations

from bench.store.views import connect
from tests.test_compare import IDS, _row, store  # noqa: F401  (the compare fixture: content-hash image ids)


def test_eval_scores_breaks_a_written_at_tie_by_run_id_like_scores(store):  # noqa: F811
    img = IDS["g0upos"]
    # same key and instant as the fixture's row (entropy 5.0, run 'fixture'); run ids 'zz' > 'fixture' > 'aa'
    late, early = _row(img, None, "entropy", 9.25), _row(img, None, "entropy", 1.5)
    late["run_id"], early["run_id"] = "zz-run", "aa-run"
    store.write_scores([early], "aa-run", 0, 0)
    store.write_scores([late], "zz-run", 0, 0)
    con = connect(store)
    q = "SELECT score, run_id FROM {} WHERE image_id = ? AND metric = 'entropy' AND ref_id IS NULL"
    assert con.execute(q.format("scores"), [img]).fetchall() == [(9.25, "zz-run")]
    for _ in range(5):  # not an accident of scan order
        assert connect(store).execute(q.format("eval_scores"), [img]).fetchall() == [(9.25, "zz-run")]
    n = con.execute("SELECT count(*) FROM scores_raw WHERE image_id = ? AND metric = 'entropy'", [img]).fetchone()[0]
    assert n == 3  # all three rows are stored; the rule chooses, nothing is overwritten
