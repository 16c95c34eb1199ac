"""A training run you can watch and trust: TensorBoard, CSV logs, validation metrics, checkpoints that
never run code, resume that refuses what it should, falls back when it must and never duplicates logs.

One tiny run (module fixture) is trained once; fault tests work on copies of its folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.errors import StudyError
from sr_training.checkpoint import (
    CorruptCheckpoint,
    UnsafeCheckpoint,
    generator_from_checkpoint,
    load_checkpoint,
)
from sr_training.config import load_config
from sr_training.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "sr_training" / "configs"
FAST = ["loss.perceptual=0", "data.gt_size=32", "schedule.log_every=1", "schedule.checkpoint_every=1"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from sr_training.data.synthetic import build_synthetic_hggt

    return build_synthetic_hggt(tmp_path_factory.mktemp("synth") / "hggt", groups_per_photo=1, size=96)


def _cfg(synth, *overrides):
    os.environ["SYNTH_HGGT_ROOT"] = str(synth)
    return load_config(CONFIGS / "smoke_rrdb_upos.yaml", [*FAST, *overrides])


@pytest.fixture(scope="module")
def run(synth, tmp_path_factory):
    """2 iterations, a checkpoint at each, validation at 2 (the synthetic val/ set)."""
    out = tmp_path_factory.mktemp("run") / "run"
    Trainer(_cfg(synth, "schedule.total_iters=2", "schedule.val_every=2"), out, "cpu").fit()
    return out


def _copy(run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _own_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2)
    return float(10 * np.log10(1 / mse))


def test_tensorboard_and_csv_logs(run, synth):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "images": 0, "histograms": 0}).Reload()
    tags = acc.Tags()
    assert [e.step for e in acc.Scalars("loss/l1")] == [1, 2]
    assert {"loss/gan_g", "loss/d_real", "lr/g", "val/psnr", "val/psnry", "val/ssim", "val/stlpips"} <= set(tags["scalars"])
    assert acc.Scalars("lr/g")[0].value == pytest.approx(1e-4)
    hist = acc.Histograms("sampling/chosen_gt_index")
    assert [h.step for h in hist] == [1, 2] and [h.histogram_value.num for h in hist] == [2, 2]  # batch 2 per step
    assert tags["images"] and all(t.startswith("val/") for t in tags["images"])

    log = pd.read_csv(run / "train_log.csv")
    assert list(log["iter"]) == [1, 2] and log[[f"chosen_{k}" for k in range(5)]].sum(axis=1).tolist() == [2, 4]
    val = pd.read_csv(run / "val_log.csv")
    assert list(val.columns) == ["iter", "psnr", "psnry", "ssim", "ssimc", "stlpips"]  # one value per column
    per_image = pd.read_csv(run / "val_images.csv")
    assert len(per_image) == len(list((synth / "val" / "hr").glob("*.png")))
    assert val.loc[0, "psnr"] == pytest.approx(per_image["psnr"].mean())
    # PSNR (RGB, crop 4) of the saved SR image against HR, computed here independently
    row = per_image.iloc[0]
    sr = np.asarray(Image.open(run / "val" / "iter_00000002" / f"{row['image']}.png").convert("RGB"))
    hr = np.asarray(Image.open(synth / "val" / "hr" / f"{row['image']}.png").convert("RGB"))
    assert row["psnr"] == pytest.approx(_own_psnr(sr[4:-4, 4:-4], hr[4:-4, 4:-4]), abs=1e-3)
    assert row["psnry"] != pytest.approx(row["psnr"], abs=1e-3) and 0 < row["stlpips"] < 1


def test_checkpoints_are_plain_tensors_best_and_provenance(run):
    import json

    ckpt = load_checkpoint(run / "checkpoints" / "iter_00000002.pt")
    assert ckpt["iteration"] == 2 and isinstance(ckpt["config"], str) and ckpt["chosen"].sum() == 4
    assert json.loads(ckpt["config"])["name"] == "smoke_rrdb_upos"
    net = generator_from_checkpoint(run / "checkpoints" / "iter_00000002.pt")
    assert all(torch.equal(v, ckpt["ema"][k]) for k, v in net.state_dict().items())
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert best["iteration"] == 2 and best["metric"] == "stlpips"
    assert load_checkpoint(run / "checkpoints" / "best.pt")["iteration"] == 2
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["finished_at"] and prov["finished_at"] >= prov["started_at"]
    assert (prov["effective_batch"], prov["world_size"], prov["precision"]) == (2, 1, "fp32")


class _Payload:
    """A pickle that would create a file when unpickled (the attack on --auto-resume)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_payload_checkpoint_is_refused_and_never_runs(run, synth, tmp_path):
    out = _copy(run, tmp_path)
    marker = tmp_path / "PWNED"
    torch.save({"iteration": 9, "net_g": _Payload(marker)}, out / "checkpoints" / "iter_00000009.pt")
    with pytest.raises(UnsafeCheckpoint) as err:
        Trainer(_cfg(synth, "schedule.total_iters=3"), out, "cpu").fit(auto_resume=True)
    assert not marker.exists()
    assert "\n" not in str(err.value) and "iter_00000009.pt: refused" in str(err.value)


def test_truncated_newest_checkpoint_falls_back_and_logs_are_not_duplicated(run, synth, tmp_path, capsys):
    out = _copy(run, tmp_path)
    newest = out / "checkpoints" / "iter_00000002.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.raises(CorruptCheckpoint):
        load_checkpoint(newest)
    tr = Trainer(_cfg(synth, "schedule.total_iters=3", "val.dir=null"), out, "cpu")
    tr.fit(auto_resume=True)
    assert tr.resumed_from["iteration"] == 1
    captured = capsys.readouterr()
    assert "iter_00000002.pt: unreadable" in captured.err and "falling back" in captured.err
    assert "resumed from iteration 1 (checkpoint " in captured.out
    log = pd.read_csv(out / "train_log.csv")
    assert list(log["iter"]) == [1, 2, 3]  # row 2 of the lost interval replaced, not duplicated
    assert pd.read_csv(out / "val_log.csv").empty  # the validation at 2 came after the checkpoint now used
    assert load_checkpoint(out / "checkpoints" / "iter_00000002.pt")["iteration"] == 2  # rewritten


def test_resume_refuses_a_changed_config_unless_allowed(run, synth, tmp_path):
    out = _copy(run, tmp_path)
    with pytest.raises(StudyError, match=r"optim.lr_g: 0.0001 -> 0.0002.*--allow-config-change"):
        Trainer(_cfg(synth, "optim.lr_g=2e-4"), out, "cpu").resume()
    tr = Trainer(_cfg(synth, "optim.lr_g=2e-4"), out, "cpu")
    assert tr.resume(allow_config_change=True) == 2
    assert tr.resumed_from["config_changes"][0][0] == "optim.lr_g"
    # how long to train and what to validate may change freely
    assert Trainer(_cfg(synth, "schedule.total_iters=99", "val.dir=null"), out, "cpu").resume() == 2


def test_rerun_without_resume_archives_the_old_folder(run, synth, tmp_path, capsys):
    out = _copy(run, tmp_path)
    Trainer(_cfg(synth, "schedule.total_iters=1", "val.dir=null"), out, "cpu").fit()
    archived = list(tmp_path.glob("run_archived_*"))
    assert len(archived) == 1 and "archived it to" in capsys.readouterr().err
    assert list(pd.read_csv(archived[0] / "train_log.csv")["iter"]) == [1, 2]  # the old run, intact
    assert list(pd.read_csv(out / "train_log.csv")["iter"]) == [1]
    assert not (out / "val_log.csv").exists()


def test_paths_checked_at_start_and_checkpoint_written_before_validation(synth, tmp_path):
    with pytest.raises(StudyError, match="val.dir .*: expected folders hr/ and lr_blind_x4/"):
        Trainer(_cfg(synth, f"val.dir={tmp_path}"), tmp_path / "a", "cpu")
    with pytest.raises(StudyError, match="arch.pretrained .*does not exist"):
        Trainer(_cfg(synth, f"arch.pretrained={tmp_path / 'none.pth'}"), tmp_path / "a", "cpu")
    with pytest.raises(StudyError, match="data.root .*: not a folder"):
        Trainer(_cfg(synth, f"data.root={tmp_path / 'nowhere'}"), tmp_path / "a", "cpu")
    val = tmp_path / "val"
    for sub in ("hr", "lr_blind_x4"):
        (val / sub).mkdir(parents=True)
        (val / sub / "x.png").write_bytes(b"not a png")  # exists, but breaks validation
    out = tmp_path / "b"
    with pytest.raises(StudyError, match="x.png: cannot read image"):
        Trainer(_cfg(synth, "schedule.total_iters=1", f"val.dir={val}"), out, "cpu").fit()
    assert load_checkpoint(out / "checkpoints" / "iter_00000001.pt")["iteration"] == 1


def test_keep_last_n_checkpoints_and_best_survives(synth, tmp_path):
    import json

    tr = Trainer(_cfg(synth, "schedule.keep_last=2"), tmp_path / "k", "cpu")
    tr.save(1)
    tr._keep_best(1, {"stlpips": 0.30, "psnr": 20.0})
    for it in (2, 3):
        tr.save(it)
        tr._keep_best(it, {"stlpips": 0.35, "psnr": 21.0})  # LPIPS-ST higher = worse: best stays at 1
    names = sorted(p.name for p in (tmp_path / "k" / "checkpoints").glob("*.pt"))
    assert names == ["best.pt", "iter_00000002.pt", "iter_00000003.pt"]
    assert json.loads((tmp_path / "k" / "checkpoints" / "best.json").read_text())["iteration"] == 1
    assert load_checkpoint(tmp_path / "k" / "checkpoints" / "best.pt")["iteration"] == 1
