"""issue 15: `train-data synthetic --photos DIR` (real photographs as the originals of a SYNTHETIC multi-GT set)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.errors import StudyError


def _photos(folder: Path, n: int = 3, size=(150, 110)) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"p{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_train_data_synthetic_from_a_folder_of_photos(tmp_path, capsys):
    from bench.cli import main

    photos = _photos(tmp_path / "photos")
    out = tmp_path / "hggt"
    assert main(["train-data", "synthetic", str(out), "--photos", str(photos), "--groups-per-photo", "2",
                 "--size", "64", "--val-photos", "2"]) == 0
    assert "real photographs" in capsys.readouterr().out
    originals = sorted((out / "images" / "original").glob("*.png"))
    assert len(originals) == 6 and {p.name.split("-")[0] for p in originals} == {"0001", "0002", "0003"}
    # an original is a crop of its photograph: its pixels appear in the source at the recorded top/left
    stem = originals[0].stem
    _, top, left = map(int, stem.split("-"))
    src = np.asarray(Image.open(photos / "p0.png"))
    assert np.array_equal(np.asarray(Image.open(originals[0])), src[top:top + 64, left:left + 64])
    for k in ("01", "02", "03", "04"):
        assert (out / "images" / k / f"{stem}_{k}.png").is_file()
    assert len(list((out / "labels" / "A").glob("*.json"))) == 6
    assert sorted(p.name for p in (out / "val" / "hr").iterdir()) == ["p0.png", "p1.png"]
    record = json.loads((out / "source.json").read_text())
    assert record["originals"] == "real photographs" and record["photos"] == ["p0.png", "p1.png", "p2.png"]
    assert "SYNTHETIC" in record["enhanced_gts"] and "SYNTHETIC" in record["labels"]
    assert "REAL photographs" in (out / "SYNTHETIC.md").read_text()


def test_train_data_synthetic_refuses_bad_photo_folders(tmp_path):
    from sr_training.data.synthetic import build_synthetic_hggt

    with pytest.raises(StudyError, match="not a folder"):
        build_synthetic_hggt(tmp_path / "o1", photos=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudyError, match=r"--photos .*empty: no images \("):
        build_synthetic_hggt(tmp_path / "o2", photos=tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not a png")
    with pytest.raises(StudyError, match=r"broken\.png: cannot read --photos image"):
        build_synthetic_hggt(tmp_path / "o3", photos=bad, size=32)
