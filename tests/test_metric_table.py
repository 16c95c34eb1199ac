"""The metric table against pyiqa itself, and the `metrics list` contract."""

import json
import subprocess
import sys

import pyiqa
import pytest
from pyiqa.default_model_configs import DEFAULT_CONFIGS

from bench.errors import UnknownMetric
from bench.metrics.table import get, load_table, select
from tests.cli import cli


def test_every_pyiqa_nr_metric_is_in_the_table():
    names = {m.name for m in load_table().metrics}
    missing = set(pyiqa.list_models(metric_mode="NR")) - names
    assert not missing, f"pyiqa NR metrics missing from metrics.yaml: {sorted(missing)}"
    assert load_table().pyiqa_version == pyiqa.__version__


@pytest.mark.parametrize("spec", load_table().metrics, ids=lambda m: m.name)
def test_entry_matches_pyiqa(spec):
    cfg = DEFAULT_CONFIGS[spec.name]
    assert spec.mode == cfg["metric_mode"]
    assert spec.lower_better == bool(cfg.get("lower_better", False))
    lo, hi = [t.strip().lstrip("~") for t in cfg["score_range"].split(",")]
    assert spec.score_min == (float(lo) if lo else None)
    assert spec.score_max == (float(hi) if hi else None)
    assert spec.range_approx == ("~" in cfg["score_range"] or not hi or not lo)


def test_study_set_is_the_reconstructed_42():
    study = [m for m in load_table().metrics if m.study]
    assert len(study) == 42
    assert all(m.mode == "NR" for m in study)
    paper_top7 = {"paq2piq", "nima", "musiq", "liqe", "arniqa", "qalign", "topiq_nr"}
    assert paper_top7 <= {m.name for m in study}
    assert {"niqe", "ilniqe", "brisque", "pi"} <= {m.name for m in study if m.lower_better}


def test_fr_metrics_of_the_evaluation_are_present():
    for name in ("psnr", "ssim", "lpips", "stlpips"):
        assert get(name).mode == "FR"
    assert get("stlpips").lower_better and get("stlpips").offline == "package"


def test_unknown_metric_suggests():
    with pytest.raises(UnknownMetric, match="did you mean musiq"):
        get("musiqq")
    with pytest.raises(UnknownMetric):
        select("piqe,not_a_metric")


@pytest.fixture
def niqe_seeded(tmp_path, monkeypatch):
    """A private iqa-study cache holding a NIQE parameter file (presence is what availability checks)."""
    import numpy as np
    import scipy.io

    from bench.metrics.weights import niqe_mat_path

    monkeypatch.setenv("IQA_STUDY_HOME", str(tmp_path / "home"))
    niqe_mat_path().parent.mkdir(parents=True)
    scipy.io.savemat(niqe_mat_path(), {"mu_prisparam": np.zeros((1, 36)), "cov_prisparam": np.eye(36)})


def test_available_offline_set_is_real_only(niqe_seeded):
    names = {m.name for m in select("available")}
    assert {"piqe", "entropy", "niqe"} <= names
    assert "musiq" not in names  # random-init is never "available"
    # niqe_matlab loads its own file (pyiqa's MATLAB-release parameters); seeding niqe never provides it
    assert "niqe_matlab" not in names


def test_cli_metrics_list_json(niqe_seeded):
    out = cli("metrics", "list", "--json").stdout
    rows = json.loads(out)
    nr = [r for r in rows if r["mode"] == "NR"]
    assert len(nr) == len(pyiqa.list_models(metric_mode="NR"))
    for key in ("name", "mode", "study", "lower_better", "differentiable", "weights_available"):
        assert all(key in r for r in rows), key
    assert sum(r["study"] for r in rows) >= 42
    by_name = {r["name"]: r for r in rows}
    assert by_name["niqe"]["weights_available"] is True
    assert by_name["musiq"]["weights_available"] is False


def test_pyiqa_facts_are_derived_not_copied():
    """metrics.yaml holds no mode / lower_better / score range: the table reads them from pyiqa (without
    importing the pyiqa package), and an entry that copies one is refused naming it."""

    from bench.metrics import table as t

    text = t.resources.files("bench.metrics").joinpath("metrics.yaml").read_text()
    assert not any(line.startswith(f"  {k}:") for line in text.splitlines() for k in t.DERIVED)
    niqe, psnr, musiq = get("niqe"), get("psnr"), get("musiq")
    assert (niqe.mode, niqe.lower_better, psnr.mode, psnr.lower_better) == ("NR", True, "FR", False)
    assert (musiq.score_min, musiq.score_max) == (0.0, 100.0)
    # pyiqa's channel variants are entries of their own (validation used to fake them by renaming psnr/ssim)
    assert [(get(n).family, get(n).score_max) for n in ("psnry", "ssimc")] == [("PSNR", 60.0), ("SSIM", 1.0)]
    # the lookup does not import pyiqa (3-5 s of torch and every arch)
    probe = subprocess.run([sys.executable, "-c", ("import sys; from bench.metrics.table import get; get('niqe'); "
                            "print('pyiqa' in sys.modules)")], capture_output=True, text=True, check=True, timeout=120)
    assert probe.stdout.strip() == "False"
    copied = text.replace("- name: niqe\n", "- name: niqe\n  lower_better: true\n", 1)
    with pytest.raises(ValueError, match=r"niqe: field\(s\) lower_better are derived from pyiqa"):
        t.parse_table(copied)


def test_range_normalisation_is_one_rule_on_the_spec():
    import torch

    from bench.errors import StudyError

    niqe, musiq = get("niqe"), get("musiq")
    assert niqe.span == 100.0 and niqe.normalised(7.5) == pytest.approx(-0.075)  # lower is better: negated
    assert musiq.normalised(torch.tensor([50.0, 70.0])).tolist() == pytest.approx([0.5, 0.7])
    no_range = niqe.model_copy(update={"name": "x", "score_max": None})
    with pytest.raises(StudyError, match="metric x: pyiqa gives no finite score range"):
        no_range.normalised(1.0)
