"""Training config and sampling rules that make the recipe say what it is (issue 8 "Paper configs")."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from bench.errors import StudyError
from sr_training.config import TrainConfig, load_config
from sr_training.sampling import choose, normalise, softmax_probs, tau_warning
from tests.hggt_fixture import make_hggt

CONFIGS = Path(__file__).resolve().parents[1] / "sr_training" / "configs"
PAPER = sorted(p for p in CONFIGS.glob("*.yaml") if p.stem.split("_")[0] in ("swinir", "rrdb"))
P, S, N = "Positive", "Similar", "Negative"


@pytest.fixture
def paper_env(monkeypatch, tmp_path):
    for var in ("SWINIR_PSNR_INIT", "RRDB_PSNR_INIT", "HGGT_ROOT", "SET5_ROOT", "STUDY_STORE", "HGGT_TRAIN_MANIFEST",
                "SELECTION_JSON"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))


def test_paper_configs_are_faithful_and_name_their_metric(paper_env):
    assert len(PAPER) == 10  # {swinir,rrdb} x {upos, sma, smp, amo, amo_pos}
    for path in PAPER:
        cfg = load_config(path)
        assert cfg.require_positive() is (cfg.sampling.strategy in ("upos", "smp") or path.stem.endswith("_pos")), path
        assert cfg.amp_bf16 is False, path  # fp32 as HGGT
        per_gpu = {"swinir": 8, "rrdb": 12}[cfg.arch.type]
        assert (cfg.data.batch_size, cfg.data.intended_total_batch) == (per_gpu, 4 * per_gpu), path
        if cfg.arch.type == "swinir":
            assert cfg.arch.drop_path_rate == 0.1, path
        if cfg.sampling.strategy in ("amo", "sma", "smp"):
            assert (cfg.sampling.iqa.metric, cfg.sampling.iqa.selection) == ("musiq", None), path
        if cfg.sampling.strategy in ("sma", "smp"):
            assert 0.02 <= cfg.sampling.tau <= 0.05, path  # 2-5 MUSIQ points on the normalised scale
    # a selection is an explicit opt-in, and never silently combined with a pinned metric
    amo = CONFIGS / "swinir_amo.yaml"
    assert load_config(amo, ["sampling.iqa.metric=null", "sampling.iqa.selection=x.json"]).sampling.iqa.selection
    with pytest.raises(StudyError, match="exactly one of sampling.iqa.metric"):
        load_config(amo, ["sampling.iqa.selection=x.json"])


def test_defaults_are_fp32_and_basicsr_drop_path():
    cfg = TrainConfig.model_validate({"name": "x", "arch": {"type": "swinir"}, "sampling": {"strategy": "upos"},
                                      "data": {"root": ".", "degradation": {"kind": "one_stage"}}})
    assert cfg.amp_bf16 is False and cfg.arch.drop_path_rate == 0.1


@pytest.mark.parametrize("item", ["data.gt_size=0", "data.batch_size=0", "data.batch_size=-2", "data.gt_size=-64",
                                  "schedule.total_iters=0", "data.require_positive=false"])
def test_impossible_values_are_rejected_in_one_line(item, paper_env):
    with pytest.raises(StudyError) as err:
        load_config(CONFIGS / "rrdb_upos.yaml", [item])
    assert "\n" not in str(err.value) and item.split("=")[0].split(".")[-1] in str(err.value)


def test_amo_breaks_exact_ties_at_random_not_toward_the_original():
    gen = torch.Generator().manual_seed(0)
    scores = torch.zeros(4000, 5)
    scores[:, 3] = -1.0  # index 3 is worse; 0, 1, 2, 4 tie for best
    idx = choose("amo", torch.zeros(4000, 5, dtype=torch.long), gen, patch_scores=scores)
    freq = torch.bincount(idx, minlength=5).double() / 4000
    assert freq[3] == 0
    assert torch.allclose(freq[[0, 1, 2, 4]], torch.full((4,), 0.25, dtype=torch.float64), atol=0.03)
    again = choose("amo", torch.zeros(4000, 5, dtype=torch.long), torch.Generator().manual_seed(0), patch_scores=scores)
    assert torch.equal(idx, again)  # seeded
    clear = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.3]])
    assert int(choose("amo", torch.zeros(1, 5, dtype=torch.long), gen, patch_scores=clear)) == 3


def test_tau_means_the_same_for_a_0_100_and_a_0_1_metric():
    from bench.metrics.table import get

    musiq, topiq = get("musiq"), get("topiq_nr")
    assert (musiq.score_max - musiq.score_min, topiq.score_max - topiq.score_min) == (100.0, 1.0)
    raw100 = torch.tensor([[40.0, 43.0, 46.0, 41.0, 44.0]])
    p100 = softmax_probs(normalise(raw100, musiq), 0.03)
    p1 = softmax_probs(normalise(raw100 / 100, topiq), 0.03)
    assert torch.allclose(p100, p1)
    # tau = 0.03 is 3 MUSIQ points: a 3-point lead multiplies the odds by e
    assert float(p100[0, 1] / p100[0, 0]) == pytest.approx(math.e)


def test_tau_warnings_for_uniform_and_argmax_sampling():
    scores = torch.tensor([[0.40, 0.43, 0.46, 0.41, 0.44], [0.50, 0.52, 0.55, 0.51, 0.53]])  # spread ~0.05
    assert tau_warning(scores, 0.03) is None
    assert "practically uniform" in tau_warning(scores, 10.0)
    assert "practically argmax" in tau_warning(scores, 0.001)


def _groups_with_one_negative_only_group(tmp_path):
    groups = {"0001-0-0": {"A": [P, S, N, N], "B": [P, S, N, S], "C": [S, S, N, N]},
              "0002-0-0": {"A": [S, P, S, N], "B": [N, P, S, S], "C": [S, P, N, N]},
              "0003-0-0": {"A": [N, S, S, N], "B": [N, N, S, S], "C": [S, N, N, N]}}  # no Positive
    make_hggt(tmp_path / "hggt", groups, size=64)
    return tmp_path / "hggt"


def _tiny(root, *overrides):
    os.environ["SYNTH_HGGT_ROOT"] = str(root)
    return load_config(CONFIGS / "smoke_rrdb_upos.yaml",
                       ["data.gt_size=32", "loss.perceptual=0", "loss.gan=0", "val.dir=null", *overrides])


def test_group_filter_is_a_separate_knob_and_effective_batch_is_checked(tmp_path):
    from sr_training.trainer import Trainer

    root = _groups_with_one_negative_only_group(tmp_path)
    auto = Trainer(_tiny(root, "sampling.strategy=uniform_all", "data.intended_total_batch=8"), tmp_path / "a", "cpu")
    assert len(auto.dataset) == 3  # sma/amo/uniform keep every group by default
    assert any("WARNING: effective batch 2" in n and "intended_total_batch 8" in n for n in auto.notes)
    subset = Trainer(_tiny(root, "sampling.strategy=uniform_all", "data.require_positive=true",
                           "data.intended_total_batch=2"), tmp_path / "b", "cpu")
    assert len(subset.dataset) == 2  # UPos's subset, for a like-for-like comparison
    assert not any("effective batch" in n for n in subset.notes)
    assert len(Trainer(_tiny(root), tmp_path / "c", "cpu").dataset) == 2  # upos: auto = filter on


def test_sampling_metric_is_logged_with_its_reason_and_read_from_the_selection(tmp_path, capsys):
    from bench.study.select import SCHEMA
    from sr_training.config import IQAConfig
    from sr_training.iqa import resolve_metric
    from sr_training.trainer import Trainer

    root = _groups_with_one_negative_only_group(tmp_path)
    tr = Trainer(_tiny(root, "sampling.strategy=amo", "sampling.iqa.metric=piqe"), tmp_path / "amo", "cpu")
    assert tr.sampling_metric["metric"] == "piqe"
    assert "SAMPLING METRIC (amo): piqe - pinned by the config" in capsys.readouterr().err
    sel = tmp_path / "selection.json"
    sel.write_text(json.dumps({"schema": SCHEMA, "best": {"metric": "qalign"},
                               "sampling_metric": {"metric": "qalign", "reason": "best with weights"},
                               "reward_metric": {"metric": "musiq", "reason": "best differentiable"}}))
    spec, why = resolve_metric(IQAConfig(selection=str(sel)), "sampling")
    assert spec.name == "qalign" and "sampling_metric" in why and "best with weights" in why
    assert resolve_metric(IQAConfig(selection=str(sel)), "reward")[0].name == "musiq"
