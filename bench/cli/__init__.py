"""``iqa-study``: one console script, small subcommands (one module per group).

Cache settings (--weights-dir) are applied before anything imports pyiqa.
"""

from __future__ import annotations

import argparse
import sys

from bench import env
from bench.cli import catalog, data, study, train
from bench.errors import StudyError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iqa-study", description=__doc__)
    p.add_argument("--weights-dir", help="TORCH_HOME-style folder with pre-downloaded weights "
                                         "(also $IQA_STUDY_WEIGHTS_DIR)")
    sub = p.add_subparsers(dest="cmd", required=True)
    for group in (catalog, data, study, train):
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    env.configure(args.weights_dir)
    try:
        args.fn(args)
    except StudyError as exc:
        print(f"iqa-study: error: {exc}", file=sys.stderr)
        return 2
    return 0
