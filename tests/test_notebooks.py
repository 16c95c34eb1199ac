"""Notebooks are the source: committed without outputs, executed headless (nbclient) against a
RELATIVE store path resolved against the launch directory; `jupyter lab` is installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from bench.errors import StudyError
from bench.report.notebook import resolve_store

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_notebooks_are_committed_without_outputs():
    assert {p.name for p in NOTEBOOKS} >= {"failure_complementarity.ipynb", "phases_from_sql.ipynb"}
    assert not (REPO / "scripts" / "make_notebooks.py").exists()  # the .ipynb files are the source
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, f"{path.name}: {cell.id}"


def test_jupyter_lab_is_installed():
    jupyter = Path(sys.executable).with_name("jupyter")
    done = subprocess.run([str(jupyter), "lab", "--version"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().split(".")[0].isdigit()


def test_relative_store_resolves_against_the_launch_dir(tmp_path, monkeypatch):
    (tmp_path / "runs" / "s" / "pairs").mkdir(parents=True)
    monkeypatch.setenv("PWD", str(tmp_path))
    monkeypatch.chdir(REPO / "notebooks")  # the kernel's working directory is the notebook's folder
    assert resolve_store("runs/s") == (tmp_path / "runs" / "s").resolve()
    monkeypatch.setenv("IQA_STUDY_STORE", "runs/s")
    assert resolve_store() == (tmp_path / "runs" / "s").resolve()
    with pytest.raises(StudyError) as err:
        resolve_store("runs/missing")
    assert str((tmp_path / "runs" / "missing").resolve()) in str(err.value)
    assert str((REPO / "notebooks" / "runs" / "missing").resolve()) in str(err.value)


@pytest.fixture(scope="module")
def launch_dir(generated_study) -> Path:
    return generated_study["dir"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_a_relative_store(path, launch_dir, monkeypatch):
    monkeypatch.setenv("PWD", str(launch_dir))     # as if `jupyter lab` was started in launch_dir
    monkeypatch.setenv("IQA_STUDY_STORE", "store")  # relative to it
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
    assert f"store: {(launch_dir / 'store').resolve()}" in text
    if path.stem == "failure_complementarity":
        images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(images) >= 2  # the failure pairs and the metric-pair heatmaps are drawn


def test_failure_notebook_names_a_filter_it_cannot_apply_in_one_line(launch_dir, monkeypatch):
    """SR_METHOD naming no method of these pairs: one line with the reason and the known methods, no traceback."""
    monkeypatch.setenv("PWD", str(launch_dir))
    monkeypatch.setenv("IQA_STUDY_STORE", "store")
    path = REPO / "notebooks" / "failure_complementarity.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].source += '\nSR_METHOD = "ResShift"\n'
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
    assert "filter not applied: sr_method 'ResShift': no such SR method in these pairs (methods: " in text
    assert "no failures with these filters" in text
