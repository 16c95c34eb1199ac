"""``iqa-study``: one console script, small subcommands (one module per group).

Cache settings (--weights-dir) are applied before anything imports pyiqa.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata

from bench import env
from bench.cli import catalog, data, evaluate, ft, store, study, train
from bench.errors import StudyError


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default in its help, except where there is nothing to show (None, False, a flag)."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Every (sub)parser shows defaults; nested subparsers inherit this class through argparse."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _version() -> str:
    def v(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return f"iqa-study {v('iqa-study')} (pyiqa {v('pyiqa')}, torch {v('torch')}, Python {sys.version.split()[0]})"


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="iqa-study", description="IQA metric selection on human SR preferences, and IQA-driven "
                                              "perceptual SR training. `iqa-study COMMAND --help` for each command.")
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("--weights-dir", help="TORCH_HOME-style folder with pre-downloaded weights "
                                         "(also $IQA_STUDY_WEIGHTS_DIR)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", parser_class=_Parser)
    for group in (catalog, data, study, train, evaluate, ft, store):
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    env.configure(args.weights_dir)
    try:
        args.fn(args)
        sys.stdout.flush()
    except StudyError as exc:
        print(f"iqa-study: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`iqa-study agree ... | head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0
