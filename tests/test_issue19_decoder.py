"""Issue 19 / 18: one image decoder (bench.scoring.images.read_rgb) for scoring, training, validation and
evaluation, with true 16-bit values: 16-bit greyscale LR inputs are not clipped to white, 16-bit RGB(A) PNGs
are not read as their high byte. Ground truth: numpy values of PNGs written here byte by byte."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.errors import StudyError
from bench.scoring.images import content_hash, decode, read_rgb, to_float


def png16(path: Path, arr: np.ndarray) -> Path:
    """A 16-bit PNG of ``arr`` (HxW grey, HxWx2 grey+alpha, HxWx3 RGB, HxWx4 RGBA uint16), written without
    any imaging library: signature, IHDR, one zlib IDAT of filter-0 rows (big-endian samples), IEND."""
    arr = arr if arr.ndim == 3 else arr[..., None]
    h, w, c = arr.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def _values(shape, seed=0) -> np.ndarray:
    v = np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)
    v.flat[:4] = [0, 1, 256, 65535]  # the low byte matters: 1 and 256 differ only there / in the high byte
    return v


def test_16bit_rgb_png_decodes_to_its_true_values(tmp_path):
    v = _values((6, 9, 3))
    p = png16(tmp_path / "rgb48.png", v)
    with Image.open(p) as im:  # what PIL alone gives: the high byte only
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), (v >> 8).astype(np.uint8))
    got = read_rgb(p)
    assert got.dtype == np.float32 and got.shape == (6, 9, 3)
    np.testing.assert_array_equal(got, v.astype(np.float32) / 65535)
    # the scoring decoder is the same function
    scored = to_float(decode(str(p), content_hash(p.read_bytes()))).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(scored, got)


def test_16bit_rgba_and_grey_alpha_pngs_are_composited_over_white_in_16_bits(tmp_path):
    v = _values((5, 7, 4), seed=1)
    f = v.astype(np.float32) / 65535
    want = f[..., :3] * f[..., 3:] + (1 - f[..., 3:])
    np.testing.assert_allclose(read_rgb(png16(tmp_path / "rgba64.png", v)), want, atol=1e-6)
    la = _values((5, 7, 2), seed=2)
    g, a = la[..., 0].astype(np.float32) / 65535, la[..., 1:].astype(np.float32) / 65535
    np.testing.assert_allclose(read_rgb(png16(tmp_path / "la32.png", la)), np.repeat(g[..., None], 3, 2) * a + (1 - a),
                               atol=1e-6)


def test_8bit_images_decode_exactly_as_before(tmp_path):
    arr = np.random.default_rng(3).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "x.png"), arr.astype(np.float32) / 255)
    with pytest.raises(StudyError, match=r"y.png: cannot read GT image \(decode: "):
        (tmp_path / "y.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
        read_rgb(tmp_path / "y.png", "GT image")


def test_evaluate_inference_and_validation_loaders_keep_16bit_greyscale_lr_values(tmp_path):
    """A 16-bit greyscale LR: convert('RGB') made every value above 255 white; the loaders now agree with
    value / 65535 (infer.load_rgb is evaluate's loader, trainer._load_rgb validation's)."""
    from sr_training.infer import load_rgb
    from sr_training.trainer import _load_rgb

    v = _values((6, 8))
    p = png16(tmp_path / "lr16.png", v)
    want = torch.from_numpy(np.repeat((v.astype(np.float32) / 65535)[None], 3, axis=0))[None]
    for loader in (load_rgb, _load_rgb):
        got = loader(p)
        assert got.shape == (1, 3, 6, 8) and got.dtype == torch.float32
        assert torch.equal(got, want)
        assert got.min() < 0.9  # not the all-white of the old loaders


def test_training_gts_are_read_by_the_same_decoder(tmp_path):
    from sr_training.data.multigt import MultiGTDataset
    from tests.hggt_fixture import make_hggt

    labs = {a: ["Positive", "Negative", "Similar", "Positive"] for a in "ABC"}
    root = make_hggt(tmp_path / "hggt", {"g1": labs}, size=16, batch=None)
    v = _values((16, 16, 3), seed=4)
    png16(root / "images" / "02" / "g1_02.png", v)  # one GT as 48-bit RGB
    item = MultiGTDataset(str(root), "train", gt_size=16, hflip=False)[(0, 0)]
    gts = item["gts"]
    assert gts.dtype == torch.float32 and gts.shape == (5, 3, 16, 16)
    assert torch.equal(gts[2], torch.from_numpy(v.astype(np.float32) / 65535).permute(2, 0, 1))
    with Image.open(root / "images" / "original" / "g1.png") as im:
        assert torch.equal(gts[0], torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1))
