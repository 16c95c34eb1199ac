"""Issue 19: inputs no check reached (synthetic data over real data, ...)."""

from __future__ import annotations

import json

import pytest

from bench.errors import StudyError


def test_train_data_synthetic_refuses_a_folder_holding_real_data(tmp_path, capsys):
    from bench.cli import main

    real = tmp_path / "hggt"
    (real / "images" / "original").mkdir(parents=True)
    (real / "labels" / "A").mkdir(parents=True)
    photo = real / "images" / "original" / "0001-0-0.png"
    label = real / "labels" / "A" / "0001-0-0.json"
    photo.write_bytes(b"real photo bytes")
    label.write_text(json.dumps({"Picture_1": {"Name": "0001-0-0.png"}}))
    assert main(["train-data", "synthetic", str(real), "--groups-per-photo", "1", "--size", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not an earlier SYNTHETIC set" in err and len(err.splitlines()) == 1
    assert photo.read_bytes() == b"real photo bytes" and json.loads(label.read_text()) == {
        "Picture_1": {"Name": "0001-0-0.png"}}
    assert not (real / "SYNTHETIC.md").exists() and not (real / "images" / "01").exists()


def test_train_data_synthetic_rebuilds_its_own_output_and_an_interrupted_build(tmp_path, monkeypatch):
    from sr_training.data import synthetic

    out = tmp_path / "s"
    synthetic.build_synthetic_hggt(out, groups_per_photo=1, size=32)
    first = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    assert first and not (out / synthetic.BUILDING).exists()
    synthetic.build_synthetic_hggt(out, groups_per_photo=1, size=32)  # its own output: rebuilt in place
    assert sorted(p.relative_to(out) for p in out.rglob("*.png")) == first

    interrupted = tmp_path / "i"

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "enhance", boom)
    with pytest.raises(KeyboardInterrupt):
        synthetic.build_synthetic_hggt(interrupted, groups_per_photo=1, size=32)
    assert (interrupted / synthetic.BUILDING).exists() and not (interrupted / "SYNTHETIC.md").exists()
    monkeypatch.undo()
    synthetic.build_synthetic_hggt(interrupted, groups_per_photo=1, size=32)  # recognised as its own
    assert (interrupted / "SYNTHETIC.md").exists()
    with pytest.raises(StudyError, match="exists and is not a folder"):
        synthetic.build_synthetic_hggt(out / "SYNTHETIC.md")
