"""User studies: a 2AFC web app comparing evaluated SR models, whose votes flow back into the store.

    design.py    `create`: trials, per-rater schedules (balanced, repeats, attention checks), study.json
    db.py        STUDY/votes.sqlite: raters, schedules, durable idempotent votes
    server.py    `serve`: the page and its JSON API (Starlette + uvicorn), static/ its assets
    analyse.py   `status`, `analyse`: preference rates, Bradley-Terry, consistency, exclusion rule
    export.py    `export`: the votes as a pairs manifest (dataset userstudy:<name>) in the store
    scripted.py  a deterministic scripted rater (demo, tests; its votes are labelled SYNTHETIC)

Commands and the study folder: docs/userstudy.md.
"""

from __future__ import annotations

from pathlib import Path


def demo_study(store, test_set: str, runs: list[str], out: str | Path, *, crop: str = "full",
               reference: str = "hr", seed: int = 0, max_attention_failures: int = 0) -> Path:
    """Create a study of ``runs`` on ``test_set`` in ``out``, let one scripted rater answer it
    (bench.userstudy.scripted.RULE) and analyse it; returns the HTML section
    (OUT/analysis/userstudy.html; userstudy.md next to it). ``reference='hr'`` needs references
    in the test set (use 'none' otherwise). ``out`` must not exist or be empty."""
    from bench.userstudy import analyse, design, scripted

    out = Path(out)
    design.create(store, test_set, list(runs), out, crop=crop, reference=reference, seed=seed)
    scripted.run(out, n_raters=1)
    return Path(analyse.analyse(out, max_attention_failures=max_attention_failures)["html"])
