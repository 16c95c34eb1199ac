"""Evaluation into the store (issue 7 §2): image table, multi-GT FR view, tiled inference, evaluate."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
import torch

from bench.errors import StoreError
from bench.store import Store
from bench.store.images import register_images
from bench.store.views import connect


def _score(image_id, ref_id, metric, score, config="c1", status="ok", lower_better=False, when=0):
    return {"image_id": image_id, "ref_id": ref_id, "metric": metric, "config_hash": config, "metric_config": "{}",
            "score": score, "status": status, "error": None, "lower_better": lower_better, "random_init": False,
            "input_h": 8, "input_w": 8, "input_policy": "native", "batch_size": 1, "seconds": 0.0, "device": "cpu",
            "dtype": "float32", "pyiqa_version": "x", "torch_version": "x", "run_id": "fixture",
            "written_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=when)}


def _img(image_id, role, item, label=None, gt_index=None, **model):
    return {"image_id": image_id, "path": f"/x/{image_id}.png", "role": role, "test_set": "t", "item": item,
            "group": item, "gt_index": gt_index, "label": label, **model}


def test_multigt_average_equals_hand_computation(tmp_path):
    """Item g1 has 3 effective Positives (+ a Negative and the original, which are no references),
    item g2 has 2; the view averages an SR output's FR score over exactly its item's Positives."""
    store = Store(tmp_path / "s")
    model = {"run_name": "amo", "arch": "swinir", "sampling": "amo", "iteration": 20, "checkpoint_sha256": "ab" * 32,
             "weights": "ema"}
    register_images(store, [
        _img("sr1", "sr_output", "g1", **model), _img("sr2", "sr_output", "g2", **model),
        _img("p1", "gt", "g1", "Positive", 1), _img("p2", "gt", "g1", "Positive", 2), _img("p4", "gt", "g1", "Positive", 4),
        _img("n3", "gt", "g1", "Negative", 3), _img("o1", "gt", "g1", "Original", 0),
        _img("q1", "gt", "g2", "Positive", 1), _img("q3", "gt", "g2", "Positive", 3),
    ])
    rows = [_score("sr1", "p1", "psnr", 20.0), _score("sr1", "p2", "psnr", 23.0), _score("sr1", "p4", "psnr", 29.0),
            _score("sr1", "n3", "psnr", 99.0), _score("sr1", "o1", "psnr", 99.0),  # not references: ignored
            _score("sr2", "q1", "psnr", 30.0), _score("sr2", "q3", "psnr", 31.0),
            _score("sr2", "q3", "psnr", 1.0, when=-5),  # an older duplicate of the same key: not counted
            _score("sr1", None, "niqe", 5.5, lower_better=True), _score("p1", None, "niqe", 3.0, lower_better=True),
            _score("p2", None, "niqe", 4.0, lower_better=True), _score("p4", None, "niqe", 8.0, lower_better=True)]
    store.write_scores(rows, "fixture", 0, 0)
    con = connect(store)
    fr = con.execute("SELECT item, score, n_refs, n_refs_expected, complete FROM eval_fr_multigt "
                     "WHERE metric = 'psnr' ORDER BY item").fetchall()
    assert fr == [("g1", pytest.approx((20 + 23 + 29) / 3), 3, 3, True), ("g2", pytest.approx(30.5), 2, 2, True)]
    # the per-GT rows stay in the store: nothing was averaged on disk
    assert con.execute("SELECT count(*) FROM eval_scores WHERE metric = 'psnr'").fetchone()[0] == 7
    gold = con.execute("SELECT item, score, n_refs FROM eval_gold WHERE metric = 'niqe'").fetchall()
    assert gold == [("g1", pytest.approx(5.0), 3)]
    joined = con.execute("SELECT kind, item, metric, score, run_name, iteration FROM runs_eval ORDER BY kind, item").fetchall()
    assert joined == [("FR", "g1", "psnr", pytest.approx(24.0), "amo", 20), ("FR", "g2", "psnr", pytest.approx(30.5), "amo", 20),
                      ("NR", "g1", "niqe", 5.5, "amo", 20)]


def test_multigt_marks_an_item_with_a_missing_reference_score_incomplete(tmp_path):
    store = Store(tmp_path / "s")
    register_images(store, [_img("sr1", "sr_output", "g1", run_name="r", checkpoint_sha256="c", weights="ema"),
                            _img("p1", "gt", "g1", "Positive", 1), _img("p2", "gt", "g1", "Positive", 2)])
    store.write_scores([_score("sr1", "p1", "psnr", 20.0), _score("sr1", "p2", "psnr", None, status="error")],
                       "fixture", 0, 0)
    row = connect(store).execute("SELECT score, n_refs, n_refs_expected, complete FROM eval_fr_multigt").fetchone()
    assert row == (20.0, 1, 2, False)


def test_register_images_is_idempotent_and_validates(tmp_path):
    store = Store(tmp_path / "s")
    rows = [_img("a", "gt", "g1", "HR")]
    assert register_images(store, rows) is not None
    assert register_images(store, [{**rows[0], "eval_run_id": "another run"}]) is None
    assert connect(store).execute("SELECT count(*) FROM images").fetchone()[0] == 1
    with pytest.raises(StoreError, match="role 'sr'"):
        register_images(store, [_img("b", "sr", "g1")])
    with pytest.raises(StoreError, match="field 'item' is empty"):
        register_images(store, [_img("b", "gt", "")])


def test_views_exist_on_an_empty_store(tmp_path):
    con = connect(Store(tmp_path / "s"))
    for view in ("images", "eval_fr_multigt", "eval_gold", "runs_eval"):
        assert con.execute(f"SELECT count(*) FROM {view}").fetchone()[0] == 0


def test_query_reads_the_image_views_through_the_read_only_store(tmp_path, capsys):
    """`iqa-study query` confines reads to the store (read-only prefix): the image table must be read
    through it too, including from a store path with a quote in it."""
    from bench.cli import main

    store = Store(tmp_path / "it's a store")
    register_images(store, [_img("sr1", "sr_output", "g1", run_name="r", checkpoint_sha256="c", weights="ema"),
                            _img("gt1", "gt", "g1", label="Positive", gt_index=1)])
    assert main(["query", "--store", str(store.root), "--json",
                 "SELECT role, count(*) AS n FROM images GROUP BY role ORDER BY role"]) == 0
    out = capsys.readouterr().out
    assert '"role":"gt"' in out.replace(" ", "") and '"role":"sr_output"' in out.replace(" ", "")


# --- tiled inference --------------------------------------------------------------------------------------------------


def _tiny_rrdb():
    from sr_training.archs import build_generator
    from sr_training.config import ArchConfig

    torch.manual_seed(0)
    return build_generator(ArchConfig(type="rrdb", size="tiny", scale=4)).eval()


def test_tiled_equals_untiled_when_the_tile_covers_the_image():
    from sr_training.infer import upscale

    net = _tiny_rrdb()
    lr = torch.rand(1, 3, 20, 17, generator=torch.Generator().manual_seed(1))
    whole = upscale(net, lr, 4)
    assert whole.shape == (1, 3, 80, 68)
    assert (upscale(net, lr, 4, tile=24, overlap=8) - whole).abs().max() <= 1e-4
    assert (upscale(net, lr, 4, tile=20, overlap=8) - whole).abs().max() <= 1e-4


def test_tiles_are_placed_where_they_belong():
    """A per-pixel model (1x1 conv + pixel shuffle) gives the same output however the LR is tiled,
    so any misplaced or mis-weighted tile shows up."""
    from sr_training.infer import upscale

    torch.manual_seed(0)
    pointwise = torch.nn.Sequential(torch.nn.Conv2d(3, 48, 1), torch.nn.PixelShuffle(4), torch.nn.Sigmoid()).eval()
    lr = torch.rand(1, 3, 19, 23, generator=torch.Generator().manual_seed(2))
    whole = upscale(pointwise, lr, 4)
    for tile, overlap in [(8, 3), (5, 0), (16, 15), (7, 2)]:
        assert (upscale(pointwise, lr, 4, tile=tile, overlap=overlap) - whole).abs().max() < 1e-6, (tile, overlap)


# --- evaluate -----------------------------------------------------------------------------------------------------------


def _suite_checkpoint(path, iteration=7, name="tiny_rrdb_upos"):
    import json

    net = _tiny_rrdb()
    ema = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    cfg = {"name": name, "arch": {"type": "rrdb", "size": "tiny", "scale": 4}, "sampling": {"strategy": "upos"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"iteration": iteration, "net_g": net.state_dict(), "ema": ema, "config": json.dumps(cfg)}, path)
    return ema


def _hggt_test_set(base):
    from PIL import Image

    from tests.hggt_fixture import make_hggt

    labs = {"A": ["Positive", "Negative", "Positive", "Similar"], "B": ["Positive", "Negative", "Similar", "Similar"],
            "C": ["Negative", "Negative", "Positive", "Positive"]}
    root = make_hggt(base, {"g1": labs, "g2": labs}, size=32, batch=None)
    (root / "Blind_LR").mkdir()
    for stem in ("g1", "g2"):
        Image.open(root / "images" / "original" / f"{stem}.png").resize((8, 8), Image.Resampling.BICUBIC).save(
            root / "Blind_LR" / f"{stem}.png")
    return root


def test_evaluate_joins_each_output_to_its_run_and_checkpoint_and_rerun_adds_no_row(tmp_path):
    from bench.scoring.images import ImageRef
    from sr_training.evaluate import evaluate, load_test_set
    from sr_training.infer import load_rgb

    ckpt = tmp_path / "runs" / "tiny_rrdb_upos" / "checkpoints" / "iter_00000007.pt"
    ema = _suite_checkpoint(ckpt)
    root = _hggt_test_set(tmp_path / "test")
    ts = load_test_set(root, "fixture")
    # effective labels: 01 Positive (2 of 3), 02 Negative, 03 Positive (2 of 3), 04 Similar (2 of 3)
    assert [(g.gt_index, g.label) for g in ts.items[0].gts] == [(0, "Original"), (1, "Positive"), (2, "Negative"),
                                                                 (3, "Positive"), (4, "Similar")]
    fr = "ref_id" in ImageRef.__dataclass_fields__
    store = Store(tmp_path / "store")
    evaluate(ckpt, root, store, metrics="entropy,psnr" if fr else "entropy", test_name="fixture", progress=False)
    con = connect(store)
    rows = con.execute("""
        SELECT i.item, i.path, i.run_name, i.run_dir, i.iteration, i.checkpoint_sha256, i.weights, s.score
        FROM images i JOIN scores_raw s ON s.image_id = i.image_id AND s.metric = 'entropy'
        WHERE i.role = 'sr_output' ORDER BY i.item""").fetchall()
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert [(r[0], r[2], r[3], r[4], r[5], r[6]) for r in rows] == [
        (g, "tiny_rrdb_upos", str(ckpt.parent.parent.resolve()), 7, sha, "ema") for g in ("g1", "g2")]
    # the registered PNG is the EMA model's output on the fixed LR, computed here independently
    net = _tiny_rrdb()
    net.load_state_dict(ema)
    for item, path, *_ in rows:
        with torch.no_grad():
            expected = (net(load_rgb(root / "Blind_LR" / f"{item}.png")).clamp(0, 1) * 255).round()
        assert torch.equal(load_rgb(path) * 255, expected.float()) or (load_rgb(path) * 255 - expected).abs().max() < 0.51
    # gold standard: the NR score of every effective Positive (01 and 03 of each group)
    gold = con.execute("SELECT item, n_refs FROM eval_gold WHERE metric = 'entropy' ORDER BY item").fetchall()
    assert gold == [("g1", 2), ("g2", 2)]
    if fr:
        multigt = con.execute("SELECT item, n_refs, complete FROM eval_fr_multigt WHERE metric = 'psnr'").fetchall()
        assert sorted(multigt) == [("g1", 2, True), ("g2", 2, True)]

    def counts():
        return (con.execute("SELECT count(*) FROM read_parquet(?)", [str(store.root / "images" / "*.parquet")]).fetchone()[0],
                con.execute("SELECT count(*) FROM scores_raw").fetchone()[0])

    before = counts()
    evaluate(ckpt, root, store, metrics="entropy,psnr" if fr else "entropy", test_name="fixture", progress=False)
    assert counts() == before


def test_evaluate_refuses_a_pickle_payload_without_running_it(tmp_path):
    from bench.errors import StudyError
    from sr_training.infer import load_model

    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pt"
    torch.save({"iteration": 1, "ema": Payload()}, bad)
    with pytest.raises(StudyError, match="evil.pt"):
        load_model(bad)
    assert not marker.exists()


def test_folder_test_set_matches_hr_by_name_and_checks_sizes(tmp_path):
    from PIL import Image

    from bench.errors import StudyError
    from sr_training.evaluate import evaluate, load_test_set

    for sub, size in (("lr_blind_x4", 8), ("hr", 32)):
        (tmp_path / "set" / sub).mkdir(parents=True)
        for name in ("a", "b"):
            Image.new("RGB", (size, size), (10, 20, 30)).save(tmp_path / "set" / sub / f"{name}.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "set" / "lr_blind_x4" / "c.png")  # no HR: no reference
    ts = load_test_set(tmp_path / "set")
    assert [(it.item, [g.label for g in it.gts]) for it in ts.items] == [("a", ["HR"]), ("b", ["HR"]), ("c", [])]
    Image.new("RGB", (30, 32)).save(tmp_path / "set" / "hr" / "b.png")
    ckpt = tmp_path / "m.pt"
    _suite_checkpoint(ckpt)
    with pytest.raises(StudyError, match=r"hr/b.png: reference is 30x32, the SR output of b.png is 32x32"):
        evaluate(ckpt, tmp_path / "set", Store(tmp_path / "s"), metrics="entropy", progress=False)


def test_evaluate_cli_on_real_set5_psnr_equals_pyiqa_direct(tmp_path, monkeypatch):
    """Real Set5 images (HR + HGGT blind x4 LR; the two smallest, for speed) through the shipped test-set
    YAML and the CLI: each stored PSNR (multi-GT view, one reference) equals pyiqa's psnr called directly
    on the written PNG and the HR, crop 4, RGB."""
    import shutil

    import pyiqa

    from bench.cli import main
    from sr_training.infer import load_rgb
    from tests.conftest import REPO, shared_path

    set5 = shared_path("set5")
    root = tmp_path / "set5"
    for sub in ("hr", "lr_blind_x4"):
        (root / sub).mkdir(parents=True)
        for name in ("bird.png", "butterfly.png"):
            shutil.copy(set5 / sub / name, root / sub / name)
    ckpt = tmp_path / "m.pt"
    _suite_checkpoint(ckpt)
    store = tmp_path / "store"
    monkeypatch.setenv("SET5_ROOT", str(root))
    assert main(["evaluate", "--checkpoint", str(ckpt), "--test", str(REPO / "data_manifests" / "eval_set5.yaml"),
                 "--store", str(store), "--metrics", "psnr"]) == 0
    rows = connect(Store(store)).execute("""
        SELECT f.item, f.path, r.ref_path, f.score, f.n_refs, f.test_set FROM eval_fr_multigt f
        JOIN eval_refs r USING (test_set, item) WHERE f.metric = 'psnr' ORDER BY f.item""").fetchall()
    assert [(r[0], r[5]) for r in rows] == [("bird", "set5"), ("butterfly", "set5")]
    direct = pyiqa.create_metric("psnr", device="cpu", crop_border=4, test_y_channel=False)
    for item, sr, hr, score, n_refs, _ in rows:
        assert n_refs == 1
        assert score == pytest.approx(float(direct(load_rgb(sr), load_rgb(hr))), abs=1e-6), item
