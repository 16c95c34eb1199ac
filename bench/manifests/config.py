"""Build a manifest from a small YAML in data_manifests/ (importer, root from an env var, subset)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.env import expand_vars
from bench.errors import ManifestError
from bench.yamlsafe import load_yaml_file


def _expand(value: str, source: Path) -> str:
    return expand_vars(value, lambda var: ManifestError(
        f"{source}: root uses ${{{var}}}, but environment variable {var} is not set"))


IMPORTERS = ("sr2afc", "pairs-csv", "hggt", "sbs180k", "sample")


def run_importer(name: str, root: str | Path, *, file: str | None = None, dataset: str | None = None,
                 split: str = "test", seed: int = 0, where: str = "manifest build") -> pd.DataFrame:
    """The one dispatch from importer name to importer, shared by the CLI and the YAML configs."""
    from bench.manifests import hggt, sample, sbs180k, votes

    if name == "sr2afc":
        return votes.sr2afc(root)
    if name == "pairs-csv":
        if not file:
            raise ManifestError(f"{where}: importer pairs-csv needs field 'file' (the votes CSV)")
        return votes.pairs_csv(file, root, dataset=dataset)
    if name == "hggt":
        return hggt.hggt(root, split=split)
    if name == "sbs180k":
        return sbs180k.sbs180k(root)
    if name == "sample":
        return sample.build_sample(root, seed=seed)
    raise ManifestError(f"{where}: field 'importer' is {name!r}; expected one of {', '.join(IMPORTERS)}")


def build_from_config(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: config file does not exist")
    cfg = load_yaml_file(path)  # a mapping, or one line (invalid YAML, a list at the top, an alias bomb)
    importer = cfg.get("importer")
    if "root" not in cfg and importer != "sample":
        raise ManifestError(f"{path}: field 'root' missing")
    root = _expand(str(cfg.get("root") or "runs/sample"), path)
    df = run_importer(importer, root, file=_expand(str(cfg["file"]), path) if cfg.get("file") else None,
                      dataset=cfg.get("dataset"), split=cfg.get("split", "test"), seed=int(cfg.get("seed", 0)),
                      where=str(path))
    split = cfg.get("split_filter")
    if split:
        attrs = df.attrs
        df = df[df["split"] == split].reset_index(drop=True)
        df.attrs = attrs
    df.attrs["iqa_study"]["config"] = str(path)
    return df
