"""The FT generator: a frozen base (from a training run or a spandrel file) with peft LoRA adapters.

* Base: a training run folder (its newest ``checkpoints/iter_*.pt``), a training checkpoint
  (EMA weights by default, method.md 9 "FT start"), or any weights file spandrel loads.
  Everything is read with ``torch.load(weights_only=True)``.
* Adapters: ``peft.get_peft_model`` with ``LoraConfig(r, lora_alpha, target_modules=<regex>)``;
  peft matches a string target with ``re.fullmatch`` on the dotted module name (peers.md 4).
  Defaults (method.md 9): rank 8, alpha = rank; SwinIR every attention/MLP Linear
  (qkv, proj, fc1, fc2); RRDBNet every body Conv2d. spandrel's ESRGAN keeps the old ESRGAN
  names (``model.1.sub.<i>.RDB<k>.conv<j>.0`` = BasicSR ``body.<i>.rdb<k>.conv<j>``), so the
  regex is written for those (method.md 9 "Checked on the pinned stack").
* peft's init sets B = 0: the adapted model equals the base at step 0 (tested).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from bench.errors import StudyError
from bench.hashing import sha256_file as file_sha256
from bench.quiet import drop_bitsandbytes_cpu_kernel_notice

drop_bitsandbytes_cpu_kernel_notice()  # before the first `import peft` (it imports bitsandbytes)

DEFAULT_TARGETS = {
    "swinir": r"layers\.\d+\.residual_group\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])",
    "rrdb": r"model\.1\.sub\.\d+\.RDB\d\.conv\d\.0",
}


def resolve_init(init: str | Path) -> Path:
    """A run folder -> its newest checkpoint; a file -> itself."""
    path = Path(init)
    if path.is_dir():
        ckpts = sorted((path / "checkpoints").glob("iter_*.pt"))
        if not ckpts:
            raise StudyError(f"ft.init {path}: a folder but no checkpoints/iter_*.pt in it (a training run folder "
                             f"is expected)")
        return ckpts[-1]
    if not path.is_file():
        raise StudyError(f"ft.init: {path} does not exist")
    return path


def _read_checkpoint(path: Path):
    """(state, is a training checkpoint): the file read once with ``weights_only=True`` / safetensors
    (``checkpoint.read_weights``; a pickle payload is refused and never runs)."""
    from sr_training.checkpoint import TRAINING, checkpoint_kind, read_weights

    state = read_weights(path, "ft.init")
    return state, checkpoint_kind(state) == TRAINING


def _checkpoint_arch(state: dict) -> dict | None:
    cfg = state.get("config")
    if isinstance(cfg, str):
        cfg = json.loads(cfg)
    return cfg.get("arch") if isinstance(cfg, dict) else None


def load_base(net: torch.nn.Module, arch_cfg, init: str | Path, which: str = "ema") -> dict:
    """Load the base weights into ``net`` (built from the FT config's arch); returns a provenance record."""
    path = resolve_init(init)
    state, is_ckpt = _read_checkpoint(path)
    record = {"init": str(path.resolve()), "init_sha256": file_sha256(path)}
    if is_ckpt:
        if which not in state:
            raise StudyError(f"ft.init {path}: checkpoint has no '{which}' weights (ft.weights); keys: {sorted(state)}")
        arch = _checkpoint_arch(state)
        if arch is not None:
            want = {k: getattr(arch_cfg, k) for k in ("type", "size", "scale")}
            got = {k: arch.get(k) for k in want}
            if got != want:
                raise StudyError(f"ft.init {path}: checkpoint was trained with arch {got}, the FT config says {want}")
        weights = state[which]
        try:
            base_iteration = int(state["iteration"])
        except (KeyError, TypeError, ValueError):
            raise StudyError(f"ft.init {path}: field 'iteration' is {state.get('iteration')!r}, expected an "
                             f"integer (a training checkpoint records it)") from None
        record |= {"kind": "training_checkpoint", "weights": which, "base_iteration": base_iteration}
    else:
        from sr_training.archs import recognise

        desc = recognise(state, "ft.init", path, "neither a training checkpoint nor a model spandrel reads",
                         expect=arch_cfg)
        weights = desc.model.state_dict()
        record |= {"kind": "spandrel", "weights": "file"}
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        raise StudyError(f"ft.init {path}: weights do not fit the configured '{arch_cfg.size}' {arch_cfg.type} "
                         f"({(lines[1] if len(lines) > 1 else lines[0]).strip()})") from None
    return record


def target_regex(arch_type: str, lora_cfg) -> str:
    return lora_cfg.targets or DEFAULT_TARGETS[arch_type]


def matched_modules(net: torch.nn.Module, regex: str) -> list[str]:
    """Names peft will adapt: Linear/Conv2d whose full dotted name fullmatches ``regex``."""
    pat = re.compile(regex)
    names = []
    for name, mod in net.named_modules():
        if not pat.fullmatch(name):
            continue
        if not isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
            raise StudyError(f"ft.lora.targets {regex!r} matches '{name}', a {type(mod).__name__} "
                             f"(only Linear and Conv2d get LoRA)")
        if isinstance(mod, torch.nn.Conv2d) and (mod.dilation != (1, 1) or mod.padding_mode != "zeros"
                                                 or mod.groups != 1):
            # peft does not copy dilation/padding_mode to lora_A and cannot merge grouped convs (peers.md 4)
            raise StudyError(f"ft.lora.targets: conv '{name}' has dilation {mod.dilation}, padding_mode "
                             f"{mod.padding_mode!r}, groups {mod.groups}; peft LoRA needs 1, 'zeros', 1")
        names.append(name)
    return names


def attach_lora(net: torch.nn.Module, arch_type: str, lora_cfg):
    """Freeze every base parameter and wrap ``net`` with peft LoRA; returns the PeftModel."""
    from peft import LoraConfig, get_peft_model

    regex = target_regex(arch_type, lora_cfg)
    names = matched_modules(net, regex)
    if not names:
        some = [n for n, m in net.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][:4]
        raise StudyError(f"ft.lora.targets {regex!r} matches no Linear/Conv2d of the {arch_type} "
                         f"(names look like {', '.join(some)})")
    net.requires_grad_(False)
    config = LoraConfig(r=lora_cfg.rank, lora_alpha=lora_cfg.alpha or lora_cfg.rank, target_modules=regex,
                        lora_dropout=lora_cfg.dropout, init_lora_weights=True, bias="none")
    model = get_peft_model(net, config)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if not trainable or any("lora_" not in n for n in trainable):
        raise StudyError(f"ft: unexpected trainable parameters after attaching LoRA: {trainable[:3]}")
    return model


def adapter_state(model) -> dict[str, torch.Tensor]:
    """The LoRA weights only (peft naming), detached CPU copies."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}


def set_adapter_state(model, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state)
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    unexpected = list(getattr(result, "unexpected_keys", []))
    if missing or unexpected:
        raise StudyError(f"ft: adapter weights do not fit the LoRA config (missing {missing[:2]}, "
                         f"unexpected {unexpected[:2]})")


def adapter_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the sorted adapter tensors (name, dtype, shape, bytes): identifies an adapter."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
