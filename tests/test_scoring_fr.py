"""Full-reference scoring (C1): psnr/ssim/LPIPS-ST through the engine against pyiqa and stlpips-pytorch."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pyiqa
import pytest
import torch
from PIL import Image

from bench import provenance
from bench.metrics.table import get
from bench.scoring.engine import score_refs
from bench.scoring.images import ImageRef, content_hash
from bench.scoring.options import ScoreOptions
from bench.scoring.protocol import NATIVE_CROP
from bench.store import Store


def _scores(store: Store) -> list[dict]:
    import duckdb

    con = duckdb.connect()
    df = con.execute("SELECT image_id, ref_id, metric, score, status, error, metric_config FROM read_parquet(?, "
                     "union_by_name=true) ORDER BY metric, image_id, ref_id", [store.score_glob()]).df()
    return df.to_dict("records")


def _ref(path: Path, ref: Path | None = None) -> ImageRef:
    with Image.open(path) as im:
        w, h = im.size
    return ImageRef(content_hash(path.read_bytes()), str(path), w, h,
                    content_hash(ref.read_bytes()) if ref else None, str(ref) if ref else None)


def _pair(tmp: Path, size=(96, 80), seed=0) -> tuple[Path, Path]:
    """A smooth reference and a noisy, slightly shifted version of it (8-bit RGB PNGs)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    ref = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)], axis=2) * 0.4 + 0.5
    img = np.roll(ref, 1, axis=1) + rng.normal(0, 0.05, ref.shape)
    paths = []
    for name, arr in (("img.png", img), ("ref.png", ref)):
        p = tmp / name
        Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8)).save(p)
        paths.append(p)
    return paths[0], paths[1]


def _run(refs, metrics, store, **kw):
    return score_refs(refs, [get(m) for m in metrics], store, run=provenance.new_run("test", {}),
                      options=ScoreOptions.resolve(workers=0, progress=False, **kw))


def _stlpips_package(img: Path, ref: Path, crop: int) -> float:
    """LPIPS-ST from the stand-alone package as its README uses it: [-1, 1] tensors."""
    from stlpips_pytorch import stlpips

    net = stlpips.LPIPS(net="alex", variant="shift_tolerant", verbose=False).eval()

    def load(p):
        t = torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        t = t[..., crop:-crop, crop:-crop] if crop else t
        return t * 2 - 1

    with torch.no_grad():
        return float(net(load(img), load(ref)).item())


def test_fr_psnr_ssim_follow_hggt_protocol_and_equal_pyiqa(tmp_path):
    img, ref = _pair(tmp_path)
    store = Store(tmp_path / "store")
    summaries = _run([_ref(img, ref)], ["psnr", "ssim"], store)
    assert [s.ok for s in summaries] == [1, 1]
    rows = {r["metric"]: r for r in _scores(store)}
    assert rows["psnr"]["ref_id"] == content_hash(ref.read_bytes())
    direct_psnr = pyiqa.create_metric("psnr", crop_border=4, device="cpu")(str(img), str(ref)).item()
    assert rows["psnr"]["score"] == pytest.approx(direct_psnr, abs=1e-6)
    # HGGT is RGB: the suite's ssim is pyiqa's RGB ssim (ssimc) with crop 4, not pyiqa's default Y-channel ssim
    rgb = pyiqa.create_metric("ssimc", crop_border=4, device="cpu")(str(img), str(ref)).item()
    y = pyiqa.create_metric("ssim", device="cpu")(str(img), str(ref)).item()
    assert rows["ssim"]["score"] == pytest.approx(rgb, abs=1e-6)
    assert abs(rgb - y) > 1e-4
    config = json.loads(rows["ssim"]["metric_config"])
    assert config["protocol"] == "hggt" and config["kwargs"] == {"crop_border": 4, "test_y_channel": False}
    # the pyiqa-default protocol is another key, and equals pyiqa's plain call
    _run([_ref(img, ref)], ["psnr"], store, fr_protocol="pyiqa")
    plain = [r for r in _scores(store) if r["metric"] == "psnr" and json.loads(r["metric_config"])["protocol"] == "pyiqa"]
    assert len(plain) == 1
    assert plain[0]["score"] == pytest.approx(pyiqa.create_metric("psnr", device="cpu")(str(img), str(ref)).item(),
                                              abs=1e-6)
    # rerun: every key is stored, nothing is scored again
    again = _run([_ref(img, ref)], ["psnr", "ssim"], store)
    assert [(s.scored, s.skipped_existing) for s in again] == [(0, 1), (0, 1)]


def test_stlpips_equals_stlpips_pytorch_on_a_generated_pair(tmp_path):
    img, ref = _pair(tmp_path, size=(96, 96), seed=1)
    store = Store(tmp_path / "store")
    _run([_ref(img, ref)], ["stlpips"], store)
    _run([_ref(img, ref)], ["stlpips"], store, fr_protocol="pyiqa")
    got = {json.loads(r["metric_config"])["protocol"]: r["score"] for r in _scores(store)}
    assert got["hggt"] == pytest.approx(_stlpips_package(img, ref, crop=4), abs=1e-5)
    assert got["pyiqa"] == pytest.approx(_stlpips_package(img, ref, crop=0), abs=1e-5)
    assert 0 < got["hggt"] < 1


@pytest.fixture
def set5_pair(tmp_path):
    from tests.conftest import shared_path

    root = shared_path("set5")
    hr = root / "hr" / "butterfly.png"
    with Image.open(hr) as h, Image.open(root / "lr_blind_x4" / "butterfly.png") as lr:
        up = lr.convert("RGB").resize(h.size, Image.Resampling.BICUBIC)
    sr = tmp_path / "butterfly_bicubic.png"
    up.save(sr)
    return sr, hr


def test_set5_psnr_and_stlpips_equal_the_reference_implementations(tmp_path, set5_pair):
    sr, hr = set5_pair
    store = Store(tmp_path / "store")
    _run([_ref(sr, hr)], ["psnr", "stlpips"], store)
    got = {r["metric"]: r["score"] for r in _scores(store)}
    assert got["psnr"] == pytest.approx(pyiqa.create_metric("psnr", crop_border=4, device="cpu")(str(sr), str(hr)).item(),
                                        abs=1e-6)
    assert 15 < got["psnr"] < 35
    assert got["stlpips"] == pytest.approx(_stlpips_package(sr, hr, crop=4), abs=1e-5)


def test_fr_rows_per_reference_size_mismatch_and_missing_reference(tmp_path):
    img, ref = _pair(tmp_path)
    other = tmp_path / "ref2.png"
    Image.open(ref).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
    small = tmp_path / "small.png"
    Image.open(ref).resize((40, 40)).save(small)
    store = Store(tmp_path / "store")
    (s,) = _run([_ref(img, ref), _ref(img, other), _ref(img, small), _ref(img)], ["psnr"], store)
    assert (s.ok, s.error, s.skipped_no_ref) == (2, 1, 1)  # the bare entry of img has no reference
    rows = _scores(store)
    assert len({r["ref_id"] for r in rows}) == 3 and {r["image_id"] for r in rows} == {content_hash(img.read_bytes())}
    bad = [r for r in rows if r["status"] != "ok"]
    assert bad[0]["error"] == "size mismatch: image 96x80 vs reference 40x40"
    (n,) = _run([_ref(img)], ["psnr"], store)
    assert (n.scored, n.skipped_no_ref) == (0, 1)


def test_native_crop_list_matches_pyiqa_archs():
    from pyiqa.archs.psnr_arch import PSNR
    from pyiqa.archs.ssim_arch import MS_SSIM, SSIM

    assert "crop_border" in inspect.signature(PSNR.__init__).parameters
    assert "crop_border" in inspect.signature(SSIM.__init__).parameters
    assert "crop_border" not in inspect.signature(MS_SSIM.__init__).parameters
    assert set(NATIVE_CROP) == {"psnr", "psnry", "ssim", "ssimc"}
