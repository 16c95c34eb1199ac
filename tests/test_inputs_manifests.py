"""Bad and hostile manifest input: paths outside the root, decompression bombs, same-image pairs,
encodings, ragged rows, overflowing votes, a disagreeing `pref`, `-o` on a directory; the `kind`
column (contract C2); anonymised observer votes; importer `--help`. All on generated images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.errors import ManifestError
from bench.manifests import schema, votes
from tests.cli import CliResult, cli

HEADER = "image_a,image_b,votes_a,votes_b\n"


def _img(path: Path, seed: int, size=(24, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "root"
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        _img(r / "imgs" / name, i)
    return r


def _csv(tmp_path: Path, body: str, name: str = "study.csv", *, raw: bytes | None = None) -> Path:
    f = tmp_path / name
    if raw is not None:
        f.write_bytes(raw)
    else:
        f.write_text(body)
    return f


def _cli(*args: str) -> CliResult:
    return cli(*args, check=False)


# --- paths stay inside the root ----------------------------------------------------------------
def test_absolute_dotdot_and_escaping_symlink_paths_are_refused(tmp_path, root):
    outside = _img(tmp_path / "secret" / "x.png", 9)
    cases = {
        str(outside): "is an absolute path",
        "imgs/../../secret/x.png": "contains '..'",
    }
    (root / "imgs" / "link.png").symlink_to(outside)
    cases["imgs/link.png"] = "outside the root"
    for rel, why in cases.items():
        f = _csv(tmp_path, HEADER + f"imgs/a.png,{rel},1,2\n")
        with pytest.raises(ManifestError, match=r"study.csv:2: column 'image_b'") as err:
            votes.pairs_csv(f, root)
        assert why in str(err.value) and "\n" not in str(err.value)
    # a symlink that stays inside the root is fine
    (root / "imgs" / "alias_c.png").symlink_to(root / "imgs" / "c.png")
    df = votes.pairs_csv(_csv(tmp_path, HEADER + "imgs/a.png,imgs/alias_c.png,1,2\n"), root)
    assert len(df) == 1


def test_a_stored_manifest_with_an_escaping_path_is_refused_on_read(tmp_path, root):
    df = votes.pairs_csv(_csv(tmp_path, HEADER + "imgs/a.png,imgs/b.png,1,2\n"), root)
    df.loc[0, "image_b"] = "../../etc/passwd"
    out = schema.write(df, tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match=r"m.parquet: pair .*image_b '../../etc/passwd' contains '..'"):
        schema.read(out)


# --- decompression bomb: one bad row, not a traceback ----------------------------------------------
def test_decompression_bomb_is_one_unreadable_row(tmp_path, root, monkeypatch):
    _img(root / "imgs" / "big.png", 5, size=(80, 80))  # 6,400 px > 2 x the lowered PIL limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    df = votes.pairs_csv(_csv(tmp_path, HEADER + "imgs/a.png,imgs/big.png,1,2\nimgs/a.png,imgs/b.png,2,1\n"), root)
    assert len(df) == 2
    bomb = df.iloc[0]
    assert (bomb["width_b"], bomb["height_b"]) == (-1, -1) and (bomb["width_a"], bomb["height_a"]) == (32, 24)
    meta = df.attrs["iqa_study"]
    assert meta["n_unreadable_images"] == 1
    assert meta["unreadable_examples"]["imgs/big.png"].startswith("DecompressionBombError")


# --- same-image pairs: resolved paths and content, not strings --------------------------------------
def test_same_image_pairs_are_caught_by_path_and_by_content(tmp_path, root):
    with pytest.raises(ManifestError, match=r"compares 'imgs/a.png' with itself"):
        votes.pairs_csv(_csv(tmp_path, HEADER + "imgs/a.png,imgs/./a.png,1,2\n"), root)
    (root / "imgs" / "alias_a.png").symlink_to(root / "imgs" / "a.png")
    with pytest.raises(ManifestError, match=r"are the same file"):
        votes.pairs_csv(_csv(tmp_path, HEADER + "imgs/a.png,imgs/alias_a.png,1,2\n"), root)
    (root / "imgs" / "copy_of_a.png").write_bytes((root / "imgs" / "a.png").read_bytes())
    with pytest.raises(ManifestError, match=r"have identical content"):
        votes.pairs_csv(_csv(tmp_path, HEADER + "imgs/a.png,imgs/copy_of_a.png,1,2\n"), root)


# --- CSV text problems -----------------------------------------------------------------------------
def test_csv_with_a_byte_order_mark_imports(tmp_path, root):
    f = _csv(tmp_path, "", raw=("\ufeff" + HEADER + "imgs/a.png,imgs/b.png,1,2\n").encode("utf-8"))
    df = votes.pairs_csv(f, root)
    assert list(df["pref"]) == ["b"] and list(df["image_a"]) == ["imgs/a.png"]


def test_non_utf8_csv_is_one_line(tmp_path, root):
    f = _csv(tmp_path, "", raw=(HEADER + "imgs/a.png,imgs/b.png,1,2,caf\xe9\n").encode("latin-1"))
    with pytest.raises(ManifestError, match=r"study.csv: not UTF-8 text \(byte 0xe9 at offset \d+\)") as err:
        votes.pairs_csv(f, root)
    assert "\n" not in str(err.value)


def test_ragged_rows_name_the_line(tmp_path, root):
    f = _csv(tmp_path, HEADER + "imgs/a.png,imgs/b.png,1,2\nimgs/a.png,imgs/c.png,1,2,oops\n")
    with pytest.raises(ManifestError, match=r"study.csv:3: 5 field\(s\), the header has 4"):
        votes.pairs_csv(f, root)
    f = _csv(tmp_path, "image_a,image_b,votes_a,votes_b,split\nimgs/a.png,imgs/b.png,1,2\n")
    with pytest.raises(ManifestError, match=r"study.csv:2: 4 field\(s\), the header has 5"):
        votes.pairs_csv(f, root)


def test_overflowing_and_negative_votes_are_one_line(tmp_path, root):
    f = _csv(tmp_path, HEADER + "imgs/a.png,imgs/b.png,1,99999999999999999999999\n")
    with pytest.raises(ManifestError, match=r"study.csv:2: column 'votes_b' = 99999999999999999999999, expected a "
                                            r"non-negative integer at most 2147483647"):
        votes.pairs_csv(f, root)
    f = _csv(tmp_path, HEADER + "imgs/a.png,imgs/b.png,-1,2\n")
    with pytest.raises(ManifestError, match=r"column 'votes_a' = -1"):
        votes.pairs_csv(f, root)


def test_a_pref_column_must_agree_with_the_votes(tmp_path, root):
    head = "image_a,image_b,votes_a,votes_b,pref\n"
    df = votes.pairs_csv(_csv(tmp_path, head + "imgs/a.png,imgs/b.png,7,3,a\nimgs/a.png,imgs/c.png,4,4,tie\n"), root)
    assert list(df["pref"]) == ["a", "tie"]
    with pytest.raises(ManifestError, match=r"study.csv:3: column 'pref' = 'a' disagrees with votes 3-7 \(majority 'b'\)"):
        votes.pairs_csv(_csv(tmp_path, head + "imgs/a.png,imgs/b.png,7,3,a\nimgs/a.png,imgs/c.png,3,7,a\n"), root)
    with pytest.raises(ManifestError, match=r"column 'pref' = 'left', expected one of a, b, tie"):
        votes.pairs_csv(_csv(tmp_path, head + "imgs/a.png,imgs/b.png,7,3,left\n"), root)


def test_output_that_is_a_directory_is_one_line_before_any_work(tmp_path, root):
    f = _csv(tmp_path, HEADER + "imgs/a.png,imgs/b.png,1,2\n")
    done = _cli("manifest", "build", "pairs-csv", str(f), "--root", str(root), "-o", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        (f"iqa-study: error: manifest build: -o {tmp_path} is a directory; expected a file path such as "
         f"{tmp_path / 'manifest.parquet'}")]


# --- kind (C2) and observers -------------------------------------------------------------------------
def test_pairs_csv_kind_defaults_to_human_and_is_validated(tmp_path, root):
    df = votes.pairs_csv(_csv(tmp_path, HEADER + "imgs/a.png,imgs/b.png,1,2\n"), root)
    assert list(df["kind"]) == ["human"]
    head = "image_a,image_b,votes_a,votes_b,kind\n"
    df = votes.pairs_csv(_csv(tmp_path, head + "imgs/a.png,imgs/b.png,1,2,inferred\nimgs/a.png,imgs/c.png,1,2,\n"), root)
    assert list(df["kind"]) == ["inferred", "human"]
    with pytest.raises(ManifestError, match=r"kind 'guessed', expected one of human, inferred"):
        votes.pairs_csv(_csv(tmp_path, head + "imgs/a.png,imgs/b.png,1,2,guessed\n"), root)


def test_sr2afc_keeps_anonymised_per_observer_votes(tmp_path):
    base = tmp_path / "sr2afc"
    for i, m in enumerate(("BSRGAN", "SwinIR", "ResShift")):
        _img(base / "sr" / f"0809_{m}.png", i)
    (base / "votes.csv").write_text(
        "observer,session,left,right,selected,seconds\n"
        "alice@lab,1,0809_BSRGAN.png,0809_SwinIR.png,0809_SwinIR.png,3\n"
        "alice@lab,1,0809_SwinIR.png,0809_BSRGAN.png,0809_SwinIR.png,3\n"
        "bob@lab,2,0809_BSRGAN.png,0809_SwinIR.png,0809_BSRGAN.png,4\n"
        "bob@lab,2,0809_ResShift.png,0809_SwinIR.png,0809_ResShift.png,4\n"
        "carol@lab,3,0809_SwinIR.png,0809_ResShift.png,0809_SwinIR.png,5\n")
    df = votes.sr2afc(base).set_index("pair_id")
    assert json.loads(df.loc["0809_BSRGAN__0809_SwinIR", "observer_votes"]) == {"o1": [0, 2], "o2": [1, 0]}
    assert json.loads(df.loc["0809_ResShift__0809_SwinIR", "observer_votes"]) == {"o2": [1, 0], "o3": [0, 1]}
    assert list(df["n_observers"]) == [2, 2]
    text = df.to_json() + json.dumps(df.attrs["iqa_study"])
    assert "alice" not in text and "bob" not in text and "carol" not in text


# --- importer --help describes the expected layout ------------------------------------------------------
@pytest.mark.parametrize("importer, expected", [
    ("sr2afc", ["votes.csv", "observer,session,left,right,selected,seconds", "<group>_<method>.png"]),
    ("pairs-csv", ["image_a,image_b,votes_a,votes_b", "relative to --root"]),
    ("hggt", ["labels/[<batch>/]{A,B,C}/<stem>.json", "'inferred'"]),
    ("sbs180k", ["pairs.parquet", "left_path, right_path"]),
])
def test_importer_help_describes_its_layout(importer, expected):
    done = _cli("manifest", "build", importer, "--help")
    assert done.returncode == 0, done.stderr
    for text in expected:
        assert text in done.stdout, (text, done.stdout)


def test_sbs180k_bad_votes_paths_and_encoding_are_one_line(tmp_path, root):
    from bench.manifests import sbs180k

    head = "pair_id,left_path,right_path,votes_left,votes_right,split\n"
    (root / "pairs.csv").write_bytes(("\ufeff" + head + "p1,imgs/a.png,imgs/b.png,1,4,test\n").encode())
    assert list(sbs180k.sbs180k(root)["pref"]) == ["b"]  # a byte-order mark is fine
    (root / "pairs.csv").write_text(head + "p1,imgs/a.png,imgs/b.png,1,4,test\np2,imgs/a.png,imgs/c.png,1e30,4,test\n")
    with pytest.raises(ManifestError, match=r"pairs.csv: row 3: column 'votes_left' = .*at most 2147483647"):
        sbs180k.sbs180k(root)
    (root / "pairs.csv").write_text(head + "p1,imgs/a.png,../../b.png,1,4,test\n")
    with pytest.raises(ManifestError, match=r"pairs.csv: row 2: column 'right_path': '../../b.png' contains '..'"):
        sbs180k.sbs180k(root)
    (root / "pairs.csv").write_bytes((head + "p1,imgs/a.png,imgs/b\xe9.png,1,4,test\n").encode("latin-1"))
    with pytest.raises(ManifestError, match=r"pairs.csv: not UTF-8 text"):
        sbs180k.sbs180k(root)
