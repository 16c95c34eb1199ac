"""Engine faults that used to give wrong numbers silently or poison a store (issue 10)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pyiqa
import pytest
import torch
from PIL import Image

from bench import provenance
from bench.manifests.schema import file_hash
from bench.metrics import factory
from bench.metrics.table import get
from bench.scoring import images, options
from bench.scoring.engine import score_refs
from bench.scoring.images import DecodeError, ImageRef, content_hash, decode, to_float
from bench.scoring.options import ScoreOptions
from bench.store import Store


def _save(path: Path, im: Image.Image, **kw) -> Path:
    im.save(path, **kw)
    return path


def _decoded(path: Path) -> np.ndarray:
    """The engine's [0, 1] HxWx3 float array for a file."""
    return to_float(decode(str(path), content_hash(path.read_bytes()))).permute(1, 2, 0).numpy()


def _ramp(h=24, w=32) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) * 997 % 65536).astype(np.uint16)


def test_decode_16bit_float_and_alpha_against_numpy_references(tmp_path):
    g16 = _ramp()
    expect16 = np.repeat((g16.astype(np.float32) / 65535)[..., None], 3, axis=2)
    png16 = _save(tmp_path / "g16.png", Image.fromarray(g16))  # opens as I;16
    assert Image.open(png16).mode == "I;16"
    np.testing.assert_allclose(_decoded(png16), expect16, atol=1e-7)
    big = _save(tmp_path / "g16b.tif", Image.frombytes("I;16B", (32, 24), g16.astype(">u2").tobytes()))
    assert Image.open(big).mode == "I;16B"
    np.testing.assert_allclose(_decoded(big), expect16, atol=1e-7)
    # the old decode (convert("RGB")) clipped these to 255 -> almost white
    assert (np.asarray(Image.open(png16).convert("RGB")) == 255).mean() > 0.9 and _decoded(png16).mean() < 0.6

    f = (np.arange(24 * 32).reshape(24, 32) / (24 * 32)).astype(np.float32)
    ftif = _save(tmp_path / "f.tif", Image.fromarray(f, mode="F"))
    np.testing.assert_allclose(_decoded(ftif), np.repeat(f[..., None], 3, axis=2), atol=0)
    bad = _save(tmp_path / "f2.tif", Image.fromarray(f * 4, mode="F"))
    with pytest.raises(DecodeError, match=r"float image values in \[0, 3.99"):
        _decoded(bad)
    i32 = _save(tmp_path / "i32.tif", Image.fromarray(g16.astype(np.int32) * 70000))
    with pytest.raises(DecodeError, match="unsupported mode I"):
        _decoded(i32)

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (24, 32, 4), dtype=np.uint8)
    a = rgba[..., 3:4].astype(np.float32) / 255
    expect = rgba[..., :3].astype(np.float32) / 255 * a + (1 - a)  # over white
    np.testing.assert_allclose(_decoded(_save(tmp_path / "rgba.png", Image.fromarray(rgba, "RGBA"))), expect, atol=1e-6)
    la = rgba[..., [0, 3]]
    al = la[..., 1:2].astype(np.float32) / 255
    expect_la = np.repeat(la[..., :1].astype(np.float32) / 255 * al + (1 - al), 3, axis=2)
    np.testing.assert_allclose(_decoded(_save(tmp_path / "la.png", Image.fromarray(la, "LA"))), expect_la, atol=1e-6)
    idx = (np.arange(24 * 32).reshape(24, 32) % 4).astype(np.uint8)
    pal = Image.fromarray(idx, "L").convert("P")
    pal.putpalette([10, 20, 30, 200, 0, 0, 0, 200, 0, 0, 0, 200] + [0] * 756)
    ppath = _save(tmp_path / "p.png", pal, transparency=2)
    colours = np.array([[10, 20, 30], [200, 0, 0], [255, 255, 255], [0, 0, 200]], dtype=np.float32) / 255
    np.testing.assert_allclose(_decoded(ppath), colours[idx], atol=1e-6)
    # plain 8-bit RGB stays bit-identical to pyiqa's own reader
    rgb = _save(tmp_path / "rgb.png", Image.fromarray(rgba[..., :3]))
    from pyiqa.utils.img_util import imread2tensor

    assert torch.equal(to_float(decode(str(rgb))), imread2tensor(str(rgb), rgb=True))


def _run(refs, metrics, store, **kw):
    kw.setdefault("workers", 0)
    return score_refs(refs, [get(m) for m in metrics], store, run=provenance.new_run("test", {}),
                      options=ScoreOptions.resolve(progress=False, **kw))


def _iref(path: Path, iid: str | None = None) -> ImageRef:
    return ImageRef(iid or content_hash(path.read_bytes()), str(path), 32, 24)


def test_16bit_png_is_scored_from_its_real_values(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96] / 96
    g = (np.sin(9 * xx) * np.cos(7 * yy) * 0.35 + 0.5 + rng.normal(0, 0.08, (96, 96))).clip(0, 1)
    g16 = (g * 65535).round().astype(np.uint16)
    png = _save(tmp_path / "g16.png", Image.fromarray(g16))
    store = Store(tmp_path / "s")
    (s,) = _run([ImageRef(content_hash(png.read_bytes()), str(png), 96, 96)], ["piqe"], store)
    assert s.ok == 1
    import duckdb

    got = duckdb.connect().execute("SELECT score FROM read_parquet(?) WHERE status='ok'", [store.score_glob()]).fetchone()[0]
    x = torch.from_numpy(np.repeat((g16.astype(np.float32) / 65535)[None], 3, axis=0))[None]
    assert got == pytest.approx(pyiqa.create_metric("piqe", device="cpu")(x).item(), abs=1e-6)
    clipped = pyiqa.create_metric("piqe", device="cpu")(str(png)).item()  # pyiqa's convert("RGB") route
    assert clipped == 100.0 and got < 90  # clipped to white = "worst quality"; the real image is not


def test_content_hash_is_the_manifest_hash(tmp_path):
    p = _save(tmp_path / "x.png", Image.fromarray(_ramp()))
    assert content_hash(p.read_bytes()) == file_hash(p)


def test_transient_failures_retry_by_default_permanent_ones_are_sticky(tmp_path):
    good = _save(tmp_path / "good.png", Image.fromarray((_ramp() >> 8).astype(np.uint8)))
    later = tmp_path / "later.png"  # missing now: a transient I/O error
    payload = (np.arange(24 * 32 * 3).reshape(24, 32, 3) % 251).astype(np.uint8)
    _save(tmp_path / "tmp.png", Image.fromarray(payload))
    later_id = content_hash((tmp_path / "tmp.png").read_bytes())
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    refs = [_iref(good), ImageRef(later_id, str(later), 32, 24), _iref(corrupt)]
    store = Store(tmp_path / "s")
    (s,) = _run(refs, ["entropy"], store)
    assert (s.ok, s.error) == (1, 2)
    errors = sorted(e.split(": ", 1)[1] for e in s.first_errors)
    assert errors[0].startswith("decode: ") and errors[1].startswith("transient: io: FileNotFoundError")
    (tmp_path / "tmp.png").rename(later)  # the file system is back
    (s,) = _run(refs, ["entropy"], store)
    assert (s.scored, s.ok, s.skipped_existing, s.stored_failures_skipped) == (1, 1, 1, 1)
    (s,) = _run(refs, ["entropy"], store, retry_failed=True)
    assert (s.scored, s.error, s.skipped_existing) == (1, 1, 2)


class _Failing(torch.nn.Module):
    """Stand-in metric (never stored as a real score): raises the same error on every image."""

    lower_better = False

    def __init__(self, exc):
        super().__init__()
        self.exc, self.calls = exc, 0

    def forward(self, x, ref=None):
        self.calls += 1
        if isinstance(self.exc, list):
            if self.exc:
                raise self.exc.pop(0)
            return x.mean(dim=(1, 2, 3))
        raise self.exc


def _many(tmp: Path, n: int) -> list[ImageRef]:
    out, rng = [], np.random.default_rng(3)
    for i in range(n):
        p = _save(tmp / f"i{i}.png", Image.fromarray(rng.integers(20 * i, 100 + 20 * i, (24, 32, 3), dtype=np.uint8)))
        out.append(_iref(p))
    return out


def test_metric_stops_after_identical_consecutive_errors_and_retries_oom(tmp_path, monkeypatch):
    refs = _many(tmp_path, 6)
    fake = _Failing(ValueError("boom at step 12"))
    monkeypatch.setattr(factory, "create", lambda *a, **k: fake)
    store = Store(tmp_path / "s")
    (s,) = _run(refs, ["entropy"], store, max_consecutive_errors=3)
    assert (s.error, s.scored) == (3, 3) and s.stopped.startswith("stopped after 3 identical consecutive errors")
    assert fake.calls == 3  # the other 3 images were never sent; they stay unscored (no rows)
    # a CUDA OOM (transient) is retried in the run and then succeeds
    flaky = _Failing([torch.cuda.OutOfMemoryError("CUDA out of memory")])
    monkeypatch.setattr(factory, "create", lambda *a, **k: flaky)
    (s,) = _run(refs[:1], ["piqe"], Store(tmp_path / "s2"))
    assert (s.ok, s.error, flaky.calls) == (1, 0, 2)


def test_each_image_decoded_once_and_one_metric_resident(tmp_path, monkeypatch):
    refs = _many(tmp_path, 3)
    alive: list[weakref.ref] = []
    real_create, real_decode = factory.create, images.decode
    decodes: list[str] = []

    def create(*a, **k):
        gc.collect()
        assert not [w for w in alive if w() is not None], "a previous metric is still resident"
        m = real_create(*a, **k)
        alive.append(weakref.ref(m))
        return m

    def counting_decode(path, *a, **k):
        decodes.append(path)
        return real_decode(path, *a, **k)

    monkeypatch.setattr(factory, "create", create)
    monkeypatch.setattr(images, "decode", counting_decode)
    store = Store(tmp_path / "together")
    summaries = _run(refs, ["piqe", "entropy"], store)
    assert [s.ok for s in summaries] == [3, 3]
    assert sorted(decodes) == sorted(r.path for r in refs)  # once each, for both metrics
    assert len(alive) == 2
    gc.collect()
    assert [w() for w in alive] == [None, None]  # the last metric is released when the run ends too
    # chunks of one image: snake order reuses the boundary metric, still one resident, one decode each
    decodes.clear()
    alive.clear()
    summaries = _run(refs, ["piqe", "entropy"], Store(tmp_path / "chunked"), cache_bytes=1)
    assert [s.ok for s in summaries] == [3, 3] and sorted(decodes) == sorted(r.path for r in refs)
    assert len(alive) == 4  # 3 chunks x 2 metrics, the metric at each of the 2 boundaries kept
    import duckdb

    q = "SELECT image_id, metric, score FROM read_parquet(?) ORDER BY ALL"
    a = duckdb.connect().execute(q, [str(tmp_path / "together" / "scores" / "part-*-r*.parquet")]).fetchall()
    b = duckdb.connect().execute(q, [str(tmp_path / "chunked" / "scores" / "part-*-r*.parquet")]).fetchall()
    assert a == b and len(a) == 6


def test_pixel_cap_and_decompression_bomb_are_error_rows(tmp_path, monkeypatch):
    refs = _many(tmp_path, 2)
    big = _save(tmp_path / "big.png", Image.fromarray(np.zeros((100, 120, 3), np.uint8)))
    store = Store(tmp_path / "s")
    (s,) = _run([*refs, ImageRef(content_hash(big.read_bytes()), str(big), 120, 100)], ["entropy"], store,
                pixel_cap=5000)
    assert (s.ok, s.error) == (2, 1)
    assert "too large: 120x100 exceeds the pixel cap of 5000" in s.first_errors[0]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 12000 px > 2 x 1000: PIL's bomb guard
    (s,) = _run([ImageRef(content_hash(big.read_bytes()), str(big), 120, 100)], ["piqe"], Store(tmp_path / "s2"))
    assert s.error == 1 and "decode: DecompressionBombError" in s.first_errors[0]
    assert options.CPU_PIXEL_CAP == 16_000_000


def test_default_cpu_pixel_cap_applies_without_an_option(tmp_path, monkeypatch):
    """pixel_cap='auto' (the default) caps CPU runs at CPU_PIXEL_CAP; a GPU run has no default cap."""
    big = _save(tmp_path / "big.png", Image.fromarray(np.zeros((100, 120, 3), np.uint8)))
    ref = ImageRef(content_hash(big.read_bytes()), str(big), 120, 100)
    monkeypatch.setattr(options, "CPU_PIXEL_CAP", 5000)  # where ScoreOptions.resolve reads it
    (s,) = _run([ref], ["entropy"], Store(tmp_path / "s"), device="cpu")
    assert s.error == 1 and "exceeds the pixel cap of 5000" in s.first_errors[0]
    (s,) = _run([ref], ["entropy"], Store(tmp_path / "s2"), device="cpu", pixel_cap=0)
    assert s.ok == 1


def test_image_below_a_metrics_minimum_is_one_clear_row(tmp_path, niqe_plumbing_params):
    """NIQE needs 96 px per side (its block size): an 80x80 image is an error row with that reason,
    not pyiqa's internal error text; a 96x96 image scores."""
    rng = np.random.default_rng(0)
    small = _save(tmp_path / "small.png", Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)))
    ok = _save(tmp_path / "ok.png", Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)))
    refs = [ImageRef(content_hash(p.read_bytes()), str(p), n, n) for p, n in ((small, 80), (ok, 96))]
    (s,) = _run(refs, ["niqe"], Store(tmp_path / "s"))
    assert (s.ok, s.error) == (1, 1)
    assert s.first_errors[0].endswith(get("niqe").size_error(80, 80))
