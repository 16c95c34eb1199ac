"""`make demo`'s job end to end (NIQE parameters pre-seeded: the test makes no download)."""

import json
import subprocess
import sys

import pandas as pd


def test_demo_runs_the_main_job(tmp_path, niqe_params):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "bench.cli", "demo", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sample-synthetic    niqe       78         72" in done.stdout
    sel = json.loads((out / "selection.json").read_text())
    assert sel["training_metric"]["metric"] == "niqe" and sel["evidence"]["synthetic"] is True
    html = (out / "report" / "report.html").read_text()
    assert "SYNTHETIC" in html and 'src="phase1_ranking.png"' in html
    log = pd.read_csv(out / "train" / "train_log.csv")
    assert log["iter"].iloc[-1] == 20 and log[[f"chosen_{k}" for k in range(5)]].iloc[-1].sum() == 40
    assert (out / "train" / "checkpoints" / "iter_00000020.pt").is_file()
    assert (out / "train" / "config.yaml").is_file() and (out / "train" / "provenance.json").is_file()
