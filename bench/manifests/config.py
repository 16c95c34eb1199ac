"""Build a manifest from a small YAML in data_manifests/ (importer, root from an env var, subset)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import yaml

from bench.errors import ManifestError

_ENV = re.compile(r"\$\{(\w+)\}")


def _expand(value: str, source: Path) -> str:
    def sub(m: re.Match) -> str:
        var = m.group(1)
        if var not in os.environ:
            raise ManifestError(f"{source}: root uses ${{{var}}}, but environment variable {var} is not set")
        return os.environ[var]

    return _ENV.sub(sub, value)


def build_from_config(path: str | Path) -> pd.DataFrame:
    from bench.manifests import hggt, sample, sbs180k, votes

    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: config file does not exist")
    cfg = yaml.safe_load(path.read_text()) or {}
    importer = cfg.get("importer")
    if "root" not in cfg and importer != "sample":
        raise ManifestError(f"{path}: field 'root' missing")
    root = _expand(str(cfg.get("root", "")), path)
    if importer == "sr2afc":
        df = votes.sr2afc(root)
    elif importer == "pairs-csv":
        df = votes.pairs_csv(_expand(str(cfg["file"]), path), root, dataset=cfg.get("dataset"))
    elif importer == "hggt":
        df = hggt.hggt(root, split=cfg.get("split", "test"))
    elif importer == "sbs180k":
        df = sbs180k.sbs180k(root)
    elif importer == "sample":
        df = sample.build_sample(root or cfg.get("out", "runs/sample"), seed=int(cfg.get("seed", 0)))
    else:
        raise ManifestError(f"{path}: field 'importer' is {importer!r}; expected sr2afc, pairs-csv, hggt, sbs180k or sample")
    split = cfg.get("split_filter")
    if split:
        attrs = df.attrs
        df = df[df["split"] == split].reset_index(drop=True)
        df.attrs = attrs
    df.attrs["iqa_study"]["config"] = str(path)
    return df
