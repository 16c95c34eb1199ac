"""HGGT's data path: full-image degradation, co-located crops, the training-pair queue, resume."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.errors import StudyError
from sr_training.data.multigt import MultiGTDataset, collate
from sr_training.data.pipeline import DataPipeline, hggt_queue_size
from sr_training.data.queue import PairQueue
from tests.hggt_fixture import make_hggt

P, S, N = "Positive", "Similar", "Negative"
GROUPS = {f"000{i}-0-0": {"A": [P, S, N, N], "B": [P, S, N, S], "C": [S, S, N, N]} for i in range(1, 5)}


def _batch(ids, size=8):
    """Samples whose every tensor encodes the sample id, so alignment can be checked after shuffling."""
    ids = torch.tensor(ids)
    fill = (ids.float() / 255).view(-1, 1, 1, 1)
    return {"lr": fill.expand(-1, 3, size // 4, size // 4).clone(),
            "gts": fill.view(-1, 1, 1, 1, 1).expand(-1, 5, 3, size, size).clone(),
            "labels": ids.view(-1, 1).expand(-1, 5).clone(), "index": ids.clone()}


def _ids(out):
    ids = out["index"].tolist()
    assert out["labels"][:, 0].tolist() == ids
    assert (out["lr"][:, 0, 0, 0] * 255).round().long().tolist() == ids
    assert (out["gts"][:, 4, 2, -1, -1] * 255).round().long().tolist() == ids
    return ids


def test_queue_returns_fresh_batches_until_full_then_random_old_samples():
    q, gen = PairQueue(6, "cpu"), torch.Generator().manual_seed(0)
    pushed, returned = [], []
    for it in range(12):
        ids = [2 * it, 2 * it + 1]
        out = _ids(q.push_pop(_batch(ids), gen))
        pushed += ids
        if it < 3:  # not full yet: the incoming batch itself is trained on (and stays in the pool)
            assert out == ids
        else:
            assert not set(out) & set(ids)  # the incoming batch waits in the pool
            returned += out
    in_queue = sorted(q.buf["index"].tolist())
    assert sorted(returned + in_queue) == pushed  # nothing lost or duplicated once full
    batches_mixed = sum(out_pair[0] // 2 != out_pair[1] // 2 for out_pair in zip(returned[::2], returned[1::2]))
    assert batches_mixed >= 5  # most returned batches pair samples degraded in different iterations


def test_queue_size_must_be_a_multiple_of_the_batch():
    with pytest.raises(StudyError, match=r"queue_size=5 must be a multiple of data.batch_size=2"):
        PairQueue(5).push_pop(_batch([0, 1]), torch.Generator())


def test_hggt_queue_sizes():
    assert hggt_queue_size("swinir", "one_stage") == 160
    assert hggt_queue_size("rrdb", "two_stage") == 180
    assert hggt_queue_size("rrdb", "one_stage") == 144


@pytest.fixture()
def hggt_root(tmp_path):
    make_hggt(tmp_path, GROUPS, size=64)
    return str(tmp_path)


def test_dataset_yields_full_flipped_stacks(hggt_root):
    ds = MultiGTDataset(hggt_root, gt_size=32, seed=0)
    items = [ds[(0, it)] for it in range(8)]
    assert all(it["gts"].shape == (5, 3, 64, 64) for it in items)
    flipped = [torch.equal(it["gts"], items[0]["gts"].flip(-1)) for it in items]
    same = [torch.equal(it["gts"], items[0]["gts"]) for it in items]
    assert all(f or s for f, s in zip(flipped, same)) and any(flipped)  # hflip of the whole stack, nothing else
    assert MultiGTDataset(hggt_root, gt_size=32, crop=True)[(0, 0)]["gts"].shape == (5, 3, 32, 32)


def test_collate_refuses_mixed_sizes():
    a = {"gts": torch.zeros(5, 3, 64, 64), "labels": torch.zeros(5, dtype=torch.long), "index": 0}
    b = {"gts": torch.zeros(5, 3, 48, 64), "labels": torch.zeros(5, dtype=torch.long), "index": 1}
    with pytest.raises(StudyError, match=r"mixes GT sizes"):
        collate([a, b])


def _smooth_stack(b, size, seed):
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(b, 3, size // 8, size // 8, generator=g), size=(size, size), mode="bicubic",
                         align_corners=False).clamp(0, 1)
    base = (base * 255).round() / 255
    return {"gts": base[:, None].expand(-1, 5, -1, -1, -1).clone(), "labels": torch.zeros(b, 5, dtype=torch.long),
            "index": torch.arange(b)}


def test_full_original_is_degraded_then_cropped_co_located():
    batch = _smooth_stack(2, 128, seed=0)
    pipe = DataPipeline("one_stage", 4, 32, queue_size=0, seed=0)
    for it in range(4):
        trace = []
        out = pipe.next_batch(batch, it, trace)
        assert trace[0] == {"op": "degrade_input", "size": (128, 128)}  # the full original, not a crop
        assert out["lr"].shape == (2, 3, 8, 8) and out["gts"].shape == (2, 5, 3, 32, 32)
        # the GT crop sits inside the original, at 4x the LR crop's position
        full = batch["gts"][:, 0]
        hits = [(t, l) for t in range(0, 97, 4) for l in range(0, 97, 4)
                if torch.equal(full[..., t:t + 32, l:l + 32], out["gts"][:, 0])]
        assert hits
        ref = F.interpolate(out["gts"][:, 0], size=(8, 8), mode="area")
        t, l = hits[0]
        shifted = F.interpolate(full[..., (t + 32) % 96:(t + 32) % 96 + 32, (l + 32) % 96:(l + 32) % 96 + 32],
                                size=(8, 8), mode="area")
        assert (out["lr"] - ref).abs().mean() < 0.5 * (out["lr"] - shifted).abs().mean()  # LR and GT co-located


def test_crop_before_degrade_is_an_explicit_shortcut():
    batch = _smooth_stack(2, 32, seed=1)
    trace = []
    out = DataPipeline("two_stage", 4, 32, 0, 0, crop_before_degrade=True).next_batch(batch, 0, trace)
    assert trace[0]["size"] == (32, 32) and out["lr"].shape == (2, 3, 8, 8)
    with pytest.raises(StudyError, match="crop_before_degrade: expected 16px crops"):
        DataPipeline("two_stage", 4, 16, 0, 0, crop_before_degrade=True).next_batch(batch, 0)


def test_resume_is_bit_identical_and_checkpoint_loads_weights_only():
    batches = [_smooth_stack(2, 32, seed=s) | {"index": torch.tensor([2 * s, 2 * s + 1])} for s in range(7)]
    a = DataPipeline("two_stage", 4, 16, queue_size=4, seed=5)
    outs, saved = [], None
    for it, b in enumerate(batches):
        if it == 3:
            buf = io.BytesIO()
            torch.save(a.state_dict(), buf)
            saved = buf.getvalue()
        outs.append(a.next_batch(b, it))
    state = torch.load(io.BytesIO(saved), weights_only=True)
    assert state["queue"]["gts"].dtype == torch.uint8 and state["queue"]["ptr"] == 4  # exact 8-bit, 4x smaller
    r = DataPipeline("two_stage", 4, 16, queue_size=4, seed=5)
    r.load_state_dict(state)
    for it in range(3, 7):
        o = r.next_batch(batches[it], it)
        for k in ("lr", "gts", "labels", "index"):
            assert torch.equal(o[k], outs[it][k]), (it, k)
    fresh = DataPipeline("two_stage", 4, 16, queue_size=4, seed=5)
    assert not torch.equal(fresh.next_batch(batches[3], 3)["index"], outs[3]["index"])  # the queue state matters
    with pytest.raises(StudyError, match="resume with the same queue size"):
        DataPipeline("two_stage", 4, 16, queue_size=8, seed=5).load_state_dict(state)


def test_pipeline_batches_are_quantised_and_seeded():
    batch = _smooth_stack(2, 64, seed=2)
    x = DataPipeline("two_stage", 4, 32, 0, seed=0).next_batch(batch, 7)["lr"]
    assert torch.equal(x, DataPipeline("two_stage", 4, 32, 0, seed=0).next_batch(batch, 7)["lr"])
    assert not torch.equal(x, DataPipeline("two_stage", 4, 32, 0, seed=0).next_batch(batch, 8)["lr"])
    assert torch.equal(x, (x * 255).round() / 255) and np.isfinite(x.numpy()).all()


def test_trainer_checkpoint_carries_the_queue_for_a_bit_identical_resume(tmp_path, monkeypatch):
    from pathlib import Path

    from sr_training.config import load_config
    from sr_training.data.synthetic import build_synthetic_hggt
    from sr_training.trainer import Trainer

    root = build_synthetic_hggt(tmp_path / "hggt", groups_per_photo=1, size=64)
    monkeypatch.setenv("SYNTH_HGGT_ROOT", str(root))
    smoke = Path(__file__).resolve().parents[1] / "sr_training" / "configs" / "smoke_rrdb_upos.yaml"
    cfg = load_config(smoke, ["sampling.strategy=original", "loss.gan=0", "loss.perceptual=0", "data.gt_size=32",
                              "data.batch_size=2", "data.queue_size=2"])
    tr = Trainer(cfg, tmp_path / "run", "cpu")
    assert tr.pipeline.queue.size == 2
    batches = [collate([tr.dataset[(i, it)] for i in (2 * it, 2 * it + 1)]) for it in range(3)]
    tr.step(batches[0], 0)  # fills the queue (2 = one batch); iterations 1, 2 draw from it
    path = tr.save(1)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["pipeline"]["queue"]["ptr"] == 2 and ckpt["pipeline"]["queue"]["gts"].shape == (2, 5, 3, 32, 32)
    straight = [tr.step(batches[it], it)["l1"] for it in (1, 2)]
    after = {k: v.clone() for k, v in tr.net_g.state_dict().items()}
    tr.load(path)  # weights, optimiser and the queue go back to iteration 1
    assert [tr.step(batches[it], it)["l1"] for it in (1, 2)] == straight
    assert all(torch.equal(after[k], v) for k, v in tr.net_g.state_dict().items())


def test_config_queue_size_is_checked_before_training(tmp_path, monkeypatch):
    from pathlib import Path

    from sr_training.config import load_config

    monkeypatch.setenv("SYNTH_HGGT_ROOT", str(tmp_path))
    smoke = Path(__file__).resolve().parents[1] / "sr_training" / "configs" / "smoke_swinir_amo.yaml"
    assert DataPipeline.from_config(load_config(smoke, ["data.batch_size=8"]), "cpu").queue.size == 160
    with pytest.raises(StudyError, match=r"queue_size=160 \(HGGT default\) must be a multiple of data.batch_size=12"):
        DataPipeline.from_config(load_config(smoke, ["data.batch_size=12"]), "cpu")
    assert DataPipeline.from_config(load_config(smoke, ["data.batch_size=12", "data.queue_size=0"]), "cpu").queue.size == 0
