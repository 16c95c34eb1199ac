"""Which store, runs and versions stand behind a report."""

from __future__ import annotations

import json

from bench.store import Store
from bench.store.views import connect


def provenance(store: Store) -> dict:
    """Store, runs (oldest first; none when the store has no readable runs part: the view then has
    only its ``run_id`` placeholder column) and datasets."""
    con = connect(store)
    cols = {r[0] for r in con.execute("DESCRIBE runs").fetchall()}
    runs = con.execute("SELECT * FROM runs" + (" ORDER BY started_at" if "started_at" in cols else "")).df()
    datasets = con.execute("SELECT dataset, any_value(synthetic) AS synthetic, count(*) AS n_pairs, "
                           "list(DISTINCT manifest_id) AS manifests FROM pairs GROUP BY dataset").df()
    return {"store": str(store.root.resolve()), "runs": json.loads(runs.to_json(orient="records")),
            "datasets": json.loads(datasets.to_json(orient="records"))}
