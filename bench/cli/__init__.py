"""``iqa-study``: one console script, small subcommands (one module per group).

Cache settings (--weights-dir) are applied before anything imports pyiqa.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from importlib import metadata

from bench import env
from bench.cli import catalog, data, evaluate, ft, repro, store, study, train, userstudy
from bench.errors import StudyError


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default in its help, except where there is nothing to show (None, False, a flag)."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


# Help of options that mean the same in every command (a command's own help= wins).
_COMMON_HELP = {
    "--store": "the store folder (Parquet tables; created by `score`)",
    "--manifest": "pair manifest Parquet file (from `iqa-study manifest build`)",
    "--json": "print JSON instead of a table",
    "--csv": "print CSV instead of a table",
    "--device": "auto (CUDA if present, LOCAL_RANK under torchrun), cpu, cuda or cuda:N",
    "--workers": "image decoding worker processes",
    "--shard": "i/n: score only this shard (default: RANK/WORLD_SIZE from torchrun, else 0/1)",
    "--max-pixels": "downscale larger images to this many pixels (recorded in the metric config key)",
    "--seed": "random seed (recorded)",
    "--metrics": "comma-separated metric names, or study | available | all",
    "--config": "YAML config file",
    "--out": "output folder",
    "--study": "only the 42-variant study set",
    "--missing": "only entries whose weight files are missing",
    "importer_args": "IMPORTER and its arguments (see `iqa-study manifest build IMPORTER --help`)",
    "out": "output folder",
}


class _Parser(argparse.ArgumentParser):
    """Every (sub)parser shows defaults and gives every option a help text; nested subparsers
    inherit this class through argparse."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        if kwargs.get("help") is None:
            names = [a for a in args if a.startswith("--")] or list(args[:1])
            for name in names:
                if name in _COMMON_HELP:
                    kwargs["help"] = _COMMON_HELP[name]
                    break
        return super().add_argument(*args, **kwargs)


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
    for group in (catalog, data, study, train, evaluate, ft, repro, store, userstudy):
        group.register(sub)
    return p


_STORAGE = ((errno.EROFS, "read-only file system", "store is read-only"),
            (errno.EACCES, "permission denied", "store is read-only (permission denied)"),
            (errno.ENOSPC, "no space left on device", "no space left on device"),
            (errno.EDQUOT, "disk quota exceeded", "no space left (disk quota exceeded)"),
            (errno.EFBIG, "file too large", "no space left (file size limit reached, ulimit -f?)"))


def storage_error(exc: OSError) -> str | None:
    """One line for a write the file system refused (read-only store, full disk, file size limit);
    None for other OS errors. Files are written atomically (bench.atomic), so nothing written
    before is lost or half-written."""
    text = str(exc).lower()
    for code, phrase, what in _STORAGE:
        if exc.errno == code or phrase in text:
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            return f"{what}{where}: nothing already stored was lost; free space or use a writable --store, then re-run"
    return None


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
    except OSError as exc:  # (after BrokenPipeError, an OSError too)  # pyarrow's and DuckDB's I/O errors included (ArrowIOError is an OSError)
        line = storage_error(exc)
        if line is None:
            raise
        print(f"iqa-study: error: {line}", file=sys.stderr)
        return 2
    return 0
