"""NIQE parameter fetch (data only, never executed; pinned hashes; own cache), niqe_matlab
availability, weight identity in the config key, NIQE's minimum image size, and the
IQA_STUDY_REQUIRE_SHARED switch. No test touches the network: a fake index is served on 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from bench.env import cache_dirs
from bench.errors import WeightsMissing
from bench.metrics import factory, weights
from bench.metrics.table import get
from tests.cli import cli

ROOT = "basicsr-fixed-1.4.2"


def _npz(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(36, 36))
    buf = io.BytesIO()
    np.savez(buf, mu_pris_param=rng.normal(size=(1, 36)), cov_pris_param=a @ a.T + 36 * np.eye(36),
             gaussian_window=np.ones((7, 7)) / 49)
    return buf.getvalue()


def _sdist(npz: bytes, marker: Path, *, extra: dict[str, bytes] | None = None, npz_as_symlink: bool = False) -> bytes:
    """A fake basicsr-fixed sdist: its setup.py would write ``marker`` if anything ran it."""
    setup = f"from pathlib import Path\nPath({str(marker)!r}).write_text('setup.py ran')\n" \
            "from setuptools import setup\nsetup(name='basicsr-fixed', version='1.4.2')\n"
    files = {f"{ROOT}/setup.py": setup.encode(), f"{ROOT}/PKG-INFO": b"Metadata-Version: 2.1\nName: basicsr-fixed\n"
             b"Version: 1.4.2\n", **(extra or {})}
    if not npz_as_symlink:
        files[weights.NIQE_MEMBER] = npz
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if npz_as_symlink:
            info = tarfile.TarInfo(weights.NIQE_MEMBER)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return buf.getvalue()


@pytest.fixture
def fake_index(tmp_path, monkeypatch):
    """Serve a PEP 503 simple index on 127.0.0.1 and point PIP_INDEX_URL at it; returns a function
    that publishes an archive and returns its path on disk."""
    web = tmp_path / "web"
    pkg = web / "simple" / "basicsr-fixed"
    pkg.mkdir(parents=True)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(web))
    handler.log_message = lambda *a, **k: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.server_address[1]}/simple")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.setenv("IQA_STUDY_HOME", str(tmp_path / "home"))

    def publish(archive: bytes) -> Path:
        (web / "files").mkdir(exist_ok=True)
        (web / "files" / weights.NIQE_ARCHIVE).write_bytes(archive)
        (pkg / "index.html").write_text(f'<html><body><a href="../../files/{weights.NIQE_ARCHIVE}#sha256='
                                        f'{hashlib.sha256(archive).hexdigest()}">{weights.NIQE_ARCHIVE}</a></body></html>')
        return web / "files" / weights.NIQE_ARCHIVE

    yield publish
    server.shutdown()
    server.server_close()


def _pin(monkeypatch, archive: bytes, npz: bytes) -> None:
    monkeypatch.setattr(weights, "NIQE_ARCHIVE_SHA256", hashlib.sha256(archive).hexdigest())
    monkeypatch.setattr(weights, "NIQE_NPZ_SHA256", hashlib.sha256(npz).hexdigest())


def test_fetched_archive_is_never_executed_and_a_wrong_hash_is_refused(fake_index, tmp_path):
    marker = tmp_path / "setup_py_ran"
    fake_index(_sdist(_npz(0), marker))
    with pytest.raises(WeightsMissing) as err:  # the fake archive is not the pinned one
        weights.seed_niqe()
    assert not marker.exists(), "the fetched archive's setup.py was executed"
    msg = str(err.value)
    assert "\n" not in msg and "archive sha256" in msg and "not the pinned" in msg and weights.NIQE_ARCHIVE in msg
    assert not marker.exists()
    assert not weights.niqe_mat_path().exists()


def test_fetch_reads_only_the_npz_into_the_project_cache(fake_index, tmp_path, monkeypatch):
    marker, evil = tmp_path / "setup_py_ran", tmp_path / "evil.txt"
    npz = _npz(1)
    archive = _sdist(npz, marker, extra={f"{ROOT}/../../evil.txt": b"x", "/tmp/iqa-study-abs-evil.txt": b"x"})
    fake_index(archive)
    _pin(monkeypatch, archive, npz)

    def no_process(*a, **k):  # the fetch is data only: no pip, no build backend, no shell
        raise AssertionError(f"seed_niqe started a process: {a[:1]}")

    for mod, name in ((subprocess, "Popen"), (os, "system"), (os, "execv"), (os, "execvp"), (os, "posix_spawn")):
        monkeypatch.setattr(mod, name, no_process)
    written = weights.seed_niqe()
    assert not marker.exists() and not evil.exists() and not Path("/tmp/iqa-study-abs-evil.txt").exists()
    assert written == [weights.niqe_mat_path().with_name("niqe_pris_params.npz"), weights.niqe_mat_path()]
    assert written[0].read_bytes() == npz
    assert weights.niqe_mat_path().is_relative_to(tmp_path / "home")
    pyiqa_cache = cache_dirs().pyiqa
    assert not any(pyiqa_cache.glob("niqe*")) if pyiqa_cache.is_dir() else True
    ref = np.load(io.BytesIO(npz))
    mat = scipy.io.loadmat(weights.niqe_mat_path())
    np.testing.assert_array_equal(np.ravel(mat["mu_prisparam"]), np.ravel(ref["mu_pris_param"]))
    np.testing.assert_array_equal(mat["cov_prisparam"], ref["cov_pris_param"])
    first = weights.niqe_mat_path().read_bytes()
    weights.seed_niqe()  # deterministic bytes: the weight identity is the same on every machine and rerun
    assert weights.niqe_mat_path().read_bytes() == first


def test_npz_member_that_is_a_symlink_is_refused(fake_index, tmp_path, monkeypatch):
    archive = _sdist(b"", tmp_path / "m", npz_as_symlink=True)
    fake_index(archive)
    _pin(monkeypatch, archive, b"")
    with pytest.raises(WeightsMissing, match="is not a regular file"):
        weights.seed_niqe()


def test_wrong_npz_hash_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_STUDY_HOME", str(tmp_path / "home"))
    bad = tmp_path / "niqe_pris_params.npz"
    bad.write_bytes(_npz(2))
    with pytest.raises(WeightsMissing, match=r"sha256 [0-9a-f]{16}\.\.\. is not the expected") as err:
        weights.seed_niqe(bad)
    assert "\n" not in str(err.value) and not weights.niqe_mat_path().exists()


def test_seed_niqe_from_a_missing_file_is_one_line(tmp_path):
    done = cli("weights", "seed-niqe", "--from", tmp_path / "nope.npz", check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.npz: file does not exist" in lines[0] and "Traceback" not in done.stderr


def test_weight_identity_separates_parameter_files(fake_index, tmp_path, monkeypatch):
    spec = get("niqe")
    hashes = []
    for seed in (3, 4):
        npz = _npz(seed)
        archive = _sdist(npz, tmp_path / "m")
        fake_index(archive)
        _pin(monkeypatch, archive, npz)
        weights.seed_niqe()
        cfg = factory.config_of(spec)
        assert cfg["weights"] == {"niqe/niqe_pris_params.mat": "sha256:" + hashlib.sha256(
            weights.niqe_mat_path().read_bytes()).hexdigest()}
        hashes.append(factory.config_hash(cfg))
    assert hashes[0] != hashes[1]
    assert factory.config_of(get("piqe")) == {"metric": "piqe", "kwargs": {}}  # no weights, no identity


def _write_params(path: Path, mu: np.ndarray, cov: np.ndarray) -> Path:
    scipy.io.savemat(path, {"mu_prisparam": mu, "cov_prisparam": cov})
    return path


def test_niqe_matlab_holding_niqes_parameters_is_not_available(tmp_path, monkeypatch):
    mu, cov = np.arange(36.0)[None], np.eye(36)
    h = hashlib.sha256(np.ascontiguousarray(mu.ravel(), "<f8").tobytes() + np.ascontiguousarray(cov, "<f8").tobytes())
    monkeypatch.setattr(weights, "NIQE_PARAMS_DIGEST", h.hexdigest())
    spec = get("niqe_matlab")
    target = weights.locate(spec.weights[0])
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write_params(target, mu, cov)  # what an older seed-niqe wrote under pyiqa's niqe_matlab name
        assert not weights.is_available(spec)
        with pytest.raises(WeightsMissing, match="same as 'niqe'"):
            weights.preflight(spec)
        _write_params(target, mu + 1, cov)  # genuinely different (MATLAB release) parameters
        assert weights.is_available(spec) and weights.unavailable_reason(spec) is None
    finally:
        target.unlink(missing_ok=True)


def test_niqe_minimum_side_is_pyiqas_real_limit(tmp_path):
    """min_side in the table equals the size below which pyiqa's NIQE fails (any parameters)."""
    spec = get("niqe")
    params = _write_params(tmp_path / "p.mat", np.zeros((1, 36)), np.eye(36))
    metric = factory.create(spec, "cpu", kwargs={"pretrained_model_path": str(params)})
    torch.manual_seed(0)
    assert torch.isfinite(metric(torch.rand(1, 3, spec.min_side, 200))).all()
    with pytest.raises(RuntimeError):
        metric(torch.rand(1, 3, spec.min_side - 1, 200))
    assert spec.size_error(spec.min_side, 200) is None
    assert spec.size_error(95, 200) == "image 200x95 is too small for niqe: it needs at least 96 px on each side"


def test_require_shared_turns_the_skip_into_a_failure(monkeypatch, tmp_path):
    from tests import conftest

    monkeypatch.setattr(conftest, "SHARED", tmp_path / "no-shared")
    monkeypatch.delenv("IQA_STUDY_REQUIRE_SHARED", raising=False)
    with pytest.raises(pytest.skip.Exception):
        conftest.shared_path("niqe")
    monkeypatch.setenv("IQA_STUDY_REQUIRE_SHARED", "1")
    with pytest.raises(pytest.fail.Exception, match="IQA_STUDY_REQUIRE_SHARED=1"):
        conftest.shared_path("niqe")


def test_niqe_plumbing_params_make_niqe_score(niqe_plumbing_params):
    """Runs with or without ../shared: NIQE builds from the seeded file and scores a real photo."""
    from bench.manifests.sample import bundled_photo

    metric = factory.create(get("niqe"), "cpu")
    x = torch.from_numpy(np.array(bundled_photo("astronaut.png"))).permute(2, 0, 1)[None].float() / 255
    assert torch.isfinite(metric(x[..., :192, :192])).all()


def test_weight_hashes_are_remembered_across_processes_and_redone_when_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_STUDY_HOME", str(tmp_path / "home"))
    big = tmp_path / "w.pth"
    big.write_bytes(b"\x01" * (1 << 20))
    want = hashlib.sha256(big.read_bytes()).hexdigest()
    assert weights.file_sha256(big) == want
    index = json.loads((tmp_path / "home" / weights.HASH_INDEX).read_text())
    assert index[str(big.resolve())][3] == want
    weights._HASHES.clear()  # a new process: the index answers without reading the file
    index[str(big.resolve())][3] = "from-the-index"
    (tmp_path / "home" / weights.HASH_INDEX).write_text(json.dumps(index))
    assert weights.file_sha256(big) == "from-the-index"
    big.write_bytes(b"\x02" * (1 << 20) + b"x")  # changed file: other size/mtime, hashed again
    assert weights.file_sha256(big) == hashlib.sha256(big.read_bytes()).hexdigest()
