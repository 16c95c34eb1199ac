"""Issue 19: a run killed between its checkpoint and the validation that checkpoint promised redoes that
validation on --auto-resume (val_log.csv, val_images.csv and guard_log.csv keep every iteration)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from sr_training.checkpoint import load_checkpoint
from sr_training.config import load_config
from sr_training.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "sr_training" / "configs"


class Killed(BaseException):
    """Stands in for kill -9: nothing in the trainer catches it, nothing after it runs."""


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from sr_training.data.synthetic import build_synthetic_hggt

    root = build_synthetic_hggt(tmp_path_factory.mktemp("synth19") / "hggt", groups_per_photo=1, size=96)
    small = root / "val1"
    for sub in ("hr", "lr_blind_x4"):
        (small / sub).mkdir(parents=True)
        shutil.copy(min((root / "val" / sub).glob("*.png")), small / sub)
    return root


def _base_cfg(synth, *overrides):
    os.environ["SYNTH_HGGT_ROOT"] = str(synth)
    return load_config(CONFIGS / "smoke_rrdb_upos.yaml",
                       ["loss.perceptual=0", "data.gt_size=32", "schedule.log_every=1", "schedule.checkpoint_every=1",
                        f"val.dir={synth / 'val1'}", "val.metrics=[psnr]", "val.best_metric=psnr", *overrides])


def test_base_run_killed_after_the_checkpoint_validates_that_iteration_on_resume(synth, tmp_path, monkeypatch):
    cfg = _base_cfg(synth, "schedule.total_iters=3", "schedule.val_every=2")
    Trainer(cfg, tmp_path / "straight", "cpu").fit()
    straight_val = pd.read_csv(tmp_path / "straight" / "val_log.csv")
    assert list(straight_val["iter"]) == [2, 3]

    real = Trainer.validate

    def killed_at_2(self, it):
        if it == 2:
            raise Killed
        return real(self, it)

    monkeypatch.setattr(Trainer, "validate", killed_at_2)
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        Trainer(cfg, out, "cpu").fit()
    monkeypatch.setattr(Trainer, "validate", real)
    assert load_checkpoint(out / "checkpoints" / "iter_00000002.pt")["val_due"] is True
    assert load_checkpoint(out / "checkpoints" / "iter_00000001.pt")["val_due"] is False
    assert not (out / "val_log.csv").exists()  # the kill lost the validation of iteration 2

    tr = Trainer(cfg, out, "cpu")
    tr.fit(auto_resume=True)
    assert tr.start_iter == 2
    assert any("validation of iteration 2 was interrupted" in n for n in tr.notes)
    val = pd.read_csv(out / "val_log.csv")
    assert list(val["iter"]) == [2, 3]  # the owed row, then the run's own, none twice
    pd.testing.assert_frame_equal(val, straight_val)  # the same numbers as the uninterrupted run
    images = pd.read_csv(out / "val_images.csv")
    assert list(images["iter"]) == [2, 3]


def test_base_run_killed_halfway_through_the_log_rows_drops_the_partial_rows(synth, tmp_path, monkeypatch):
    """Killed after val_images.csv got its rows but before val_log.csv: the rows are not doubled."""
    import sr_training.trainer as trainer_mod

    cfg = _base_cfg(synth, "schedule.total_iters=2", "schedule.val_every=2")
    real = trainer_mod.append_row

    def killed_at_val_log(path, row):
        if Path(path).name == "val_log.csv":
            raise Killed
        return real(path, row)

    monkeypatch.setattr(trainer_mod, "append_row", killed_at_val_log)
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        Trainer(cfg, out, "cpu").fit()
    monkeypatch.setattr(trainer_mod, "append_row", real)
    assert list(pd.read_csv(out / "val_images.csv")["iter"]) == [2]
    Trainer(cfg, out, "cpu").fit(auto_resume=True)
    assert list(pd.read_csv(out / "val_log.csv")["iter"]) == [2]
    assert list(pd.read_csv(out / "val_images.csv")["iter"]) == [2]  # not [2, 2]


def test_a_completed_validation_is_not_redone(synth, tmp_path):
    cfg = _base_cfg(synth, "schedule.total_iters=2", "schedule.val_every=2")
    Trainer(cfg, tmp_path / "r", "cpu").fit()
    tr = Trainer(_base_cfg(synth, "schedule.total_iters=3", "schedule.val_every=2"), tmp_path / "r", "cpu")
    tr.fit(auto_resume=True)
    assert not any("interrupted" in n for n in tr.notes)
    assert list(pd.read_csv(tmp_path / "r" / "val_log.csv")["iter"]) == [2, 3]


# --- FT: the guard's check lives in the checkpoint too ------------------------------------------------

@pytest.fixture(scope="module")
def base_swinir(tmp_path_factory):
    from sr_training.archs import build_generator
    from sr_training.config import ArchConfig

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ftbase19") / "swinir.pth"
    torch.save(build_generator(ArchConfig(type="swinir", size="tiny", drop_path_rate=0.0)).state_dict(), path)
    return path


def _ft(synth, base, out, total):
    from sr_training.ft.trainer import FTTrainer

    os.environ["SYNTH_HGGT_ROOT"] = str(synth)
    os.environ["FT_INIT"] = str(base)
    cfg = load_config(CONFIGS / "smoke_ft_swinir.yaml", [
        "arch.type=swinir", "data.queue_size=0", "loss.perceptual=0", "data.batch_size=1",
        "sampling.strategy=original", "schedule.checkpoint_every=2", "schedule.log_every=1", "schedule.val_every=2",
        "ft.guard.enabled=true", "ft.guard.metrics=[piqe]", "ft.guard.fr=[]", f"val.dir={synth / 'val1'}",
        "val.metrics=[psnr]", "val.best_metric=psnr", "optim.lr_g=0.002", f"schedule.total_iters={total}"])
    return FTTrainer(cfg, out, "cpu")


@pytest.mark.parametrize("kill", ["before_guard", "after_guard"])
def test_ft_run_killed_during_validation_keeps_every_log_row(kill, synth, base_swinir, tmp_path, monkeypatch,
                                                             niqe_plumbing_params):
    import sr_training.trainer as trainer_mod
    from sr_training.ft.trainer import FTTrainer

    straight = tmp_path / "straight"
    _ft(synth, base_swinir, straight, 4).fit()
    logs = {n: pd.read_csv(straight / n) for n in ("val_log.csv", "val_images.csv", "guard_log.csv")}
    assert list(logs["guard_log.csv"]["iter"]) == [0, 2, 4]

    out = tmp_path / "killed"
    if kill == "before_guard":  # between the first save and the guard's check (on_validation)
        real = FTTrainer.validate

        def patched(self, it):
            if it == 2:
                raise Killed
            return real(self, it)

        monkeypatch.setattr(FTTrainer, "validate", patched)
    else:  # the guard checked and re-saved, val_log.csv never got its row
        real = trainer_mod.append_row

        def patched(path, row):
            if Path(path).name == "val_log.csv" and row["iter"] == 2:
                raise Killed
            return real(path, row)

        monkeypatch.setattr(trainer_mod, "append_row", patched)
    with pytest.raises(Killed):
        _ft(synth, base_swinir, out, 4).fit()
    monkeypatch.undo()
    assert not (out / "val_log.csv").exists()
    assert list(pd.read_csv(out / "guard_log.csv")["iter"]) == ([0] if kill == "before_guard" else [0, 2])

    resumed = _ft(synth, base_swinir, out, 4)
    resumed.fit(auto_resume=True)
    assert resumed.start_iter == 2
    for name, want in logs.items():
        got = pd.read_csv(out / name)
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-6)  # every row, once, same numbers
    assert [r["iter"] for r in resumed.guard.history] == [0, 2, 4]  # the check at 2 counted once
