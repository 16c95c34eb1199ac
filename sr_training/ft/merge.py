"""``iqa-study merge``: an FT checkpoint (adapter only) + its base -> a plain model for inference.

The base is re-read from the path recorded in the checkpoint (``ft.base.init``, or ``--base`` when
the file moved) and must have the recorded sha256. The LoRA update is merged with peft's
``merge_and_unload(safe_merge=True)`` (NaN check; not in place, the result is used, peers.md 4),
and the output is the arch's plain state dict (the same keys as the base, so spandrel and
``arch.pretrained`` load it). A sidecar ``<output>.json`` records the source checkpoint and
iteration, the base file and sha256, the adapter sha256, the LoRA config, the reward and the
merged file's sha256 (method.md 9 "inference: merge LoRA ... record the merge and the adapter hash").
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench.errors import StudyError


def resolve_ft_checkpoint(run: str | Path | None = None, checkpoint: str | Path | None = None,
                          best: bool = False) -> Path:
    if (run is None) == (checkpoint is None):
        raise StudyError("merge: give exactly one of --run DIR and --checkpoint CKPT")
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise StudyError(f"merge --checkpoint {path}: file does not exist")
        return path
    folder = Path(run) / "checkpoints"
    if best:
        path = folder / "guard_best.pt"
        if not path.is_file():
            raise StudyError(f"merge --run {run} --guard-best: {path} does not exist (no guard check kept one)")
        return path
    from sr_training.checkpoint import list_checkpoints

    found = list_checkpoints(folder)
    if not found:
        raise StudyError(f"merge --run {run}: no checkpoints/iter_*.pt in it")
    return found[0]


def _checked_fields(path: Path, s: dict, config_cls) -> tuple[object, dict]:
    """(TrainConfig, ft.base record) of an FT checkpoint, or one line naming the malformed field
    (a safe file with an empty ``ft``, no ``init_sha256``, ``config`` that is not JSON, ...)."""
    from pydantic import ValidationError

    ft = s["ft"]
    if not isinstance(ft, dict):
        raise StudyError(f"merge {path}: field 'ft' is {type(ft).__name__}, expected a mapping")
    base = ft.get("base")
    if not isinstance(base, dict):
        raise StudyError(f"merge {path}: field 'ft.base' missing or not a mapping")
    for key, where in (("init", base), ("init_sha256", base), ("adapter_sha256", ft), ("reward", ft)):
        if not isinstance(where.get(key), str):
            field = f"ft.base.{key}" if where is base else f"ft.{key}"
            raise StudyError(f"merge {path}: field '{field}' missing or not a string")
    try:
        json.loads(ft["reward"])
        int(s["iteration"])
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise StudyError(f"merge {path}: field 'ft.reward' or 'iteration' malformed ({exc})") from None
    if not isinstance(s.get("adapter"), dict):
        raise StudyError(f"merge {path}: field 'adapter' is {type(s.get('adapter')).__name__}, expected a state dict")
    raw = s.get("config")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise StudyError(f"merge {path}: field 'config' is not JSON ({exc.msg})") from None
    try:
        cfg = config_cls.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise StudyError(f"merge {path}: field 'config.{'.'.join(map(str, err['loc']))}': {err['msg']}") from None
    return cfg, base


def merged_model(checkpoint: str | Path, base: str | Path | None = None) -> tuple[torch.nn.Module, dict]:
    """(merged plain generator in eval mode, record)."""
    from sr_training.archs import build_generator
    from sr_training.checkpoint import FT_ADAPTER, checkpoint_kind, load_checkpoint
    from sr_training.config import TrainConfig
    from sr_training.ft.lora import adapter_hash, attach_lora, file_sha256, load_base, set_adapter_state

    path = Path(checkpoint)
    s = load_checkpoint(path, "cpu")
    if checkpoint_kind(s) != FT_ADAPTER:
        raise StudyError(f"merge {path}: not an FT checkpoint (no 'adapter'); a base training checkpoint needs no "
                         f"merge (evaluate it directly)")
    cfg, recorded = _checked_fields(path, s, TrainConfig)
    base_path = Path(base) if base is not None else Path(recorded["init"])
    if not base_path.is_file():
        raise StudyError(f"merge {path}: base {base_path} does not exist (moved? pass --base FILE with sha256 "
                         f"{recorded['init_sha256'][:12]}...)")
    if file_sha256(base_path) != recorded["init_sha256"]:
        raise StudyError(f"merge {path}: base {base_path} is not the file the adapter was trained on "
                         f"(sha256 differs from the recorded {recorded['init_sha256'][:12]}...)")
    net = build_generator(cfg.arch.model_copy(update={"pretrained": None}))
    which = recorded["weights"] if recorded.get("kind") == "training_checkpoint" else "ema"
    load_base(net, cfg.arch, base_path, which)
    keys = list(net.state_dict())
    full = cfg.ft.params == "full"
    got = adapter_hash(s["adapter"])
    if got != s["ft"]["adapter_sha256"]:
        raise StudyError(f"merge {path}: adapter sha256 {got[:12]} differs from the recorded "
                         f"{s['ft']['adapter_sha256'][:12]} (corrupted checkpoint)")
    if full:  # full-parameter FT: the checkpoint holds every weight; nothing to merge
        try:
            net.load_state_dict(s["adapter"], strict=True)
        except RuntimeError as exc:
            raise StudyError(f"merge {path}: field 'adapter' does not fit the {cfg.arch.type} of its config "
                             f"({str(exc).splitlines()[-1].strip()})") from None
        merged = net.eval()
    else:
        model = attach_lora(net, cfg.arch.type, cfg.ft.lora)
        set_adapter_state(model, s["adapter"])
        merged = model.merge_and_unload(safe_merge=True).eval()
    if list(merged.state_dict()) != keys:
        raise StudyError(f"merge {path}: merged model keys differ from the base arch's (peft left adapters behind)")
    record = {"source_checkpoint": str(path.resolve()), "iteration": int(s["iteration"]), "run_name": cfg.name,
              "arch": cfg.arch.type, "arch_size": cfg.arch.size, "scale": cfg.arch.scale,
              "sampling": cfg.strategy(), "base": str(base_path.resolve()),
              "base_sha256": recorded["init_sha256"], "base_kind": recorded.get("kind"),
              "base_weights": recorded.get("weights"), "adapter_sha256": got, "lora": s["ft"]["lora"],
              "reward": json.loads(s["ft"]["reward"]), "params": cfg.ft.params,
              "merge": ("full-parameter FT: the trained weights as they are (no adapter)" if full
                        else "peft merge_and_unload(safe_merge=True)")}
    return merged, record


def merge(checkpoint: str | Path, out: str | Path, base: str | Path | None = None) -> dict:
    from sr_training.checkpoint import save_checkpoint
    from sr_training.ft.lora import file_sha256

    merged, record = merged_model(checkpoint, base)
    out = Path(out)
    save_checkpoint({k: v.detach().cpu().contiguous() for k, v in merged.state_dict().items()}, out)
    record["output"] = str(out.resolve())
    record["output_sha256"] = file_sha256(out)
    from bench.atomic import atomic_write_text

    atomic_write_text(json.dumps(record, indent=2), out.with_name(out.name + ".json"))
    return record
