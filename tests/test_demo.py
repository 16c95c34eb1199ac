"""`make demo`'s job end to end at reduced size (NIQE parameters pre-seeded: the test makes no download)."""

import json

import pandas as pd

from bench.demo import run_demo
from bench.store import Store
from bench.store.views import connect


def test_demo_runs_the_whole_job_and_links_table_plots_and_crops(tmp_path, niqe_plumbing_params, monkeypatch, capsys):
    out = tmp_path / "demo"
    for var in ("SYNTH_HGGT_ROOT", "FT_INIT"):  # the demo sets them for its configs; restored after the test
        monkeypatch.setenv(var, "")
    run_demo(out, train_iters=2, ft_iters=1, groups_per_photo=1, heldout_per_photo=1, test_photos=2)
    page, stdout = out / "index.html", capsys.readouterr().out
    assert "sample-synthetic    niqe       78         72" in stdout
    sel = json.loads((out / "selection.json").read_text())
    assert sel["reward_metric"]["metric"] == "niqe" and sel["evidence"]["synthetic"] is True
    assert '<figure id="phase1_ranking"><img src="data:image/png;base64,' in (out / "report" / "report.html").read_text()
    log = pd.read_csv(out / "train" / "demo_swinir_amo" / "train_log.csv")
    assert log["iter"].iloc[-1] == 2

    # every model evaluated on both test sets, joined to its training run in the store
    con = connect(Store(out / "store"))
    evaluated = con.execute("SELECT DISTINCT run_name, test_set, weights FROM images WHERE role = 'sr_output' "
                            "ORDER BY ALL").fetchall()
    names = ["bicubic", "psnr_init_swinir_tiny", "demo_swinir_amo", "demo_swinir_upos"] + (
        ["demo_swinir_amo_ft"] if (out / "train" / "demo_swinir_amo_ft").is_dir() else [])
    assert {(n, t) for n, t, _ in evaluated} == {(n, t) for n in names for t in ("heldout", "synthetic_test")}

    # the report page links the comparison (table with LPIPS-ST), the P-D plots and the crop grids
    index = page.read_text()
    assert "SYNTHETIC" in index and "PSNR-oriented init" in index
    for link in ("report/report.html", "compare/compare.html", "compare/pd_synthetic_test.png",
                 "compare/crops_synthetic_test.png", "compare/pd_heldout.png"):
        assert f'href="{link}"' in index or f'src="{link}"' in index, link
        assert (out / link).is_file(), link
    table = (out / "compare" / "compare.md").read_text()
    assert "LPIPS-ST ↓" in table and "PSNR ↑" in table and "Gold standard" in table
    assert "baseline for Δ = demo_swinir_upos" in table
    csv = pd.read_csv(out / "compare" / "compare.csv")
    assert set(csv["test_set"]) == {"synthetic_test", "heldout"}
    assert csv.loc[csv["run"] == "demo_swinir_amo", "stlpips"].notna().all()
    assert (out / "userstudy" / "analysis" / "userstudy.html").is_file() and "userstudy/analysis/userstudy.html" in index
    assert "Next:" in stdout and "jupyter lab" in stdout
    # the reference rows come first, and every run links its loss / validation curves
    assert list(csv[csv["test_set"] == "heldout"]["run"])[:2] == ["bicubic", "psnr_init_swinir_tiny"]
    assert 'href="train/demo_swinir_upos/curves.png"' in index and (out / "train/demo_swinir_upos/curves.png").is_file()
