"""sr_training: sampling rules, degradations, data, tiny nets learning, resume, DDP, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyiqa
import pytest
import torch

from bench.errors import StudyError
from sr_training.config import load_config
from sr_training.data.degradation import degrade
from sr_training.data.multigt import IterationBatchSampler, MultiGTDataset, collate
from sr_training.sampling import amo_scores, choose, softmax_probs
from sr_training.trainer import Trainer
from tests.hggt_fixture import make_hggt

P, S, N = "Positive", "Similar", "Negative"
SMOKE = Path(__file__).resolve().parents[1] / "sr_training" / "configs"


# --- sampling on hand-built groups --------------------------------------------------------------
LABELS = torch.tensor([[0, 1, 2, 3, 1],   # positives: 1, 4
                       [0, 3, 1, 2, 2],   # positive: 2
                       [0, 1, 1, 1, 1]])  # positives: 1..4


def test_upos_never_picks_a_non_positive_and_is_uniform():
    gen = torch.Generator().manual_seed(0)
    picks = torch.stack([choose("upos", LABELS, gen) for _ in range(4000)])
    assert (LABELS.gather(1, picks.T) == 1).all()
    counts = torch.bincount(picks[:, 0], minlength=5).float() / 4000
    assert counts[1].item() == pytest.approx(0.5, abs=0.03) and counts[4].item() == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ValueError, match="no effective Positive"):
        choose("upos", torch.tensor([[0, 2, 3, 2, 3]]), gen)


def test_softmax_limits():
    scores = torch.tensor([[10.0, 30.0, 20.0, 5.0, 29.0]])
    assert softmax_probs(scores, 1e-6)[0].argmax() == 1 and softmax_probs(scores, 1e-6)[0, 1] == pytest.approx(1.0)
    assert softmax_probs(scores, 1e7)[0] == pytest.approx(torch.full((5,), 0.2, dtype=torch.float64), abs=1e-5)
    p = softmax_probs(scores, 3.0)[0]
    assert p[1] / p[4] == pytest.approx(np.exp((30 - 29) / 3.0))
    gen = torch.Generator().manual_seed(1)
    assert all(int(choose("sma", LABELS[:1], gen, image_scores=scores, tau=1e-6)) == 1 for _ in range(50))


def test_smp_restricts_to_positives():
    scores = torch.tensor([[50.0, 10.0, 99.0, 1.0, 20.0]])  # global best (index 2) is not a Positive
    gen = torch.Generator().manual_seed(2)
    picks = {int(choose("smp", LABELS[:1], gen, image_scores=scores, tau=1e-3)) for _ in range(100)}
    assert picks == {4}
    picks = [int(choose("smp", LABELS[:1], gen, image_scores=scores, tau=1e6)) for _ in range(400)]
    assert set(picks) == {1, 4}


def test_amo_picks_the_patch_the_metric_scores_best():
    from bench.metrics.factory import create
    from bench.metrics.table import get

    torch.manual_seed(0)
    base = torch.rand(1, 1, 3, 64, 64).clamp(0.2, 0.8)
    smooth = torch.nn.functional.avg_pool2d(base[0], 5, 1, 2)[None]
    noisy = (smooth + 0.15 * torch.randn_like(smooth)).clamp(0, 1)
    patches = torch.cat([smooth, noisy, base, (smooth * 0.5 + 0.25), noisy.flip(-1)], dim=1)  # (1,5,3,64,64)
    metric = create(get("piqe"))
    direct = torch.tensor([pyiqa.create_metric("piqe", device="cpu")(patches[0, k:k + 1]).item() for k in range(5)])
    scores = amo_scores(metric, patches, get("piqe").sign)
    assert scores[0] == pytest.approx(-direct)
    idx = choose("amo", torch.zeros(1, 5, dtype=torch.long), torch.Generator(), patch_scores=scores)
    assert int(idx) == int(direct.argmin())  # PIQE: lower is better


# --- degradation --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["one_stage", "two_stage"])
def test_degradation_shapes_ranges_and_seeding(kind):
    hr = torch.rand(3, 3, 96, 128)
    lr = degrade(hr, kind, 4, torch.Generator().manual_seed(0))
    assert lr.shape == (3, 3, 24, 32)
    assert lr.min() >= 0 and lr.max() <= 1
    assert torch.equal(lr, (lr * 255).round() / 255)  # quantised to 8 bit
    assert torch.equal(lr, degrade(hr, kind, 4, torch.Generator().manual_seed(0)))
    assert not torch.equal(lr, degrade(hr, kind, 4, torch.Generator().manual_seed(1)))
    bicubic = torch.nn.functional.interpolate(hr, size=(24, 32), mode="bicubic", align_corners=False)
    assert (lr - bicubic).abs().mean() > 0.01  # it really degrades
    with pytest.raises(ValueError, match="expected one_stage or two_stage"):
        degrade(hr, "three_stage", 4, torch.Generator())


# --- data --------------------------------------------------------------------------------------
GROUPS = {"0001-0-0": {"A": [P, S, N, N], "B": [P, S, N, S], "C": [S, S, N, N]},
          "0002-0-64": {"A": [N, S, S, N], "B": [N, N, S, S], "C": [S, N, N, N]}}  # no Positive


def test_multigt_crops_are_co_located_and_labels_coded(tmp_path):
    make_hggt(tmp_path, GROUPS, size=64)  # enhanced k = original + 10k (clipped)
    ds = MultiGTDataset(str(tmp_path), gt_size=32, seed=0)
    assert len(ds) == 2 and ds.labels.tolist() == [[0, 1, 2, 3, 3], [0, 3, 3, 2, 3]]
    item = ds[(0, 5)]
    orig = (item["gts"][0] * 255).round()
    for k in range(1, 5):
        expect = (orig + 10 * k).clamp(max=255)
        assert torch.equal((item["gts"][k] * 255).round(), expect)
    assert torch.equal(ds[(0, 5)]["gts"], item["gts"])
    assert len(MultiGTDataset(str(tmp_path), gt_size=32, require_positive=True)) == 1


def test_batch_sampler_is_resumable_and_sharded():
    full = list(IterationBatchSampler(10, 2, seed=3, start=0, total=12))
    resumed = list(IterationBatchSampler(10, 2, seed=3, start=7, total=12))
    assert full[7:] == resumed
    r0 = IterationBatchSampler(10, 2, 3, 0, 5, rank=0, world=2).batch_for(1)
    r1 = IterationBatchSampler(10, 2, 3, 0, 5, rank=1, world=2).batch_for(1)
    assert not {i for i, _ in r0} & {i for i, _ in r1}


# --- training -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from sr_training.data.synthetic import build_synthetic_hggt

    return build_synthetic_hggt(tmp_path_factory.mktemp("synth") / "hggt", groups_per_photo=2)


def _cfg(synth_root, name="smoke_rrdb_upos.yaml", *overrides):
    os.environ["SYNTH_HGGT_ROOT"] = str(synth_root)
    return load_config(SMOKE / name, list(overrides))


@pytest.mark.parametrize("arch", ["swinir", "rrdb"])
def test_tiny_nets_learn_on_a_fixed_batch(arch, synth_root, tmp_path):
    lr = {"swinir": 0.002, "rrdb": 0.0005}[arch]  # RRDB diverges at 0.002 on the full-original degradation
    cfg = _cfg(synth_root, "smoke_rrdb_upos.yaml", f"arch.type={arch}", "sampling.strategy=original",
               f"optim.lr_g={lr}", "loss.gan=0", "loss.perceptual=0", "data.gt_size=64", "data.queue_size=0",
               "arch.drop_path_rate=0")  # a fixed batch: no pair queue, deterministic forward
    tr = Trainer(cfg, tmp_path, device="cpu")
    batch = collate([tr.dataset[(i, 0)] for i in range(2)])
    losses = [tr.step(batch, it=0)["l1"] for _ in range(12)]
    assert losses[-1] < 0.7 * losses[0], losses


def _params(tr):
    return {k: v.clone() for k, v in tr.net_g.state_dict().items()} | {f"d.{k}": v.clone() for k, v in tr.net_d.state_dict().items()}


def test_resume_is_bit_identical(synth_root, tmp_path):
    common = ("schedule.checkpoint_every=3", "schedule.log_every=1", "val.dir=null", "loss.perceptual=0")
    straight = Trainer(_cfg(synth_root, "smoke_rrdb_upos.yaml", "schedule.total_iters=6", *common), tmp_path / "a", "cpu")
    straight.fit()
    first = Trainer(_cfg(synth_root, "smoke_rrdb_upos.yaml", "schedule.total_iters=3", *common), tmp_path / "b", "cpu")
    first.fit()
    resumed = Trainer(_cfg(synth_root, "smoke_rrdb_upos.yaml", "schedule.total_iters=6", *common), tmp_path / "b", "cpu")
    resumed.fit(auto_resume=True)
    assert resumed.start_iter == 3
    a, b = _params(straight), _params(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log_a = pd.read_csv(tmp_path / "a" / "train_log.csv").set_index("iter")
    log_b = pd.read_csv(tmp_path / "b" / "train_log.csv").set_index("iter")
    cols = ["l1", "gan_g", "d_real", "d_fake"]
    pd.testing.assert_frame_equal(log_a.loc[[4, 5, 6], cols], log_b.loc[[4, 5, 6], cols])


def test_ddp_with_two_gloo_processes(synth_root, tmp_path):
    env = {**os.environ, "SYNTH_HGGT_ROOT": str(synth_root), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", "29533", "-m", "bench.cli", "train", "--config", str(SMOKE / "smoke_rrdb_upos.yaml"),
           "--out", str(tmp_path / "ddp"), "schedule.total_iters=4", "schedule.checkpoint_every=4",
           "schedule.log_every=2", "schedule.val_every=4", "--device", "cpu"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "ddp" / "checkpoints" / "iter_00000004.pt").is_file()
    log = pd.read_csv(tmp_path / "ddp" / "train_log.csv")
    assert list(log["iter"]) == [2, 4]  # rank 0 only
    assert done.stdout.count("smoke_rrdb_upos: done") == 1
    from sr_training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "iter_00000004.pt")
    assert int(ckpt["chosen"].sum()) == 4 * 2 * 2  # all-reduced: 4 iterations x batch 2 x 2 ranks


def test_amo_smoke_run_uses_the_metric_and_logs_choices(synth_root, tmp_path, niqe_plumbing_params):
    cfg = _cfg(synth_root, "smoke_swinir_amo.yaml", "schedule.total_iters=3", "schedule.log_every=3",
               "schedule.val_every=3", "schedule.checkpoint_every=3")
    result = Trainer(cfg, tmp_path, "cpu").fit()
    assert sum(result["chosen"]) == 3 * 2
    log = pd.read_csv(tmp_path / "train_log.csv")
    assert [c for c in log.columns if c.startswith("chosen_")] == [f"chosen_{k}" for k in range(5)]
    assert len(list((tmp_path / "val" / "iter_00000003").glob("*.png"))) == 6


def test_sma_reads_scores_from_the_store_and_names_missing_ones(synth_root, tmp_path, niqe_plumbing_params):
    from bench.manifests import hggt, schema
    from bench.metrics.table import select
    from bench.scoring.engine import score_manifest
    from bench.store import Store

    manifest = schema.write(hggt.hggt(synth_root), tmp_path / "hggt.parquet")
    store = Store(tmp_path / "store")
    over = ("sampling.strategy=sma", "sampling.iqa.metric=niqe", f"sampling.iqa.store={store.root}",
            f"sampling.iqa.manifest={manifest}", "data.gt_size=96")
    with pytest.raises(StudyError, match=r"sampling niqe: metric 'niqe': no stored ok scores.*iqa-study score --manifest"):
        Trainer(_cfg(synth_root, "smoke_rrdb_upos.yaml", *over), tmp_path / "run", "cpu")
    score_manifest(schema.read(manifest), select("niqe"), store, workers=0)
    tr = Trainer(_cfg(synth_root, "smoke_rrdb_upos.yaml", *over), tmp_path / "run", "cpu")
    assert tr.image_scores.shape == (12, 5) and torch.isfinite(tr.image_scores).all()
    assert (tr.image_scores <= 0).all()  # NIQE is lower-better: oriented scores are negated
    tr.step(collate([tr.dataset[(i, 0)] for i in range(2)]), it=0)


def test_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text((SMOKE / "smoke_rrdb_upos.yaml").read_text().replace("batch_size:", "batchsize:"))
    os.environ["SYNTH_HGGT_ROOT"] = str(tmp_path)
    with pytest.raises(StudyError, match=r"field 'data.batchsize': Extra inputs are not permitted"):
        load_config(bad)
    with pytest.raises(StudyError, match="expected key=value"):
        load_config(SMOKE / "smoke_rrdb_upos.yaml", ["data.batch_size"])
    assert load_config(SMOKE / "smoke_rrdb_upos.yaml", ["sampling.tau=0.5"]).sampling.tau == 0.5


def test_pretrained_weights_must_match_the_arch(tmp_path):
    from sr_training.archs import build_generator
    from sr_training.config import ArchConfig

    swin = build_generator(ArchConfig(type="swinir", size="tiny"))
    torch.save({"params_ema": swin.state_dict()}, tmp_path / "swinir_tiny.pth")
    loaded = build_generator(ArchConfig(type="swinir", size="tiny", pretrained=str(tmp_path / "swinir_tiny.pth")))
    assert all(torch.equal(a, b) for a, b in zip(swin.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(StudyError, match="file holds SwinIR x4, config expects ESRGAN x4"):
        build_generator(ArchConfig(type="rrdb", size="tiny", pretrained=str(tmp_path / "swinir_tiny.pth")))
    with pytest.raises(StudyError, match="do not fit the configured 'full' swinir"):
        build_generator(ArchConfig(type="swinir", size="full", pretrained=str(tmp_path / "swinir_tiny.pth")))
    from safetensors.torch import save_file

    save_file(swin.state_dict(), tmp_path / "swinir_tiny.safetensors")
    loaded = build_generator(ArchConfig(type="swinir", size="tiny", pretrained=str(tmp_path / "swinir_tiny.safetensors")))
    assert all(torch.equal(a, b) for a, b in zip(swin.state_dict().values(), loaded.state_dict().values()))


class _Payload:
    """A pickle payload: unpickling it creates the marker file (i.e. runs code)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt"])
def test_pretrained_and_perceptual_weights_with_a_pickle_payload_are_refused_and_never_run(tmp_path, suffix):
    """arch.pretrained (spandrel would use TorchScript for .pt and its own unpickler for .pth) and
    loss.perceptual_weights are read with torch.load(weights_only=True): one line, no code run."""
    from sr_training.archs import build_generator
    from sr_training.checkpoint import UnsafeCheckpoint
    from sr_training.config import ArchConfig
    from sr_training.losses import PerceptualLoss

    marker = tmp_path / "payload-ran"
    swin = build_generator(ArchConfig(type="swinir", size="tiny"))
    evil = tmp_path / f"evil{suffix}"
    torch.save({"params_ema": swin.state_dict(), "extra": _Payload(marker)}, evil)
    with pytest.raises(UnsafeCheckpoint, match=rf"^arch.pretrained .*evil\{suffix}: refused, it holds pickled") as err:
        build_generator(ArchConfig(type="swinir", size="tiny", pretrained=str(evil)))
    assert "\n" not in str(err.value)
    with pytest.raises(UnsafeCheckpoint, match=rf"^loss.perceptual_weights .*evil\{suffix}: refused"):
        PerceptualLoss(str(evil))
    assert not marker.exists()
    scripted = tmp_path / f"scripted{suffix}"  # a TorchScript archive is not a weights file
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), scripted)
    with pytest.raises(StudyError, match=rf"^arch.pretrained .*scripted\{suffix}: a TorchScript archive, refused"):
        build_generator(ArchConfig(type="swinir", size="tiny", pretrained=str(scripted)))


def test_metric_minimum_size_is_checked_at_start_up_for_amo_and_ft(synth_root, tmp_path, niqe_plumbing_params,
                                                                   monkeypatch):
    """NIQE works on 96x96 blocks: AMO (GT patches) and the FT reward (SR patches) with a smaller
    data.gt_size are refused in one line before any step, not a PyTorch error deep in pyiqa."""
    from sr_training.ft.trainer import FTTrainer

    cfg = _cfg(synth_root, "smoke_swinir_amo.yaml", "data.gt_size=64")
    with pytest.raises(StudyError, match=r"^data.gt_size 64: AMO scores GT patches .*too small for niqe.* 96 px"):
        Trainer(cfg, tmp_path / "amo", "cpu")
    assert not (tmp_path / "amo" / "checkpoints").exists()
    monkeypatch.setenv("FT_INIT", str(tmp_path / "base"))
    ft = load_config(SMOKE / "smoke_ft_swinir.yaml", ["data.gt_size=64"])
    with pytest.raises(StudyError, match=r"^data.gt_size 64: the FT reward scores SR patches .*too small for niqe"):
        FTTrainer(ft, tmp_path / "ft", "cpu")


def test_validation_on_real_set5_writes_images_and_psnr(synth_root, tmp_path):
    from tests.conftest import shared_path

    set5 = shared_path("set5")
    cfg = _cfg(synth_root, "smoke_swinir_amo.yaml", "sampling.strategy=original", f"val.dir={set5}")
    tr = Trainer(cfg, tmp_path, "cpu")
    scores = tr.validate(0)
    assert sorted(scores) == ["baby", "bird", "butterfly", "head", "woman"]
    assert all(np.isfinite(v["psnr"]) and 3 < v["psnr"] < 40 for v in scores.values())
    from PIL import Image

    with Image.open(tmp_path / "val" / "iter_00000000" / "woman.png") as im:
        assert im.size == (216, 336)  # x4 of the 54x84 blind LR = the HR size


def test_synthetic_builder_handles_group_sizes_larger_than_a_photo(tmp_path):
    from PIL import Image

    from sr_training.data.synthetic import build_synthetic_hggt

    root = build_synthetic_hggt(tmp_path / "big", groups_per_photo=1, size=512)
    sizes = {Image.open(p).size for p in (root / "images").rglob("*.png")}
    assert sizes == {(512, 512)}
    assert len(MultiGTDataset(str(root), gt_size=256)) == 6


def test_committed_config_schema_is_current():
    import json

    from sr_training.config import json_schema

    assert json.loads((SMOKE / "schema.json").read_text()) == json_schema(), \
        "regenerate sr_training/configs/schema.json from sr_training.config.json_schema()"


def test_perceptual_loss_from_a_local_vgg19_file(tmp_path):
    import torchvision

    from sr_training.losses import PerceptualLoss

    torch.manual_seed(0)
    torch.save(torchvision.models.vgg19(weights=None).state_dict(), tmp_path / "vgg19.pth")
    loss = PerceptualLoss(str(tmp_path / "vgg19.pth"))
    x = torch.rand(1, 3, 32, 32)
    assert loss(x, x).item() == 0.0 and loss(x, x.flip(-1)).item() > 0
    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(StudyError, match="not a torchvision VGG19 state dict"):
        PerceptualLoss(str(tmp_path / "bad.pth"))
    with pytest.raises(StudyError, match="ImageNet VGG19 weights 'vgg19-dcbb9e9d.pth' missing"):
        PerceptualLoss("imagenet")


def test_a_variant_changes_the_loop_through_its_hooks_only(synth_root, tmp_path):
    """should_stop ends the run before an iteration (logs, checkpoints and provenance end there);
    on_validation sees each validation's scores before its row is logged."""
    seen = []

    class Stopping(Trainer):
        def on_validation(self, it, scores):
            seen.append((it, sorted(next(iter(scores.values()))), (self.out / "val_log.csv").is_file()))

        def should_stop(self, it):
            return (it, "constructed stop") if it == 3 else None

    cfg = _cfg(synth_root, "smoke_rrdb_upos.yaml", "schedule.total_iters=6", "schedule.log_every=1",
               "schedule.val_every=2", "schedule.checkpoint_every=6")
    result = Stopping(cfg, tmp_path, "cpu").fit()
    assert result["stopped"] == {"iteration": 3, "message": "constructed stop"}
    assert list(pd.read_csv(tmp_path / "train_log.csv")["iter"]) == [1, 2, 3]  # no step at iteration 3
    assert [s[0] for s in seen] == [2] and seen[0][2] is False  # the hook ran before the row was logged
    assert list(pd.read_csv(tmp_path / "val_log.csv")["iter"]) == [2]
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["final"]["iteration"] == 3 and prov["stopped"]["message"] == "constructed stop"
