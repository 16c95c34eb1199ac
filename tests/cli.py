"""``iqa-study`` run in this interpreter, for tests.

A subprocess per command re-imports torch and pyiqa (about 5 s on 2 cores each); the suite ran ~60 of
them. ``cli`` calls ``bench.cli.main`` here instead and captures what a user would read on stdout and
stderr. A test that needs its own process (kill -9, torchrun, what a fresh import prints, a shell
pipe, an installed wheel) starts one itself.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def cli(*args, check: bool = True) -> CliResult:
    """``iqa-study ARGS`` in-process; ``check``: fail the test (with the command's stderr) unless it exits 0."""
    from bench.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse: --help, --version, a usage error
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    result = CliResult(rc or 0, out.getvalue(), err.getvalue())
    if check and result.returncode != 0:
        raise AssertionError(f"iqa-study {' '.join(argv)} exited {result.returncode}:\n{result.stderr[-3000:]}"
                             f"\n{result.stdout[-2000:]}")
    return result
