"""The README's "Real data, end to end" walkthrough, parsed from the README (so it cannot drift) and
run on the real SR 2AFC votes in a temporary folder; the report must hold every figure the README
lists, as PNG, PDF and CSV.

Scoring the 40 full-size images takes minutes on 2 CPU cores, so the walkthrough's store starts as
a copy of the session's scored sr2afc store (``sr2afc_scored``: same images, metrics and
configurations): the README's ``score`` command still runs and must find every key stored.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
from pathlib import Path

import pytest

from bench.report.study_report import FIGURES

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- walkthrough:"
FIGURES_MARKER = "<!-- figures:"


def walkthrough_commands(readme: str) -> list[str]:
    """The lines of the fenced block after the walkthrough marker (comments stripped)."""
    block = re.search(re.escape(MARKER) + r".*?-->\s*```bash\n(.*?)```", readme, re.DOTALL)
    assert block, f"README.md has no fenced bash block after {MARKER!r}"
    lines = [ln.split("  #")[0].split("\t#")[0].strip() for ln in block.group(1).splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def listed_figures(readme: str) -> list[str]:
    """The figure names of the bullet list after the figures marker: the `names` before each bullet's colon."""
    lines = readme[readme.index(FIGURES_MARKER):].splitlines()[1:]
    names = []
    for line in lines:
        if not line.startswith(("* ", "  ")):
            break
        if line.startswith("* "):
            names += re.findall(r"`([a-z0-9_]+)`", line.split(":")[0])
    assert names, "README.md: no bullet list of figures after the figures marker"
    return names


def _run(argv: list[str]) -> str:
    from bench.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    assert rc in (0, None), f"iqa-study {' '.join(argv)} exited {rc}:\n{out.getvalue()}"
    return out.getvalue()


def test_readme_walkthrough_runs_on_real_votes(sr2afc_root, sr2afc_scored, tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    commands = walkthrough_commands(readme)
    figures = listed_figures(readme)
    assert set(FIGURES) <= set(figures), f"README lists {figures}, the report makes {FIGURES}"

    monkeypatch.chdir(tmp_path)
    shutil.copytree(sr2afc_scored[0], tmp_path / "runs" / "sr2afc" / "store")
    env = {}
    ran = []
    for line in commands:
        if line.startswith((". ", "source ")):
            continue  # activating the venv: the test already runs in it
        m = re.fullmatch(r"([A-Z_]+)=(\S+)", line)
        if m:
            env[m.group(1)] = str(sr2afc_root) if m.group(1) == "DATA" else m.group(2)
            continue
        argv = shlex.split(line)
        assert argv[0] == "iqa-study", f"walkthrough line is not an iqa-study command: {line}"
        argv = [a.replace("$DATA", env["DATA"]) for a in argv[1:]]
        assert not any("$" in a for a in argv), f"unexpanded variable in: {line}"
        out = _run(argv)
        ran.append(argv[0])
        if argv[0] == "score":
            assert "scored 0 " in out and "skipped 40 already stored" in out, out
    assert ran == ["manifest", "score", "agree", "phase1", "phase2", "complement", "ensemble", "select", "report"]

    report = tmp_path / "runs" / "sr2afc" / "report"
    html = (report / "report.html").read_text()
    for name in figures:
        for ext in ("png", "pdf", "csv"):
            assert (report / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
        assert f'<figure id="{name}">' in html
    assert "Inter-observer ceiling" in html  # sr2afc keeps per-observer votes
    assert (tmp_path / "runs" / "sr2afc" / "selection.json").is_file()


def test_walkthrough_parser_reads_the_marked_block():
    readme = ("intro\n```bash\nnot-this\n```\n" + MARKER + " x -->\n```bash\n. .venv/bin/activate\n"
              "DATA=/x   # comment\niqa-study agree --store s\n# note\n```\n")
    assert walkthrough_commands(readme) == [". .venv/bin/activate", "DATA=/x", "iqa-study agree --store s"]
    with pytest.raises(AssertionError, match="no fenced bash block"):
        walkthrough_commands("no marker here")
    figures = FIGURES_MARKER + " x -->\n* `a_b`, `c`: text `not_this`\n  more `nor_this`\n* `d`: x\n\n* `e`: after\n"
    assert listed_figures(figures) == ["a_b", "c", "d"]
