"""Training checkpoints (CONTRACTS C5): plain-tensor files that load with ``weights_only=True``.

A checkpoint is a ``torch.save``'d dict of tensors, ints, floats, strings, lists and dicts only:
``iteration``, ``net_g``, ``ema``, ``opt_g``, ``sched_g`` (+ ``net_d``, ``opt_d``, ``sched_d``),
``chosen`` (a tensor), ``config`` (the resolved TrainConfig as a JSON *string*) and whatever the
data pipeline needs for a bit-identical resume. Loading never unpickles arbitrary objects: a
file carrying a pickled class (``__reduce__`` payload) is refused with one line and its code
never runs. A truncated or empty file raises :class:`CorruptCheckpoint` so ``--auto-resume``
can fall back to the previous checkpoint.

Every other weights file the suite reads (``arch.pretrained``, ``ft.init``, ``--checkpoint`` of
evaluate / merge, ``loss.perceptual_weights``) goes through :func:`read_weights` too: safetensors,
or ``torch.load(weights_only=True)``; never TorchScript, never spandrel's own unpickler.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch

from bench.errors import StudyError

PATTERN = "iter_*.pt"


class CorruptCheckpoint(StudyError):
    """The file is truncated / not a torch zip archive (a write was interrupted)."""


class UnsafeCheckpoint(StudyError):
    """The file holds pickled objects beyond plain tensors/containers: refused, never executed."""


def checkpoint_path(folder: Path, iteration: int) -> Path:
    return Path(folder) / f"iter_{iteration:08d}.pt"


def save_checkpoint(state: dict, path: Path) -> Path:
    """Write through the suite's one atomic writer (``bench.atomic``: hidden temp file, fsync,
    rename) so a kill never leaves half a file."""
    from bench.atomic import atomic_write

    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def read_weights(path: str | Path, what: str = "checkpoint", map_location: str | torch.device = "cpu"):
    """The object in a weights file: ``.safetensors`` via safetensors, anything else via
    ``torch.load(weights_only=True)`` (a TorchScript archive is refused by it). One-line errors that
    name ``what`` (the config field or option) and the file: :class:`UnsafeCheckpoint` for a pickle
    payload (its code never runs), :class:`CorruptCheckpoint` for an unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{what} {path}: file does not exist")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CorruptCheckpoint(f"{what} {path}: unreadable safetensors file ({_first_line(exc)})") from None
    try:
        with warnings.catch_warnings():  # torch warns it "dispatches" a TorchScript file, then refuses it
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # name the offending global only: torch's own text goes on to suggest allow-listing it
        # (add_safe_globals([exec])), which must never be quoted to a user
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        first = f"it names the global {found.group(1)}" if found else ""
        raise UnsafeCheckpoint(f"{what} {path}: refused, it holds pickled objects beyond plain tensors "
                               f"(weights_only=True load failed{': ' + first if first else ''}); "
                               f"never load it with weights_only=False unless you made it") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        if "TorchScript" in str(exc):
            raise CorruptCheckpoint(f"{what} {path}: a TorchScript archive, refused (it can carry code); "
                                    f"save the model's state_dict() instead") from None
        raise CorruptCheckpoint(f"{what} {path}: unreadable, truncated or not a torch file ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


TRAINING, FT_ADAPTER, PLAIN = "training", "ft_adapter", "plain"


def checkpoint_kind(state) -> str:
    """Which of the suite's weight formats ``state`` (a file read by :func:`read_weights`) is - the one place
    the formats are told apart (evaluate's model loader, FT's base loader and merge ask here):

    * ``FT_ADAPTER``: an FT checkpoint (keys ``adapter`` and ``ft``: the LoRA tensors and the FT record;
      it is merged into a plain model before evaluation);
    * ``TRAINING``: a training checkpoint (C5: ``ema`` or ``net_g`` beside ``iteration`` or ``config``;
      a missing or malformed field of it is the caller's one-line error, never a fall-through to PLAIN);
    * ``PLAIN``: anything else, a plain state dict for spandrel (merged FT models, pretrained files)."""
    if not isinstance(state, dict):
        return PLAIN
    if "adapter" in state and "ft" in state:
        return FT_ADAPTER
    if ("ema" in state or "net_g" in state) and ("iteration" in state or "config" in state):
        return TRAINING
    return PLAIN


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A training checkpoint via :func:`read_weights`; it must be a dict with ``iteration``."""
    path = Path(path)
    state = read_weights(path, "checkpoint", map_location)
    if not isinstance(state, dict) or "iteration" not in state:
        raise CorruptCheckpoint(f"checkpoint {path}: expected a dict with 'iteration', got {type(state).__name__}")
    return state


def list_checkpoints(folder: Path) -> list[Path]:
    """``iter_*.pt`` newest first (by the iteration in the name, not by mtime)."""
    def it(p: Path) -> int:
        try:
            return int(p.stem.split("_", 1)[1])
        except (IndexError, ValueError):
            return -1
    return sorted((p for p in Path(folder).glob(PATTERN) if it(p) >= 0), key=it, reverse=True)


def latest_loadable(folder: Path, map_location="cpu", warn=print) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads. A corrupt (truncated) one is reported and skipped in favour of
    the previous one; an unsafe one (pickle payload) stops everything: it is never silently skipped."""
    for path in list_checkpoints(folder):
        try:
            return path, load_checkpoint(path, map_location)
        except CorruptCheckpoint as exc:
            warn(f"warning: {exc}; falling back to the previous checkpoint")
    return None


def generator_from_checkpoint(path: str | Path, which: str = "ema", map_location="cpu") -> torch.nn.Module:
    """Rebuild the generator described by the checkpoint's config and load ``which`` ('ema' or 'net_g')."""
    import json

    from sr_training.archs import build_generator
    from sr_training.config import TrainConfig

    state = load_checkpoint(path, map_location)
    if which not in ("ema", "net_g") or which not in state:
        raise StudyError(f"checkpoint {path}: no generator weights '{which}' (expected 'ema' or 'net_g')")
    try:
        cfg = TrainConfig.model_validate(json.loads(state["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise StudyError(f"checkpoint {path}: field 'config' is not a TrainConfig JSON string ({exc})") from None
    net = build_generator(cfg.arch.model_copy(update={"pretrained": None}))
    net.load_state_dict(state[which], strict=True)
    return net.eval()
