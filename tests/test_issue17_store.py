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


def test_folder_table_and_scoring_plan_use_the_same_current_row(store):  # noqa: F811
    """The folder-scoring table (bench.scoring.report.score_table) and the engine's plan
    (plan.stored_status) read raw parts; they follow ``scores``' rule through one SQL fragment.

    Old behaviour: score_table ordered by (ok, written_at) only, so the written_at tie below gave an arbitrary
    one of 9.25 / 1.5 / 5.0 (measured: 5.0, the fixture run's); stored_status took the newest failure by written_at alone."""
    from bench.scoring.images import TRANSIENT, ImageRef
    from bench.scoring.plan import MetricSummary, stored_status
    from bench.scoring.report import score_table

    img = IDS["g0upos"]
    late, early = _row(img, None, "entropy", 9.25), _row(img, None, "entropy", 1.5)
    late["run_id"], early["run_id"] = "zz-run", "aa-run"
    store.write_scores([late], "zz-run", 0, 0)  # the larger run id first: scan order cannot make it win
    store.write_scores([early], "aa-run", 0, 0)
    refs, summaries = [ImageRef(img, "x.png", 64, 64)], [MetricSummary("entropy", config_hash="c1")]
    for _ in range(3):
        assert score_table(store, refs, summaries, ["x.png"])["entropy"].tolist() == [9.25]
    # a key whose rows all failed: the current row is the same-instant failure of the larger run id
    other = IDS["g1upos"]
    fails = [{**_row(other, None, "piqe", None), "status": "error", "error": error, "run_id": run}
             for error, run in ((TRANSIENT + "OSError: busy", "zz-run"), ("ValueError: bad", "aa-run"))]  # zz first
    for row in fails:
        store.write_scores([row], row["run_id"], 0, 0)
    status = stored_status(store, ["c1"])
    assert status[(img, "", "entropy", "c1")] == "ok"
    assert status[(other, "", "piqe", "c1")] == "transient"  # zz-run's failure, not aa-run's


def test_one_place_tells_the_weight_formats_apart():
    """sr_training.checkpoint.checkpoint_kind: what evaluate, FT's base loader and merge each recognised."""
    from sr_training.checkpoint import FT_ADAPTER, PLAIN, TRAINING, checkpoint_kind

    assert checkpoint_kind({"iteration": 3, "ema": {}, "net_g": {}, "config": "{}"}) == TRAINING
    assert checkpoint_kind({"config": "{}", "ema": {}}) == TRAINING   # evaluate's old rule: a malformed checkpoint,
    assert checkpoint_kind({"iteration": 1, "net_g": {}}) == TRAINING  # FT's old rule; neither falls to spandrel
    assert checkpoint_kind({"iteration": 5, "adapter": {}, "ft": {}, "config": "{}"}) == FT_ADAPTER
    assert checkpoint_kind({"conv_first.weight": 0}) == PLAIN and checkpoint_kind([1]) == PLAIN
    assert checkpoint_kind({"ema": {}}) == PLAIN  # a state dict that merely has a module named 'ema'


def test_ft_base_without_an_integer_iteration_is_one_line(tmp_path):
    import pytest
    import torch

    from bench.errors import StudyError
    from sr_training.archs import build_generator
    from sr_training.config import ArchConfig
    from sr_training.ft.lora import load_base

    arch = ArchConfig(type="swinir", size="tiny", scale=4)
    net = build_generator(arch)
    path = tmp_path / "base.pt"
    torch.save({"config": "{}", "ema": net.state_dict()}, path)
    with pytest.raises(StudyError, match=r"field 'iteration' is None, expected an integer"):
        load_base(net, arch, path)


def test_no_module_writes_a_file_but_through_bench_atomic():
    """Every file the suite publishes goes through bench.atomic (write to a hidden temp name, fsync, rename);
    the one exception is appending a row to a run's CSV log (sr_training.csvlog.append_row, append-only
    by design) or to a text log. The scan looks at the real call sites (not only at os.replace)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    direct = re.compile(r"\.write_text\(|\.write_bytes\(|\.savefig\(|torch\.save\(|\.to_parquet\(|pq\.write_table\("
                        r"|(?<!scorer)(?<!self)\.save\((?!buf\b|\))|\.to_csv\((?!sys\.stdout|index=False\))"
                        r"|open\([^)]*['\"][wx]b?\+?['\"]")
    appends = re.compile(r"open\([^)]*['\"]a['\"]")
    offenders, appenders = [], []
    for pkg in ("bench", "sr_training"):
        for p in sorted((root / pkg).rglob("*.py")):
            rel = str(p.relative_to(root))
            if rel == "bench/atomic.py":
                continue
            for i, line in enumerate(p.read_text().splitlines(), 1):
                if "atomic_write" in line or "lambda tmp" in line or re.search(r"open\(tmp\b", line):
                    continue  # the write function handed to the atomic writer
                if direct.search(line):
                    offenders.append(f"{rel}:{i}: {line.strip()}")
                elif appends.search(line):
                    appenders.append(rel)
    assert offenders == []
    assert sorted(set(appenders)) == ["sr_training/csvlog.py", "sr_training/repro/run.py"]  # CSV rows; repro.log


def test_the_latest_study_result_is_one_rule_and_equal_times_never_pick_an_arbitrary_row(tmp_path):
    import pandas as pd
    import pytest

    from bench.errors import StoreError
    from bench.store import Store

    st = Store(tmp_path / "s")
    t0, t1 = pd.Timestamp("2026-01-01", tz="UTC"), pd.Timestamp("2026-01-02", tz="UTC")
    for key, at, best in (("k1", t0, "a"), ("k3", t1, "b"), ("k2", t1, "a"), ("k0", t1, "c")):
        st.write_study_table("phase2_ranking", key, pd.DataFrame({"phase2_key": [key, key], "metric": ["x", "y"],
                                                                  "best": best, "created_at": at}))
    # newest created_at (t1: k3, k2, k0), then the larger key: k3; matching columns narrow it first
    key, rows = st.latest_study("phase2_ranking", "phase2_key")
    assert key == "k3" and list(rows["metric"]) == ["x", "y"]
    assert st.latest_study("phase2_ranking", "phase2_key", best="a")[0] == "k2"
    assert st.latest_study("phase2_ranking", "phase2_key", best="zz") == (None, None)
    assert st.latest_study("phase1_ranking", "phase1_key") == (None, None)
    assert st.has_study("phase2_ranking", "k1") and not st.has_study("phase2_ranking", "k9")
    with pytest.raises(StoreError, match=r"phase2_ranking/k9\.parquet: no such study result"):
        st.read_study("phase2_ranking", "k9")
    for bad in ("../../etc", "a/b", ".hidden", ""):
        with pytest.raises(StoreError, match="expected letters, digits"):
            st.study_path("phase2_ranking", bad)
    # declared folders only; nothing outside bench.store builds a path into a store
    assert st.folder("models") == st.root / "models" and st.folder("models").is_dir()
    with pytest.raises(StoreError, match=r"no store folder 'model' \(declared: pairs, scores"):
        st.folder("model")


def test_no_module_outside_the_store_builds_a_store_path():
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"""store\.root\s*/\s*["'](pairs|scores|runs|study|images|models|sr|cache)["']""")
    found = [f"{p.relative_to(repo)}:{i}" for pkg in ("bench", "sr_training") for p in (repo / pkg).rglob("*.py")
             if "bench/store/" not in p.as_posix()
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, found


def test_connections_are_built_once_per_store_state_and_read_only_is_a_constructor_argument(tmp_path):
    import duckdb
    import pandas as pd
    import pytest

    from bench.errors import StoreError
    from bench.store import Store, views
    from tests.test_store import _store_with

    st = _store_with(tmp_path)
    a = st.connect()
    a.register("mine", pd.DataFrame({"x": [1]}))
    built = views._BUILT[(str(st.root.resolve()), False)][1]
    b = Store(st.root).connect()  # another Store object on the same folder, unchanged files: the same views
    assert views._BUILT[(str(st.root.resolve()), False)][1] is built
    with pytest.raises(duckdb.CatalogException):
        b.execute("SELECT * FROM mine")  # a caller's registration stays on its own cursor
    n = b.execute("SELECT count(*) FROM scores").fetchone()[0]
    st.write_scores([{**r, "image_id": "new-image"} for r in b.execute("SELECT * FROM scores_raw LIMIT 1").df()
                     .to_dict("records")], "r2", 0, 0)
    c = st.connect()  # a new part: rebuilt, and the new row is there
    assert views._BUILT[(str(st.root.resolve()), False)][1] is not built
    assert c.execute("SELECT count(*) FROM scores").fetchone()[0] == n + 1
    assert len(st.current_scores()) == n + 1 and set(st.current_scores("piqe")["metric"]) <= {"piqe"}

    ro = Store(st.root, read_only=True)
    with pytest.raises(StoreError, match="opened read-only; writing scores refused"):
        ro.write_scores([{"image_id": "x"}], "r3", 0, 0)
    with pytest.raises(StoreError, match="opened read-only; writing study table t refused"):
        ro.write_study_table("t", "k", pd.DataFrame({"x": [1]}))
    q = ro.connect()
    assert q.execute("SELECT count(*) FROM scores").fetchone()[0] == n + 1
    with pytest.raises(duckdb.Error):
        q.execute(f"SELECT * FROM read_csv('{tmp_path / 'outside.csv'}')")
    q.execute("CREATE OR REPLACE VIEW scores AS SELECT 1 AS forged")  # untrusted SQL replacing a view ...
    assert ro.connect().execute("SELECT count(*) FROM scores").fetchone()[0] == n + 1  # ... is never shared
    with pytest.raises(StoreError, match="store does not exist"):
        Store(tmp_path / "missing", read_only=True)


def test_scoring_options_are_resolved_and_checked_once_per_run_and_recorded_whole(tmp_path, sample_manifest,
                                                                                 monkeypatch):
    import dataclasses
    import json

    import pytest

    from bench.errors import StudyError
    from bench.manifests import schema
    from bench.metrics.table import select
    from bench.scoring import options as options_mod
    from bench.scoring.engine import score_manifest
    from bench.scoring.options import CPU_PIXEL_CAP, ScoreOptions
    from bench.store import Store

    o = ScoreOptions.resolve(device="cpu", metric_kwargs={"piqe": {"x": 1}})
    assert (o.device, o.workers, o.pixel_cap) == ("cpu", 0, CPU_PIXEL_CAP)  # auto device, workers and cap resolved
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.workers = 3
    with pytest.raises(TypeError):
        o.metric_kwargs["piqe"]["x"] = 2  # read-only all the way down
    assert ScoreOptions.resolve(pixel_cap=0).pixel_cap is None  # 0 = no cap
    for kw, flag in (({"batch_size": 0}, "--batch-size 0: expected an integer >= 1"),
                     ({"workers": -1}, "--workers -1: expected an integer >= 0"),
                     ({"flush_rows": 0}, "--flush-rows 0: expected an integer >= 1")):
        with pytest.raises(StudyError, match=flag):
            ScoreOptions.resolve(**kw)
    with pytest.raises(StudyError, match=r"unknown scoring option\(s\): batchsize \(known: device, workers"):
        ScoreOptions.resolve(batchsize=2)

    calls = []
    real = options_mod.validate_options
    monkeypatch.setattr(options_mod, "validate_options", lambda **kw: (calls.append(kw), real(**kw)))
    m = schema.read(sample_manifest).head(4)
    run, (summary,) = score_manifest(m, select("entropy"), Store(tmp_path / "s"), workers=0, progress=False,
                                     flush_rows=7)
    assert len(calls) == 1 and summary.ok > 0  # once per run (it was four times: CLI, manifest, folder, refs)
    recorded = json.loads(json.dumps(run["config"]))
    assert recorded["flush_rows"] == 7 and recorded["shard"] == "0/1" and recorded["pixel_cap"] == CPU_PIXEL_CAP
    assert set(recorded) >= {f.name for f in dataclasses.fields(ScoreOptions)}  # the whole object is the config
    with pytest.raises(StudyError, match="give ScoreOptions or keywords, not both"):
        score_manifest(m, select("entropy"), Store(tmp_path / "s"), options=o, workers=0)


def test_one_sampler_class_per_strategy_and_the_config_reads_their_facts():
    import typing

    import torch

    from sr_training.config import TrainConfig
    from sr_training.repro.plan import VARIANTS
    from sr_training.sampling import SAMPLERS, build_sampler, choose

    strategies = typing.get_args(TrainConfig.model_fields["sampling"].annotation.__args__[0]
                                 .model_fields["strategy"].annotation)
    assert set(strategies) == set(SAMPLERS)  # the config's schema and the registry name the same strategies
    assert {n for n, c in SAMPLERS.items() if c.needs == "image"} == {"sma", "smp"}
    assert {n for n, c in SAMPLERS.items() if c.needs == "patch"} == {"amo"}
    assert {n for n, c in SAMPLERS.items() if c.positives_only} == {"upos", "smp"}
    # repro scores a training store for exactly the variants whose sampler reads stored image scores
    assert {v.name for v in VARIANTS if v.needs_image_scores()} == {"sma", "smp"}
    labels = torch.tensor([[0, 1, 2, 1, 0], [0, 2, 2, 1, 1]])  # HGGT codes; 1 = Positive
    scores = torch.tensor([[5.0, 1, 1, 1, 1], [5.0, 1, 1, 1, 1]])
    for name in SAMPLERS:
        kw = {"image_scores": scores} if SAMPLERS[name].needs == "image" else (
            {"patch_scores": scores} if SAMPLERS[name].needs == "patch" else {})
        a = choose(name, labels, torch.Generator().manual_seed(3), tau=0.05, **kw)
        b = build_sampler(name, tau=0.05).choose(labels, torch.Generator().manual_seed(3), **kw)
        assert torch.equal(a, b)
        if SAMPLERS[name].positives_only:
            assert bool((labels.gather(1, a[:, None]) == 1).all())
    # without the original (index 0, the best-scored here) AMO and SMA never pick it; others refuse the option
    assert (build_sampler("amo", include_original=False).choose(labels, torch.Generator(), patch_scores=scores) != 0).all()
    assert (build_sampler("sma", 0.05, False).choose(labels, torch.Generator(), image_scores=scores) != 0).all()
    import pytest

    with pytest.raises(ValueError, match="include_original=false: only for sma and amo"):
        build_sampler("upos", include_original=False)


def test_the_crop_grid_scores_a_crop_as_the_engine_does(tmp_path):
    """One metric name, one number: the crop grid's PSNR of a crop is the engine's (FR protocol 'hggt': RGB, border 4
    removed), not pyiqa's default. Measured on this constructed crop (damage only in the border): the old grid's
    value (pyiqa defaults, border included) 16.89 dB; the table's protocol, now also the grid's, 45.10 dB."""
    import numpy as np
    import torch
    from PIL import Image

    from bench import provenance
    from bench.metrics import factory
    from bench.metrics.table import get
    from bench.report.compare import _crop_scores
    from bench.scoring.engine import score_refs
    from bench.scoring.images import ImageRef, content_hash
    from bench.scoring.options import ScoreOptions
    from bench.store import Store

    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    sr = np.clip(ref.astype(int) + rng.integers(-2, 3, ref.shape), 0, 255).astype(np.uint8)
    sr[:4] = 0  # damage only inside the 4-pixel border the protocol removes
    text, notes = _crop_scores({"model": sr}, ref, [])
    paths = {}
    for name, a in (("sr", sr), ("ref", ref)):
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(a).save(paths[name])
    img = ImageRef(content_hash(paths["sr"].read_bytes()), str(paths["sr"]), 64, 64,
                   ref_id=content_hash(paths["ref"].read_bytes()), ref_path=str(paths["ref"]))
    st = Store(tmp_path / "s")
    score_refs([img], [get("psnr")], st, run=provenance.new_run("test", {}),
               options=ScoreOptions.resolve(workers=0, progress=False))
    engine_psnr = float(st.current_scores("psnr")["score"].iloc[0])
    assert f"PSNR {engine_psnr:.2f}" in text["model"], (text, notes)

    def t(a):
        return torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)[None]

    old = float(factory.create(get("psnr"), "cpu")(t(sr), t(ref)))  # what the grid printed before
    print(f"crop-grid PSNR: old (pyiqa defaults) {old:.2f} dB, now (the table's protocol) {engine_psnr:.2f} dB")
    assert old < engine_psnr - 10  # the old number counted the border the table's number leaves out
