"""Maintainer script: ask pyiqa itself which weight files each metric loads.

Run once per pyiqa pin, with no network, into an empty cache:

    HF_HUB_OFFLINE=1 DISCOVERY_OUT=/tmp/discovered.json python scripts/discover_weights.py

Every download hook pyiqa reaches (its own ``download_url_to_file``, torchvision
``WeightsEnum.get_state_dict``, timm pretrained backbones, raw ``urlopen``) is
patched to *record* the requested file instead of fetching it. Checkpoint loads
through ``torch.load`` get an empty placeholder so construction continues and the
next file is discovered too. Formats other than torch pickles (``.mat``, TorchScript)
end discovery for that metric; the error is reported in the output.

The result is reviewed by hand and merged into ``bench/metrics/metrics.yaml``
(the single source of truth); this script never writes tracked files.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
import urllib.request
from pathlib import Path

tmp = tempfile.mkdtemp(prefix="iqa-discover-")
os.environ["TORCH_HOME"] = tmp
os.environ["HF_HOME"] = os.path.join(tmp, "hf")
os.environ["HF_HUB_OFFLINE"] = "1"

import torch
import torchvision.models._api as tv_api

MAGIC = b"IQA-STUDY-DISCOVERY-PLACEHOLDER"
RECORD: list[dict] = []


class _Placeholder(dict):
    def __getitem__(self, key):  # state_dict['params'] etc.
        return self


def _record(kind: str, where: str, name: str) -> None:
    RECORD.append({"kind": kind, "dir": where, "file": name})


import pyiqa.utils.download_util as du


def _fake_download(url, dst, hash_prefix=None, progress=True):
    dst = Path(dst)
    _record("url", str(dst.parent.relative_to(tmp)) if str(dst).startswith(tmp) else str(dst.parent), dst.name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(MAGIC)


du.download_url_to_file = _fake_download
torch.hub.download_url_to_file = _fake_download

_orig_load = torch.load


def _fake_load(f, *args, **kwargs):
    if isinstance(f, (str, os.PathLike)) and Path(f).is_file() and Path(f).read_bytes()[: len(MAGIC)] == MAGIC:
        return _Placeholder()
    return _orig_load(f, *args, **kwargs)


torch.load = _fake_load


def _fake_get_state_dict(self, *args, **kwargs):
    _record("torchvision", "hub/checkpoints", Path(self.url).name)
    return _Placeholder()


tv_api.WeightsEnum.get_state_dict = _fake_get_state_dict
torch.nn.Module.load_state_dict = lambda self, *a, **k: None  # discovery only: weights are irrelevant

import timm

_orig_create = timm.create_model


def _fake_create(name, pretrained=False, *args, **kwargs):
    if pretrained:
        _record("hf", "hf/hub", f"timm/{name}")
    return _orig_create(name, *args, pretrained=False, **kwargs)


timm.create_model = _fake_create


def _fake_urlopen(url, *args, **kwargs):
    target = getattr(url, "full_url", url)
    _record("url", "?", str(target).rsplit("/", 1)[-1])
    raise OSError(f"discovery: network disabled ({target})")


urllib.request.urlopen = _fake_urlopen

import pyiqa

out = {}
names = sys.argv[1:] or pyiqa.list_models(metric_mode="NR")
for name in names:
    RECORD.clear()
    entry: dict = {}
    try:
        pyiqa.create_metric(name, device="cpu")
        entry["status"] = "built"
    except Exception as exc:  # a maintainer report: every failure is printed with its reason
        entry["status"] = "stopped"
        entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        entry["trace_tail"] = traceback.format_exc().splitlines()[-3:]
    entry["files"] = list(RECORD)
    out[name] = entry
    print(name, entry["status"], [r["file"] for r in RECORD], file=sys.stderr)

Path(os.environ.get("DISCOVERY_OUT", "discovered.json")).write_text(json.dumps(out, indent=1))
