"""Process environment for pyiqa: weight caches and offline mode.

pyiqa fixes its checkpoint directory (``torch.hub.get_dir()/pyiqa``) at ``import pyiqa``,
so every cache setting must be applied before the first import. ``configure()`` is
called by the CLI before anything imports pyiqa; library users call it themselves.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR_ENV = "IQA_STUDY_WEIGHTS_DIR"
HOME_ENV = "IQA_STUDY_HOME"
OFFLINE_ENV = "IQA_STUDY_OFFLINE"
_PROBE_HOST = ("huggingface.co", 443)


@dataclass(frozen=True)
class CacheDirs:
    torch_home: Path
    hf_home: Path
    study: Path  # iqa-study's own cache (NIQE parameters, weight hashes); never a pyiqa cache name

    @property
    def pyiqa(self) -> Path:
        return self.torch_home / "hub" / "pyiqa"

    @property
    def torchvision(self) -> Path:
        return self.torch_home / "hub" / "checkpoints"

    @property
    def clip(self) -> Path:
        return self.torch_home / "hub" / "clip"

    @property
    def hf_hub(self) -> Path:
        return self.hf_home / "hub"


def configure(weights_dir: str | os.PathLike | None = None) -> CacheDirs:
    """Point TORCH_HOME / HF_HOME at ``weights_dir`` (or $IQA_STUDY_WEIGHTS_DIR).

    A weights dir is laid out like TORCH_HOME: ``hub/pyiqa/<file>``, ``hub/checkpoints/<file>``,
    plus ``huggingface/hub/models--<org>--<repo>`` for timm/transformers models, plus
    ``iqa-study/`` (the project's own cache, e.g. ``iqa-study/niqe/``).
    """
    chosen = weights_dir or os.environ.get(WEIGHTS_DIR_ENV)
    if chosen:
        root = Path(chosen).expanduser().resolve()
        os.environ["TORCH_HOME"] = str(root)
        os.environ["HF_HOME"] = str(root / "huggingface")
        os.environ[WEIGHTS_DIR_ENV] = str(root)
    return cache_dirs()


def cache_dirs() -> CacheDirs:
    """Where pyiqa, torchvision and HF look, honouring TORCH_HOME, XDG_CACHE_HOME and HF_HOME.

    The project's own cache (``study``) is $IQA_STUDY_HOME, else ``<weights dir>/iqa-study`` when a
    weights dir is configured (so a copied offline weights folder carries it), else
    ``$XDG_CACHE_HOME/iqa-study`` (default ``~/.cache/iqa-study``).
    """
    xdg = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    torch_home = Path(os.environ.get("TORCH_HOME", xdg / "torch"))
    hf_home = Path(os.environ.get("HF_HOME", xdg / "huggingface"))
    if os.environ.get(HOME_ENV):
        study = Path(os.environ[HOME_ENV]).expanduser()
    elif os.environ.get(WEIGHTS_DIR_ENV):
        study = Path(os.environ[WEIGHTS_DIR_ENV]).expanduser() / "iqa-study"
    else:
        study = xdg / "iqa-study"
    return CacheDirs(torch_home=torch_home, hf_home=hf_home, study=study)


def network_available(timeout: float = 2.0) -> bool:
    """True when the weight host answers within ``timeout`` seconds.

    Offline is declared with IQA_STUDY_OFFLINE=1 or HF_HUB_OFFLINE=1, which skips the probe.
    """
    if os.environ.get(OFFLINE_ENV, "") == "1" or os.environ.get("HF_HUB_OFFLINE", "") == "1":
        return False
    try:
        with socket.create_connection(_PROBE_HOST, timeout=timeout):
            return True
    except OSError:
        return False


ENV_REF = re.compile(r"\$\{(\w+)\}")  # ${VAR} in configs (training YAMLs, manifest and test-set configs)


def expand_vars(obj, on_missing: Callable[[str], Exception]):
    """``obj`` (a str, or dicts/lists of them) with every ``${VAR}`` replaced by the environment's value: the
    suite's one expansion. ``on_missing(name)`` builds the one-line error for an unset variable (its caller
    names the file and what the variable is for)."""
    if isinstance(obj, dict):
        return {k: expand_vars(v, on_missing) for k, v in obj.items()}
    if isinstance(obj, list):
        return [expand_vars(v, on_missing) for v in obj]
    if not isinstance(obj, str):
        return obj

    def sub(m: re.Match) -> str:
        if m.group(1) not in os.environ:
            raise on_missing(m.group(1))
        return os.environ[m.group(1)]

    return ENV_REF.sub(sub, obj)
