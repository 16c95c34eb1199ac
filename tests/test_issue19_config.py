"""Issue 19: configs and CLI values out of range, YAML that is not a mapping or is an alias bomb, a device
torch does not know: each refused in one line before anything runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.errors import StudyError
from sr_training.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "sr_training" / "configs"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))  # 10^9 leaves


@pytest.fixture
def smoke(monkeypatch, tmp_path):
    monkeypatch.setenv("SYNTH_HGGT_ROOT", str(tmp_path))
    monkeypatch.setenv("FT_INIT", str(tmp_path / "base.pth"))
    return CONFIGS / "smoke_rrdb_upos.yaml"


@pytest.mark.parametrize("override, field", [
    ("optim.ema=2", "optim.ema"), ("optim.ema=1", "optim.ema"), ("optim.gamma=-1", "optim.gamma"),
    ("optim.gamma=0", "optim.gamma"), ("loss.l1=-1", "loss.l1"), ("loss.perceptual=-0.5", "loss.perceptual"),
    ("optim.lr_g=-1", "optim.lr_g"), ("optim.lr_d=0", "optim.lr_d"), ("seed=-5", "seed"),
    ("loss.gan=.inf", "loss.gan"), ("loss.l1=.nan", "loss.l1"), ("optim.betas=[1.5, 0.9]", "optim.betas.0"),
    ("optim.milestones=[100, -1]", "optim.milestones.1"), ("sampling.tau=.inf", "sampling.tau"),
    ("arch.scale=0", "arch.scale"),
])
def test_out_of_range_training_values_are_refused_in_one_line(override, field, smoke):
    with pytest.raises(StudyError) as err:
        load_config(smoke, [override])
    msg = str(err.value)
    assert "\n" not in msg and f"field '{field}'" in msg and str(smoke) in msg


def test_boundary_values_inside_the_ranges_are_accepted(smoke):
    cfg = load_config(smoke, ["optim.ema=0", "loss.gan=0", "loss.l1=0", "seed=0", "optim.betas=[0, 0.999]"])
    assert (cfg.optim.ema, cfg.loss.gan, cfg.seed, cfg.optim.betas) == (0.0, 0.0, 0, (0.0, 0.999))


@pytest.mark.parametrize("override, field", [("ft.reward.lambda_q=.inf", "ft.reward.lambda_q"),
                                             ("ft.reward.lambda_q=-1", "ft.reward.lambda_q"),
                                             ("ft.guard.margin=.inf", "ft.guard.margin"),
                                             ("ft.lora.alpha=.nan", "ft.lora.alpha")])
def test_ft_values_are_finite_and_in_range(override, field, smoke):
    with pytest.raises(StudyError, match=rf"field '{field}'"):
        load_config(CONFIGS / "smoke_ft_swinir.yaml", [override])


@pytest.mark.timeout(300)  # imports torch; the bomb itself is refused in milliseconds
def test_yaml_that_is_a_list_or_an_alias_bomb_is_one_line_everywhere(tmp_path, smoke):
    from bench.manifests.config import build_from_config
    from sr_training.evaluate import load_test_set

    listed = tmp_path / "list.yaml"
    listed.write_text("- name: x\n- seed: 1\n")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    readers = [load_config, build_from_config, load_test_set]
    for reader in readers:
        with pytest.raises(StudyError, match=r"list.yaml: the top level is a list, expected a mapping"):
            reader(listed)
        with pytest.raises(StudyError, match=r"bomb.yaml: the YAML expands .* to more than 100000 nodes"):
            reader(bomb)
    with pytest.raises(StudyError, match=r"override 'name=\[\*a\]'.*invalid YAML"):
        load_config(smoke, ["name=[*a]"])
    with pytest.raises(StudyError, match=r"override .*more than 100000 nodes"):
        load_config(smoke, ["data.root=" + BOMB.replace("\n", ", ").join("{}")])


def test_a_config_using_anchors_normally_still_loads(tmp_path, smoke):
    p = tmp_path / "anchors.yaml"
    p.write_text("name: anchored\narch: {type: rrdb, size: tiny}\n"
                 "data: {root: /tmp, gt_size: 32, degradation: {kind: one_stage}}\nsampling: {strategy: upos}\n"
                 "loss: &w {l1: 1.0, perceptual: 0.0, gan: 0.0}\nval: {metrics: &m [psnr, ssim], best_metric: psnr}\n"
                 "extra_anchor_use: *m\n")
    with pytest.raises(StudyError, match="extra_anchor_use"):  # unknown keys stay errors
        load_config(p)
    p.write_text(p.read_text().replace("extra_anchor_use: *m\n", ""))
    cfg = load_config(p)
    assert cfg.val.metrics == ("psnr", "ssim") and cfg.loss.gan == 0.0


def _cli(argv, capsys):
    from bench.cli import main

    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.mark.parametrize("argv, message", [
    (["phase1", "--manifest", "m", "--store", "s", "--n-pairs", "-3"], "argument --n-pairs: '-3' is not a positive integer"),
    (["phase1", "--manifest", "m", "--store", "s", "--top-k", "0"], "argument --top-k: '0' is not a positive integer"),
    (["phase1", "--manifest", "m", "--store", "s", "--seed", "-5"], "argument --seed: '-5' is negative"),
    (["score", "--images", "x", "--store", "s", "--flush-rows", "0"], "argument --flush-rows: '0' is not a positive integer"),
    (["train-data", "synthetic", "out", "--size", "-8"], "argument --size: '-8' is not a positive integer"),
])
def test_cli_integers_are_checked_by_the_parser(argv, message, capsys):
    rc, err = _cli(argv, capsys)
    assert rc == 2 and message in err.splitlines()[-1]


def test_an_unknown_device_is_one_line(tmp_path, smoke, capsys):
    os.environ["SYNTH_HGGT_ROOT"] = str(tmp_path)
    for argv in (["train", "--config", str(smoke), "--out", str(tmp_path / "o"), "--device", "tpu"],
                 ["score", "--images", str(tmp_path), "--store", str(tmp_path / "s"), "--device", "tpu"]):
        rc, err = _cli(argv, capsys)
        assert rc == 2 and err == "iqa-study: error: --device tpu: not a device this suite runs on; expected auto, " \
                                  "cpu, cuda or cuda:N"
    assert not (tmp_path / "o").exists()
    from bench.scoring.options import pick_device

    assert pick_device("cpu") == "cpu"
    with pytest.raises(StudyError, match="--device meta: not a device"):
        pick_device("meta")
