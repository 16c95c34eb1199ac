"""The wheel carries everything the suite reads (configs, metric table, shipped init, selection schema):
built from a copy of the sources, installed into a fresh folder, run from outside any checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{args}: {done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_the_wheel_runs_the_demo_help_and_a_smoke_train_outside_any_checkout(tmp_path):
    src = tmp_path / "src"  # a build writes build/ and *.egg-info beside the sources: never into the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for pkg in ("bench", "sr_training"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PIP_NO_INDEX": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(tmp_path / "wheel")],
         tmp_path, env)
    (wheel,) = (tmp_path / "wheel").glob("iqa_study-*.whl")
    site = tmp_path / "site"
    _run([*pip, "install", "--no-deps", "-q", "--target", str(site), str(wheel)], tmp_path, env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env["PYTHONPATH"] = str(site)
    where = _run([sys.executable, "-c", "import bench, sr_training; print(bench.__file__); print(sr_training.__file__)"],
                 elsewhere, env).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where  # the wheel's copy, not the checkout's
    cli = [sys.executable, "-m", "bench.cli"]
    assert "usage: iqa-study demo" in _run([*cli, "demo", "--help"], elsewhere, env).stdout
    for data in ("bench/metrics/metrics.yaml", "bench/study/selection.schema.json",
                 "sr_training/configs/smoke_swinir_upos.yaml", "sr_training/pretrained/psnr_init_swinir_tiny.safetensors"):
        assert (site / data).is_file(), data
    _run([*cli, "train-data", "synthetic", "hggt", "--groups-per-photo", "1", "--size", "64", "--val-photos", "1"],
         elsewhere, env)
    env["SYNTH_HGGT_ROOT"] = str(elsewhere / "hggt")
    _run([*cli, "train", "--config", "smoke_swinir_upos", "--out", "run", "--device", "cpu",
          "schedule.total_iters=2", "schedule.val_every=2", "schedule.checkpoint_every=2", "schedule.log_every=1",
          "loss.perceptual=0", "loss.gan=0", "data.gt_size=64"], elsewhere, env)
    assert (elsewhere / "run" / "checkpoints" / "iter_00000002.pt").is_file()


def test_a_config_name_resolves_to_the_shipped_config_by_one_rule(tmp_path, monkeypatch):
    from bench.errors import StudyError
    from sr_training.config import PACKAGED_CONFIGS, resolve_config

    monkeypatch.chdir(tmp_path)
    assert resolve_config("smoke_swinir_upos") == PACKAGED_CONFIGS / "smoke_swinir_upos.yaml"
    assert resolve_config("smoke_swinir_upos.yaml") == PACKAGED_CONFIGS / "smoke_swinir_upos.yaml"
    (tmp_path / "smoke_swinir_upos.yaml").write_text("name: mine\n")  # an existing file wins over the shipped one
    assert resolve_config("smoke_swinir_upos.yaml") == Path("smoke_swinir_upos.yaml")
    with pytest.raises(StudyError, match=r"not a shipped config name; did you mean smoke_swinir_amo"):
        resolve_config("smoke_swinir_amoo")
    with pytest.raises(StudyError, match=r"sub/smoke_swinir_upos.yaml: config file does not exist"):
        resolve_config("sub/smoke_swinir_upos.yaml")  # a path with a folder is never looked up in the package
