"""Test environment: no network (pytest-socket, see pyproject addopts), empty private caches."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Before anything imports pyiqa: private, empty weight caches and offline mode.
_CACHE = Path(tempfile.mkdtemp(prefix="iqa-study-tests-"))
os.environ["TORCH_HOME"] = str(_CACHE / "torch")
os.environ["HF_HOME"] = str(_CACHE / "hf")
os.environ["IQA_STUDY_HOME"] = str(_CACHE / "iqa-study")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["IQA_STUDY_OFFLINE"] = "1"
os.environ.pop("IQA_STUDY_WEIGHTS_DIR", None)
os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IQA_STUDY_SHARED", REPO.parent / "shared"))


REQUIRE_SHARED = "IQA_STUDY_REQUIRE_SHARED"


def shared_path(*parts: str) -> Path:
    """A real-data path under ../shared/data; skips when missing, fails when $IQA_STUDY_REQUIRE_SHARED=1
    (set by .ci/run, so CI always runs the real-data tests)."""
    path = SHARED.joinpath("data", *parts)
    if not path.exists():
        msg = f"real test data not found at {path} (set IQA_STUDY_SHARED)"
        if os.environ.get(REQUIRE_SHARED) == "1":
            pytest.fail(f"{msg}; {REQUIRE_SHARED}=1 makes this a failure", pytrace=False)
        pytest.skip(msg)
    return path


REQUIRE_BROWSER = "IQA_STUDY_REQUIRE_BROWSER"


def chromium_paths() -> tuple[str, str]:
    """(chromium, chromedriver): Debian's packages on PATH (never a downloaded browser build). Skips
    with one line when missing; fails instead under CI ($CI=true, or $IQA_STUDY_REQUIRE_BROWSER=1,
    set by .ci/run, which installs them)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        msg = "no Chromium found (apt-get install chromium chromium-driver)"
        if os.environ.get(REQUIRE_BROWSER) == "1" or os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{msg}; {REQUIRE_BROWSER}=1 / CI=true makes this a failure", pytrace=False)
        pytest.skip(msg)
    return browser, driver


@pytest.fixture(scope="session")
def sr2afc_root() -> Path:
    return shared_path("sr-preference-2afc")


@pytest.fixture(scope="session")
def niqe_params() -> list[Path]:
    """Real NIQE parameters (shared/data/niqe, byte-identical to BasicSR's) seeded into the test cache."""
    from bench.metrics.weights import seed_niqe

    return seed_niqe(shared_path("niqe", "niqe_pris_params.npz"))


@pytest.fixture(scope="session")
def sample_manifest(tmp_path_factory) -> Path:
    from bench.manifests import sample, schema

    out = tmp_path_factory.mktemp("sample")
    return schema.write(sample.build_sample(out), out / "manifest.parquet")


@pytest.fixture(scope="session")
def niqe_plumbing_params() -> list[Path]:
    """NIQE parameters for tests that need NIQE to *run* (a differentiable NR metric for plumbing,
    resume, AMO/FT smoke), not its real values: the real BasicSR parameters when ../shared has
    them, else a synthetic set (mean 0, identity covariance) written where the real file would go.
    Tests that assert real NIQE numbers use ``niqe_params`` instead."""
    from bench.metrics.weights import niqe_mat_path, seed_niqe

    real = SHARED / "data" / "niqe" / "niqe_pris_params.npz"
    if real.is_file():
        return seed_niqe(real)
    import numpy as np
    import scipy.io

    target = niqe_mat_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(target, {"mu_prisparam": np.zeros((1, 36)), "cov_prisparam": np.eye(36)})
    return [target]


def copy_sample_images(manifest_path: Path, dest: Path):
    """(manifest frame, dest): a private copy of a manifest's images, for tests that corrupt one."""
    from bench.manifests import schema

    df = schema.read(manifest_path)
    root = Path(df.attrs["iqa_study"]["root"])
    for rel in set(df["image_a"]) | set(df["image_b"]):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes((root / rel).read_bytes())
    return df, dest


@pytest.fixture
def store_dir(tmp_path) -> Path:
    return tmp_path / "store"


@pytest.fixture(scope="session")
def sr2afc_scored(tmp_path_factory, sr2afc_root, niqe_params) -> tuple[Path, Path]:
    """(store, manifest): the real sr2afc votes scored with piqe, entropy, niqe through the CLI."""
    from bench.manifests import schema, votes
    from tests.cli import cli

    tmp = tmp_path_factory.mktemp("sr2afc")
    manifest = schema.write(votes.sr2afc(sr2afc_root), tmp / "sr2afc.parquet")
    cli("score", "--manifest", manifest, "--metrics", "piqe,entropy,niqe", "--store", tmp / "store", "--workers", "2")
    return tmp / "store", manifest


@pytest.fixture(scope="session")
def generated_study(tmp_path_factory) -> dict[str, Path]:
    """The generated pairs-csv study (tests.test_report.run_study: piqe + entropy, phase1 -> report), built once
    per session for the report and notebook tests, which only read it: {dir, store, report}."""
    from tests.test_report import run_study

    tmp = tmp_path_factory.mktemp("generated_study")
    store, report = run_study(tmp)
    return {"dir": tmp, "store": store, "report": report}


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE, ignore_errors=True)
