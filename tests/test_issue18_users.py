"""Issue 18, "What a new user sees": what a first run prints, folder scoring, evaluate, configs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BNB = "Failed to load CPU gemm_4bit_forward"
MESHGRID = "torch.meshgrid: in an upcoming release"


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "default"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600,
                          check=False)


def test_building_a_swinir_and_its_lora_prints_neither_notice_while_other_warnings_stay():
    run = _python(
        "from sr_training.archs import build_generator\n"
        "from sr_training.config import ArchConfig\n"
        "from sr_training.ft.config import LoRAConfig\n"
        "from sr_training.ft.lora import attach_lora\n"
        "net = build_generator(ArchConfig(type='swinir', size='tiny', scale=4))\n"
        "model = attach_lora(net, 'swinir', LoRAConfig(rank=2))\n"
        "print('lora tensors', sum('lora_' in n for n, _ in model.named_parameters()))\n"
        "import warnings; warnings.warn('a warning of our own')\n")
    assert run.returncode == 0, run.stderr
    assert "lora tensors" in run.stdout and int(run.stdout.split()[-1]) > 0
    assert MESHGRID not in run.stderr and BNB not in run.stderr
    assert "a warning of our own" in run.stderr  # nothing blanket-silenced
    # the same torch build does warn for a meshgrid outside the SwinIR construction
    bare = _python("import torch; torch.meshgrid(torch.arange(2), torch.arange(2))")
    assert MESHGRID in bare.stderr


def test_the_bitsandbytes_filter_drops_only_its_one_notice():
    from bench.quiet import BNB_LOGGER, drop_bitsandbytes_cpu_kernel_notice

    drop_bitsandbytes_cpu_kernel_notice()
    drop_bitsandbytes_cpu_kernel_notice()  # idempotent
    logger = logging.getLogger(BNB_LOGGER)
    assert len(logger.filters) == 1
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ...", "x")
        logger.warning("another bitsandbytes problem")
    finally:
        logger.removeHandler(handler)
    assert seen == ["another bitsandbytes problem"]


def test_pyproject_license_is_an_spdx_string():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert "PolyForm" in (ROOT / "README.md").read_text()


# --- folder scoring as pyiqa's CLI ------------------------------------------------------------


def _folder(tmp_path: Path, n: int = 3) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(3)
    folder = tmp_path / "sr"
    folder.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def test_score_images_needs_no_store_and_prints_a_mean_row_with_directions(tmp_path, capsys):
    import pyiqa

    from bench.cli import main
    from bench.env import cache_dirs

    folder = _folder(tmp_path)
    assert main(["score", "--images", str(folder), "--metrics", "piqe,entropy", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    scratch = cache_dirs().study / "scratch-store"
    assert f"store {scratch} (scratch; --store DIR to keep)" in out
    assert list((scratch / "scores").glob("*.parquet"))
    header = next(ln for ln in out.splitlines() if ln.lstrip().startswith("image"))
    assert header.split() == ["image", "piqe", "↓", "entropy", "↑"]
    piqe = pyiqa.create_metric("piqe", device="cpu")
    values = [piqe(str(folder / f"im{i}.png")).item() for i in range(3)]
    mean_row = next(ln for ln in out.splitlines() if ln.split()[:1] == ["mean"])
    assert float(mean_row.split()[1]) == pytest.approx(sum(values) / 3, abs=1e-4)
    # machine-readable output keeps plain column names and one row per image
    assert main(["score", "--images", str(folder), "--metrics", "piqe", "--format", "csv", "--no-store"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "image,piqe" and len(lines) == 4 and not any(ln.startswith("mean") for ln in lines)


def test_no_store_leaves_nothing_and_manifest_mode_still_needs_a_store(tmp_path, capsys, monkeypatch):
    from bench.cli import main

    monkeypatch.setenv("IQA_STUDY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    folder = _folder(tmp_path, n=1)
    assert main(["score", "--images", str(folder), "--metrics", "entropy", "--no-store"]) == 0
    assert "store none (--no-store)" in capsys.readouterr().out
    assert not (tmp_path / "home").exists() and not list((tmp_path / "tmp").iterdir())
    assert main(["score", "--manifest", str(tmp_path / "m.parquet"), "--metrics", "entropy"]) == 2
    assert "give --store DIR" in capsys.readouterr().err


def test_an_unavailable_metric_is_a_nonzero_exit_unless_allowed(tmp_path, capsys):
    from bench.cli import main

    folder = _folder(tmp_path, n=1)
    args = ["score", "--images", str(folder), "--metrics", "musiq,entropy", "--no-store", "--workers", "0"]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert "entropy" in out and "musiq ↑" not in out  # the table is still printed
    errors = [ln for ln in err.splitlines() if ln.startswith("iqa-study: error:")]
    assert len(errors) == 1 and "1 requested metric(s) could not run here" in errors[0] and "musiq" in errors[0]
    assert main([*args, "--allow-missing"]) == 0


# --- evaluate and compare -------------------------------------------------------------------------------------------

from tests.test_compare import store as compare_store  # noqa: F401  (the compare fixture: 3 images, 2 runs)


def _lr_hr(base: Path, lr_name: str = "LR", hr_name: str = "HR") -> tuple[Path, Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    for sub, size in ((lr_name, 8), (hr_name, 32)):
        (base / sub).mkdir(parents=True)
        for name in ("a", "b"):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(base / sub / f"{name}.png")
    return base / lr_name, base / hr_name


def test_evaluate_test_folder_without_known_lr_names_lists_what_it_tried(tmp_path, capsys):
    from bench.cli import main
    from tests.test_evaluate import _suite_checkpoint

    _lr_hr(tmp_path / "myset")
    ckpt = tmp_path / "m.pt"
    _suite_checkpoint(ckpt)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--test", str(tmp_path / "myset"),
                 "--store", str(tmp_path / "s"), "--metrics", "entropy"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for tried in ("myset/lr_blind_x4/", "myset/lr/", "it holds HR/, LR/", "--lr DIR [--hr DIR]"):
        assert tried in err, err


def test_evaluate_lr_hr_folders_and_the_closing_mean_table(tmp_path, capsys):
    import pandas as pd

    from bench.cli import main
    from bench.store import Store
    from bench.store.views import connect
    from tests.test_evaluate import _suite_checkpoint

    lr, hr = _lr_hr(tmp_path / "myset")
    ckpt = tmp_path / "m.pt"
    _suite_checkpoint(ckpt, iteration=7, name="tiny_rrdb_upos")
    store = tmp_path / "s"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--lr", str(lr), "--hr", str(hr), "--name", "mine",
                 "--store", str(store), "--metrics", "entropy,psnr", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    con = connect(Store(store))
    per = con.execute("SELECT metric, avg(score), count(*) FROM runs_eval WHERE test_set = 'mine' "
                      "GROUP BY metric ORDER BY metric").fetchall()
    assert [(m, n) for m, _, n in per] == [("entropy", 2), ("psnr", 2)]
    summary = con.execute("SELECT run, arch, sampling, iteration, test_set, n_images, mean, n_scored "
                          "FROM runs_eval_summary").fetchall()
    assert len(summary) == 1
    run, _arch, sampling, iteration, ts, n, mean, n_scored = summary[0]
    assert (run, sampling, iteration, ts, n) == ("tiny_rrdb_upos", "upos", 7, "mine", 2)
    assert mean == {m: pytest.approx(v) for m, v, _ in per} and n_scored == {"entropy": 2, "psnr": 2}
    tail = out[out.index("mean over the test images"):].splitlines()
    assert tail[1].split() == ["test_set", "n_images", "entropy", "↑", "psnr", "↑"]
    cells = tail[2].split()
    assert cells[:2] == ["mine", "2"]
    assert float(cells[2]) == pytest.approx({m: v for m, v, _ in per}["entropy"], abs=1e-4)
    assert float(cells[3]) == pytest.approx({m: v for m, v, _ in per}["psnr"], abs=1e-4)
    assert isinstance(pd.DataFrame(summary), pd.DataFrame)


def test_runs_eval_summary_is_one_row_per_model_and_test_set(tmp_path):
    from bench.store import Store
    from bench.store.images import register_images
    from bench.store.views import connect
    from tests.test_evaluate import _img, _score

    store = Store(tmp_path / "s")
    a = {"run_name": "upos", "arch": "swinir", "sampling": "upos", "iteration": 10, "checkpoint_sha256": "a" * 64,
         "weights": "ema"}
    b = {**a, "run_name": "amo", "sampling": "amo", "checkpoint_sha256": "b" * 64}
    register_images(store, [_img("a1", "sr_output", "g1", **a), _img("a2", "sr_output", "g2", **a),
                            _img("b1", "sr_output", "g1", **b), _img("b2", "sr_output", "g2", **b)])
    store.write_scores([_score("a1", None, "niqe", 4.0, lower_better=True), _score("a2", None, "niqe", 6.0, lower_better=True),
                        _score("b1", None, "niqe", 3.0, lower_better=True),
                        _score("b2", None, "niqe", None, status="error", lower_better=True),
                        _score("a1", None, "niqe", 9.0, config="c2", lower_better=True)], "fixture", 0, 0)
    rows = connect(store).execute("SELECT run, sampling, n_images, mean, n_scored, lower_better FROM runs_eval_summary "
                                  "ORDER BY run").fetchall()
    assert rows == [("amo", "amo", 2, {"niqe": 3.0}, {"niqe": 1}, {"niqe": True}),
                    ("upos", "upos", 2, {"niqe@c1": 5.0, "niqe@c2": 9.0}, {"niqe@c1": 2, "niqe@c2": 1},
                     {"niqe@c1": True, "niqe@c2": True})]


def test_compare_warns_once_when_cis_rest_on_few_images(compare_store, tmp_path, capsys):  # noqa: F811
    from bench.cli import main
    from bench.report.compare import MIN_CI_IMAGES

    out = tmp_path / "cmp"
    assert main(["compare", "--store", str(compare_store.root), "-o", str(out), "--n-boot", "50"]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert err == [(f"warning: test set t: the bootstrap CIs rest on 3 paired image(s) (fewer than {MIN_CI_IMAGES}); "
                    f"they are rough at best, read them as indications only")]
    assert err[0] in (out / "compare.md").read_text()


# --- training with one's own study ----------------------------------------------------------------------------------

CONFIGS = ROOT / "sr_training" / "configs"


def _selection(path: Path, best="topiq_nr", sampling="niqe", reward="niqe", ranking=(), complementary=()) -> Path:
    import json

    from bench.study.select import SCHEMA

    rec = lambda m: {"metric": m, "config_hash": "c", "reason": "test"}
    path.write_text(json.dumps({
        "schema": SCHEMA, "best": {"metric": best}, "sampling_metric": rec(sampling), "reward_metric": rec(reward),
        "training_metric": rec(reward), "configs": {m: "c" for m in ranking},
        "complementary": [{"metric": m} for m in complementary], "warnings": []}))
    return path


def test_train_selection_replaces_the_pinned_sampling_metric(tmp_path, monkeypatch):
    from sr_training.config import load_config, selection_overrides
    from sr_training.iqa import resolve_metric

    monkeypatch.setenv("SYNTH_HGGT_ROOT", str(tmp_path))
    sel = _selection(tmp_path / "my selection #1.json", sampling="piqe")
    config = CONFIGS / "smoke_swinir_amo.yaml"
    assert load_config(config).sampling.iqa.metric == "niqe"  # what the shipped config pins
    over = selection_overrides(config, [], sel)
    cfg = load_config(config, over)
    assert cfg.sampling.iqa.metric is None and cfg.sampling.iqa.selection == str(sel.resolve())
    spec, why = resolve_metric(cfg.sampling.iqa)
    assert spec.name == "piqe" and "sampling_metric" in why
    # an explicit override given after --selection still wins
    assert load_config(config, [*over, "sampling.tau=0.5"]).sampling.tau == 0.5
    assert "ft.reward.selection" not in " ".join(over)


def test_train_selection_on_an_ft_config_sets_the_reward_and_frees_the_guard(tmp_path, monkeypatch):
    from sr_training.config import load_config, selection_overrides
    from sr_training.ft.reward import resolve_terms

    monkeypatch.setenv("SYNTH_HGGT_ROOT", str(tmp_path))
    monkeypatch.setenv("FT_INIT", str(tmp_path / "base"))
    sel = _selection(tmp_path / "sel.json", sampling="piqe", reward="niqe")
    config = CONFIGS / "smoke_ft_swinir.yaml"
    cfg = load_config(config, selection_overrides(config, [], sel))
    assert cfg.ft.reward.metric is None and cfg.ft.reward.selection == str(sel.resolve())
    assert cfg.ft.guard.metrics is None  # the guard follows the selection (watched_metrics)
    assert [spec.name for spec, _, _ in resolve_terms(cfg.ft.reward)] == ["niqe"]


def test_train_selection_is_refused_where_nothing_uses_a_metric(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.setenv("SYNTH_HGGT_ROOT", str(tmp_path))
    sel = _selection(tmp_path / "sel.json")
    assert main(["train", "--config", str(CONFIGS / "smoke_swinir_upos.yaml"), "--out", str(tmp_path / "r"),
                 "--selection", str(sel)]) == 2
    err = capsys.readouterr().err
    assert "uses no metric (sampling strategy 'upos'" in err and err.count("\n") == 1
    assert main(["train", "--config", str(CONFIGS / "smoke_swinir_amo.yaml"), "--out", str(tmp_path / "r"),
                 "--selection", str(tmp_path / "missing.json")]) == 2
    assert "--selection" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_smoke_swinir_upos_ships_beside_the_amo_one(tmp_path, monkeypatch):
    from sr_training.config import load_config

    monkeypatch.setenv("SYNTH_HGGT_ROOT", str(tmp_path))
    upos, amo = load_config(CONFIGS / "smoke_swinir_upos.yaml"), load_config(CONFIGS / "smoke_swinir_amo.yaml")
    assert upos.sampling.strategy == "upos" and upos.sampling.iqa.metric is None
    assert (upos.arch, upos.data, upos.loss, upos.schedule) == (amo.arch, amo.data, amo.loss, amo.schedule)


def test_a_missing_config_variable_names_the_command_that_makes_it(monkeypatch):
    from bench.errors import StudyError
    from sr_training.config import load_config

    monkeypatch.delenv("SYNTH_HGGT_ROOT", raising=False)
    with pytest.raises(StudyError) as exc:
        load_config(CONFIGS / "smoke_swinir_amo.yaml")
    assert "${SYNTH_HGGT_ROOT}" in str(exc.value) and "iqa-study train-data synthetic" in str(exc.value)


def test_the_guard_watches_the_top_ranked_metrics_and_the_complementary_ones(tmp_path, monkeypatch):
    from bench.metrics import weights
    from sr_training.ft.config import GuardConfig
    from sr_training.ft.guard import watched_metrics

    have = {"niqe", "piqe", "brisque", "ilniqe", "entropy"}
    monkeypatch.setattr(weights, "is_available", lambda spec: spec.name in have)
    sel = _selection(tmp_path / "sel.json", best="musiq", sampling="piqe", reward="niqe",
                     ranking=("musiq", "piqe", "niqe", "psnr", "brisque", "ilniqe"), complementary=("entropy", "niqe"))
    specs, notes = watched_metrics(GuardConfig(), str(sel), ["niqe"])
    # musiq (best) has no weights here: noted; piqe and brisque are the two top-ranked NR metrics besides Q
    # (niqe is Q, psnr is FR); entropy is complementary; Q itself is never "watched"
    assert [s.name for s in specs] == ["piqe", "brisque", "entropy"]
    assert "top-ranked metric musiq skipped: weights not available here" in notes
    assert notes[-1].endswith("top-ranked piqe, brisque; complementary entropy")


# --- compare labels and P-D chains ----------------------------------------------------------------------------------


def _runs(*rows):
    import pandas as pd

    cols = ["run_name", "arch", "sampling", "ft_variant", "iteration", "checkpoint_sha256", "weights", "train_metric",
            "base_sha256"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


def test_compare_labels_say_arch_sampling_metric_before_any_hash():
    from bench.report.compare import run_labels

    runs = _runs(("smoke_swinir_amo", "swinir-tiny", "amo", None, 20, "a" * 64, "ema", "niqe", None),
                 ("smoke_swinir_amo", "swinir-tiny", "amo", None, 20, "b" * 64, "ema", "piqe", None),
                 ("upos", "swinir-tiny", "upos", None, 20, "c" * 64, "ema", None, None),
                 ("twice", "rrdb-tiny", "upos", None, 10, "d" * 64, "ema", None, None),
                 ("twice", "rrdb-tiny", "upos", None, 30, "e" * 64, "ema", None, None),
                 ("same", "rrdb-tiny", "upos", None, 30, "f" * 64, "ema", None, None),
                 ("same", "rrdb-tiny", "upos", None, 30, "0" * 64, "ema", None, None))
    assert run_labels(runs) == ["smoke_swinir_amo (swinir-tiny / amo / niqe)", "smoke_swinir_amo (swinir-tiny / amo / piqe)",
                                "upos", "twice (rrdb-tiny / upos)@10", "twice (rrdb-tiny / upos)@30",
                                "same (rrdb-tiny / upos)@30 ema #ffffffff", "same (rrdb-tiny / upos)@30 ema #00000000"]


def test_pd_lines_join_a_base_and_its_own_ft_runs_only():
    from bench.report.compare import GOLD, pd_chains

    t = _runs(("bicubic", "bicubic", None, None, None, "r" * 64, "none", None, None),
              ("psnr_init", "swinir-tiny", None, None, None, "p" * 64, "file", None, None),
              ("amo_niqe", "swinir-tiny", "amo", None, 20, "a" * 64, "ema", "niqe", None),
              ("amo_piqe", "swinir-tiny", "amo", None, 20, "b" * 64, "ema", "piqe", None),
              ("ft_b", "swinir-tiny", "amo", "ft_b", 6, "d" * 64, "merged", "niqe", "a" * 64),
              ("ft_a", "swinir-tiny", "amo", "ft_a", 6, "c" * 64, "merged", "niqe", "a" * 64),
              ("ft_orphan", "swinir-tiny", "amo", "ft_o", 6, "e" * 64, "merged", "niqe", "9" * 64),
              (GOLD, None, None, None, None, None, None, None, None))
    t["run"] = t["run_name"]
    chains, refs = pd_chains(t)
    assert [[r.run for r in c] for c in chains] == [["amo_niqe", "ft_a", "ft_b"], ["amo_piqe"], ["ft_orphan"]]
    assert [r.run for r in refs] == ["bicubic", "psnr_init"]


def test_evaluated_models_record_their_metric_and_ft_base(tmp_path):
    import json

    import torch

    from sr_training.infer import load_model
    from tests.test_evaluate import _tiny_rrdb

    run = tmp_path / "runs" / "amo" / "checkpoints"
    run.mkdir(parents=True)
    net = _tiny_rrdb()
    cfg = {"name": "amo", "arch": {"type": "rrdb", "size": "tiny", "scale": 4},
           "sampling": {"strategy": "amo", "iqa": {"metric": None, "selection": "sel.json"}}}
    torch.save({"iteration": 3, "ema": net.state_dict(), "config": json.dumps(cfg)}, run / "iter_3.pt")
    (run.parent / "provenance.json").write_text(json.dumps({"sampling_metric": {"metric": "piqe"}}))
    base = load_model(run / "iter_3.pt")
    assert base.info["train_metric"] == "piqe" and base.info.get("base_sha256") is None
    merged = tmp_path / "merged.pth"
    torch.save(net.state_dict(), merged)
    merged.with_name("merged.pth.json").write_text(json.dumps({
        "run_name": "amo_ft", "adapter_sha256": "x", "base_sha256": base.info["checkpoint_sha256"],
        "reward": [{"metric": "niqe", "weight": 1.0}], "sampling": "amo", "arch": "rrdb", "arch_size": "tiny"}))
    ft = load_model(merged)
    assert ft.info["train_metric"] == "niqe" and ft.info["base_sha256"] == base.info["checkpoint_sha256"]
    assert ft.info["ft_variant"] == "amo_ft"


def test_methods_come_from_id_method_file_names_only_when_every_pair_follows_it():
    import pandas as pd

    from bench.report.analyses import methods_from_names

    pairs = pd.DataFrame({"image_a": ["sr/0001_esrgan.png", "0002_swinir_x4.png"],
                          "image_b": ["sr/0001_bicubic.png", "0002_ldm.png"]})
    got = methods_from_names(pairs)
    assert list(got["method_a"]) == ["esrgan", "swinir_x4"] and list(got["method_b"]) == ["bicubic", "ldm"]
    mixed = pd.DataFrame({"image_a": ["0001_esrgan.png", "0002_swinir.png"], "image_b": ["0001_ldm.png", "0003_ldm.png"]})
    assert "method_a" not in methods_from_names(mixed)  # ids differ in one pair: the convention does not hold
    plain = pd.DataFrame({"image_a": ["a.png"], "image_b": ["b.png"]})
    assert "method_a" not in methods_from_names(plain)


def test_readme_leads_with_the_vote_csv_path_and_its_example_builds(tmp_path, capsys):
    """The README's first data section is the generic vote CSV; its example CSV and command work as printed."""
    import re

    import numpy as np
    import pandas as pd
    from PIL import Image

    from bench.cli import main

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Real data, end to end", 1)[1]
    assert section.index("pairs-csv") < section.index("manifest build sr2afc")
    csv_text = re.search(r"```text\n(image_a,image_b,votes_a,votes_b.*?)```", section, re.DOTALL).group(1)
    command = re.search(r"iqa-study (manifest build pairs-csv votes\.csv .*)", section).group(1).split()
    root = tmp_path / "my_study"
    rng = np.random.default_rng(0)
    for line in csv_text.strip().splitlines()[1:]:
        for rel in line.split(",")[:2]:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / rel)
    (tmp_path / "votes.csv").write_text(csv_text)
    args = [a.replace("/data/my_study", str(root)).replace("runs/mine", str(tmp_path / "mine")) for a in command]
    args[args.index("votes.csv")] = str(tmp_path / "votes.csv")
    assert main(args) in (0, None)
    m = pd.read_parquet(tmp_path / "mine" / "manifest.parquet")
    assert len(m) == 2 and set(m["dataset"]) == {"my_study"} and set(m["group"].astype(str)) == {"0801"}
    assert m["votes_a"].tolist() == [9, 4] and m["votes_b"].tolist() == [6, 11]
