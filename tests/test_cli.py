"""The CLI as users meet it: help text on every option, versions, the readable agreement table, and
a pipe into `head` that ends quietly."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from bench.cli import main, parser


def _actions(p: argparse.ArgumentParser, path: list[str]):
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from _actions(sub, path + [name])
        elif not isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
            yield " ".join(path), a


def test_every_option_of_every_command_has_help_and_one_output_flag_convention():
    actions = list(_actions(parser(), ["iqa-study"]))
    assert len({cmd for cmd, _ in actions}) >= 20
    assert [f"{cmd}: {a.option_strings or a.dest}" for cmd, a in actions if not a.help] == []
    # -o is always --out (commands that wrote --output keep it as an alias)
    outs = [(cmd, a.option_strings) for cmd, a in actions if "-o" in a.option_strings]
    assert outs and all("--out" in opts for _, opts in outs), outs


def test_version_names_the_stack(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert re.match(r"iqa-study \S+ \(pyiqa 0\.1\.16, torch 2\.14\.1, Python 3\.11", out), out


@pytest.fixture(scope="module")
def scored_sample(sample_manifest, tmp_path_factory):
    store = tmp_path_factory.mktemp("cli") / "store"
    assert main(["score", "--manifest", str(sample_manifest), "--metrics", "entropy,piqe", "--store", str(store),
                 "--workers", "0"]) == 0
    return store


def test_agree_prints_values_with_their_ci_aligned_within_120_columns(scored_sample, capsys):
    assert main(["agree", "--store", str(scored_sample)]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = [ln for ln in lines if "entropy" in ln or "piqe" in ln]
    assert len(table) == 2
    assert all(len(ln) <= 120 for ln in lines), max(map(len, lines))
    cell = re.compile(r"(0|1)\.\d{3} \[(0|1)\.\d{3}, (0|1)\.\d{3}\]")
    for ln in table:
        found = [tuple(float(x) for x in re.findall(r"\d\.\d{3}", m.group(0))) for m in cell.finditer(ln)]
        assert len(found) == 3, ln  # strict, tie-half, vote agreement, each with its interval
        assert all(lo <= v <= hi for v, lo, hi in found), ln
    header = next(ln for ln in lines if "strict acc" in ln)
    starts = {ln.index("[") for ln in table}  # the first interval opens in the same column on every row
    assert len(starts) == 1 and header.index("strict acc") <= starts.pop()


def test_agree_csv_keeps_every_column(scored_sample, capsys):
    assert main(["agree", "--store", str(scored_sample), "--csv"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split(",")
    for col in ("config_hash", "strict_ci_lo", "tie_half_ci_hi", "vote_ci_lo", "n_voted"):
        assert col in header


def test_agree_into_head_exits_quietly(scored_sample):
    cmd = (f"{sys.executable} -m bench.cli agree --store '{scored_sample}' | head -n 1; "
           f"exit ${{PIPESTATUS[0]}}")
    # a long listing so the reader closes the pipe while the writer is still writing
    query = (f"{sys.executable} -m bench.cli query --store '{scored_sample}' "
             "'SELECT * FROM range(200000)' | head -n 2; exit ${PIPESTATUS[0]}")
    for line in (cmd, query):
        r = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
        assert r.stdout.count("\n") <= 2


def test_agree_bootstrap_cis_resample_groups_and_match_the_study(scored_sample, capsys):
    """`--ci bootstrap` gives the study's group-bootstrap intervals (not the closed-form ones) around
    the same point values."""
    import json

    from bench.store import Store
    from bench.study.agreement import bootstrap_agreement

    assert main(["agree", "--store", str(scored_sample), "--json"]) == 0
    quick = {r["metric"]: r for r in json.loads(capsys.readouterr().out)}
    assert main(["agree", "--store", str(scored_sample), "--json", "--ci", "bootstrap"]) == 0
    boot = {r["metric"]: r for r in json.loads(capsys.readouterr().out)}
    study = bootstrap_agreement(Store(scored_sample, create=False)).set_index("metric")
    for m in ("piqe", "entropy"):
        assert boot[m]["strict_acc"] == quick[m]["strict_acc"]
        for col in ("strict_ci_lo", "tie_half_ci_hi", "vote_ci_lo"):
            assert boot[m][col] == pytest.approx(study.loc[m, col])
        assert boot[m]["strict_ci_lo"] != pytest.approx(quick[m]["strict_ci_lo"], abs=1e-6)
        assert "bootstrap" in boot[m]["ci_method"]
