"""Importers on real data (sr2afc) and on fixtures in the real layouts (HGGT, SBS180K expected layout)."""

import json
from collections import Counter

import pandas as pd
import pytest

from bench.errors import ManifestError
from bench.manifests import hggt, sbs180k, schema, votes
from bench.manifests.config import build_from_config
from tests.hggt_fixture import make_hggt

P, S, N = "Positive", "Similar", "Negative"


# --- sr2afc: real votes ----------------------------------------------------------------------
def test_sr2afc_matches_the_documented_vote_facts(sr2afc_root):
    df = votes.sr2afc(sr2afc_root)
    assert len(df) == 60 and (df["votes_a"] + df["votes_b"] == 15).all()
    assert (df["pref"] != "tie").all()
    margins = Counter(f"{max(a, b)}-{min(a, b)}" for a, b in zip(df["votes_a"], df["votes_b"]))
    assert margins == {"8-7": 9, "9-6": 13, "10-5": 11, "11-4": 13, "12-3": 7, "13-2": 5, "15-0": 2}
    wins = Counter()
    for r in df.itertuples():
        wins[r.method_a] += r.votes_a
        wins[r.method_b] += r.votes_b
    assert wins == {"ResShift": 309, "RealESRGAN": 228, "SwinIR": 220, "BSRGAN": 143}
    assert df["image_a_id"].str.len().eq(32).all() and df["width_a"].eq(1020).all()
    assert df["group"].nunique() == 10
    assert (df["kind"] == "human").all()
    # per-observer votes, anonymised: they add up to the pair's votes; 3 observers per pair
    per = df["observer_votes"].map(json.loads)
    assert all(sorted(d) == ["o1", "o2", "o3"] for d in per) and df["n_observers"].eq(3).all()
    assert [sum(v[0] for v in d.values()) for d in per] == list(df["votes_a"])
    assert [sum(v[1] for v in d.values()) for d in per] == list(df["votes_b"])


def _sr2afc_folder(base):
    """A small sr2afc folder in the real layout: 2 groups x 3 methods, every pair voted 3 times."""
    import itertools

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (base / "sr").mkdir(parents=True)
    lines = ["observer,session,left,right,selected,seconds"]
    for group in ("0801", "0802"):
        names = [f"{group}_{m}.png" for m in ("BSRGAN", "SwinIR", "ResShift")]
        for n in names:
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(base / "sr" / n)
        for (left, right), obs in itertools.product(itertools.combinations(names, 2), (1, 2, 3)):
            lines.append(f"{obs},{obs},{left},{right},{left if obs < 3 else right},2")
    (base / "votes.csv").write_text("\n".join(lines) + "\n")
    return base


def test_sr2afc_bad_row_names_file_and_line(tmp_path):
    base = _sr2afc_folder(tmp_path / "sr2afc")
    lines = (base / "votes.csv").read_text().splitlines()
    first = lines[1].split(",")
    first[4] = "nonexistent.png"
    (base / "votes.csv").write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")
    with pytest.raises(ManifestError, match=r"votes.csv:2: selected 'nonexistent.png'"):
        votes.sr2afc(base)


# --- pairs-csv --------------------------------------------------------------------------------
def _csv_root(tmp_path):
    """Small distinct images under tmp_path/imgs, named like the sr2afc files."""
    import numpy as np
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for name in ("0809_BSRGAN", "0809_SwinIR", "0814_BSRGAN", "0814_SwinIR", "0814_ResShift"):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{name}.png")
    return tmp_path


def test_pairs_csv_roundtrip_and_errors(tmp_path):
    root = _csv_root(tmp_path)
    f = tmp_path / "study.csv"
    f.write_text("image_a,image_b,votes_a,votes_b,split\n"
                 "imgs/0809_BSRGAN.png,imgs/0809_SwinIR.png,3,7,test\n"
                 "imgs/0814_BSRGAN.png,imgs/0814_SwinIR.png,4,4,test\n")
    df = votes.pairs_csv(f, root)
    assert list(df["pref"]) == ["b", "tie"] and list(df["split"]) == ["test", "test"]
    out = schema.write(df, tmp_path / "m.parquet")
    back = schema.read(out)
    assert back.attrs["iqa_study"]["importer"] == "pairs-csv" and len(back) == 2

    f.write_text("image_a,image_b,votes_a\nimgs/0809_BSRGAN.png,imgs/0809_SwinIR.png,3\n")
    with pytest.raises(ManifestError, match=r"study.csv: missing column\(s\) \['votes_b'\]"):
        votes.pairs_csv(f, root)
    f.write_text("image_a,image_b,votes_a,votes_b\nimgs/0809_BSRGAN.png,imgs/0809_SwinIR.png,three,1\n")
    with pytest.raises(ManifestError, match=r"study.csv:2: column 'votes_a' = 'three'"):
        votes.pairs_csv(f, root)
    f.write_text("image_a,image_b,votes_a,votes_b\nimgs/missing.png,imgs/0809_SwinIR.png,1,1\n")
    with pytest.raises(ManifestError, match=r"study.csv:2: column 'image_a' = 'imgs/missing.png': no such file"):
        votes.pairs_csv(f, root)


def test_read_rejects_non_manifest(tmp_path):
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(ManifestError, match="x.parquet: no 'iqa_study.manifest' metadata"):
        schema.read(tmp_path / "x.parquet")
    with pytest.raises(ManifestError, match="does not exist"):
        schema.read(tmp_path / "nope.parquet")


# --- HGGT -------------------------------------------------------------------------------------
GROUPS = {
    # stem: annotator -> labels of 01..04
    "0001-586-1469": {"A": [P, P, S, N], "B": [P, S, S, N], "C": [S, N, P, N]},
    "0002-0-288": {"A": [N, P, S, P], "B": [N, P, N, S], "C": [S, S, P, N]},
}
# effective labels: group 1 -> 01 P(2), 02 Similar (all differ), 03 S(2), 04 N(3)
#                   group 2 -> 01 N(2), 02 P(2), 03 Similar (all differ), 04 Similar (all differ)


def test_effective_label_rule():
    assert hggt.effective_label([P, P, S]) == (P, 2)
    assert hggt.effective_label([N, N, N]) == (N, 3)
    assert hggt.effective_label([P, S, N]) == (S, 1)


def test_hggt_pairs_from_real_layout(tmp_path):
    root = tmp_path / "HGGT"
    make_hggt(root / "Train", GROUPS)
    df = hggt.hggt(root, split="train")
    assert set(df["kind"]) == {"human", "inferred"}
    assert (df["kind"] == "inferred").eq(df["comparison"] == "enhanced_vs_enhanced").all()
    eo = df[df["comparison"] == "enhanced_vs_original"].set_index("pair_id")
    assert eo.loc["0001-586-1469:01-orig", "pref"] == "a"
    assert eo.loc["0001-586-1469:02-orig", "pref"] == "tie"
    assert eo.loc["0001-586-1469:04-orig", "pref"] == "b"
    assert (eo.loc["0001-586-1469:04-orig", ["votes_a", "votes_b"]] == [0, 3]).all()
    assert eo.loc["0002-0-288:02-orig", "pref"] == "a"
    ee = df[df["kind"] == "inferred"].set_index("pair_id")
    # group 1: P,S,S,N -> pairs with differing labels: 01-02,01-03,01-04,02-04,03-04
    assert sorted(p for p in ee.index if p.startswith("0001")) == [
        "0001-586-1469:01-02", "0001-586-1469:01-03", "0001-586-1469:01-04",
        "0001-586-1469:02-04", "0001-586-1469:03-04"]
    assert ee.loc["0001-586-1469:01-04", "pref"] == "a" and ee.loc["0001-586-1469:03-04", "pref"] == "a"
    assert ee.loc["0002-0-288:01-02", "pref"] == "b"  # Negative vs Positive
    assert ee["votes_a"].isna().all()
    assert df.loc[df.pair_id == "0001-586-1469:01-orig", "image_b"].item() == "original/0001-586-1469.png"


def test_hggt_test_layout_with_capital_original(tmp_path):
    root = tmp_path / "HGGT"
    make_hggt(root / "Test" / "GT" / "Test-100", GROUPS, original_dir="Original", batch=None)
    df = hggt.hggt(root, split="test")
    assert df.attrs["iqa_study"]["original_dir"] == "Original"
    assert df["image_b"].str.startswith("Original/").any()


def test_hggt_label_errors_name_the_file(tmp_path):
    base = tmp_path / "split"
    make_hggt(base, GROUPS)
    bad = base / "labels" / "0-20193" / "B" / "0002-0-288.json"
    doc = json.loads(bad.read_text())
    doc["Picture_3"]["File"] = "03"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match=r"B/0002-0-288.json: Picture_3.File is '03', expected '02'"):
        hggt.hggt(base)
    doc["Picture_3"]["File"], doc["Picture_3"]["Label"] = "02", "Great"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match=r"Picture_3.Label is 'Great'"):
        hggt.hggt(base)
    (base / "labels" / "0-20193" / "C" / "0001-586-1469.json").unlink()
    with pytest.raises(ManifestError, match=r"C/0001-586-1469.json: missing"):
        hggt.hggt(base)


def test_hggt_wrong_root_says_what_was_expected(tmp_path):
    (tmp_path / "something").mkdir()
    with pytest.raises(ManifestError, match="expected HGGT folders images/ and labels/"):
        hggt.hggt(tmp_path, split="train")


# --- SBS180K (documented expected layout) ----------------------------------------------------
def test_sbs180k_expected_layout(tmp_path):
    root = _csv_root(tmp_path)
    pd.DataFrame({"pair_id": ["p1", "p2"], "left_path": ["imgs/0809_BSRGAN.png", "imgs/0814_SwinIR.png"],
                  "right_path": ["imgs/0809_SwinIR.png", "imgs/0814_ResShift.png"], "votes_left": [1, 5],
                  "votes_right": [4, 2], "split": ["train", "test"]}).to_csv(root / "pairs.csv", index=False)
    df = sbs180k.sbs180k(root)
    assert list(df["pref"]) == ["b", "a"] and set(df["split"]) == {"train", "test"}


def test_sbs180k_unknown_layout_is_refused_loudly(tmp_path):
    (tmp_path / "train_dir").mkdir()
    (tmp_path / "labels.json").write_text("{}")
    with pytest.raises(ManifestError) as err:
        sbs180k.sbs180k(tmp_path)
    msg = str(err.value)
    assert "expected pairs.parquet or pairs.csv" in msg and "labels.json" in msg and "datasets.md 2.3" in msg


# --- configs and the synthetic sample -----------------------------------------------------------
def test_config_requires_env(tmp_path, monkeypatch):
    monkeypatch.delenv("HGGT_ROOT", raising=False)
    with pytest.raises(ManifestError, match="environment variable HGGT_ROOT is not set"):
        build_from_config("data_manifests/hggt_test.yaml")


def test_config_builds_hggt(tmp_path, monkeypatch):
    make_hggt(tmp_path / "Test" / "GT" / "Test-100", GROUPS, batch=None)
    monkeypatch.setenv("HGGT_ROOT", str(tmp_path))
    df = build_from_config("data_manifests/hggt_test.yaml")
    assert df.attrs["iqa_study"]["dataset"] == "hggt" and len(df) > 0


def test_sample_is_marked_synthetic(sample_manifest):
    df = schema.read(sample_manifest)
    assert df.attrs["iqa_study"]["synthetic"] is True
    assert len(df) == 78 and (df["pref"] == "tie").sum() == 6
    gap2 = df[df["gap"] == 2]
    assert set(zip(gap2["votes_a"].clip(lower=0), gap2["votes_b"])) <= {(9, 1), (1, 9)}


def test_cli_manifest_build_accepts_output_after_the_importer(tmp_path):
    from tests.cli import cli

    base = _sr2afc_folder(tmp_path / "sr2afc")
    out = tmp_path / "m.parquet"
    done = cli("manifest", "build", "sr2afc", base, "-o", out, "--store", tmp_path / "store", check=False)
    assert done.returncode == 0, done.stderr
    assert "6 pairs of dataset 'sr2afc'" in done.stdout and "registered in" in done.stdout
    df = schema.read(out)
    assert len(df) == 6 and (df["votes_a"] + df["votes_b"]).eq(3).all()
    # observers 1 and 2 chose the left image, observer 3 the right one; sides are sorted by name
    assert set(zip(df["votes_a"], df["votes_b"])) <= {(2, 1), (1, 2)}
    bad = cli("manifest", "build", "sr2afc", tmp_path, "-o", out, check=False)
    assert bad.returncode == 2 and "votes.csv: file does not exist" in bad.stderr


def test_config_errors_are_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("importer: pairs-csv\nroot: /data\n")
    with pytest.raises(ManifestError, match=r"c.yaml: importer pairs-csv needs field 'file'"):
        build_from_config(cfg)
    cfg.write_text("importer: csvs\nroot: /data\n")
    with pytest.raises(ManifestError, match=r"field 'importer' is 'csvs'; expected one of sr2afc, pairs-csv"):
        build_from_config(cfg)
