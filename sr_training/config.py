"""Typed training configuration: a pydantic schema, YAML files, ``key=value`` overrides.

Unknown keys are errors (with the dotted path), values are validated, and the resolved config
is saved into every experiment folder. Option objects are immutable: nothing mutates them.
``${VAR}`` in strings is expanded from the environment (e.g. ``${HGGT_ROOT}``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.errors import StudyError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArchConfig(_Strict):
    type: Literal["swinir", "rrdb"] = Field(description="SwinIR (HGGT config) or RRDBNet (Real-ESRGAN)")
    size: Literal["full", "tiny"] = Field("full", description="paper size, or a tiny same-class net for CPU tests")
    scale: int = 4
    pretrained: str | None = Field(None, description="a SwinIR / RealESRGAN x4 weights file (spandrel loads it)")
    drop_path_rate: float = Field(0.0, description="SwinIR stochastic depth (0 keeps train outputs deterministic)")


class DegradationConfig(_Strict):
    kind: Literal["one_stage", "two_stage"] = Field(description="HGGT: one_stage for SwinIR, two_stage for RRDB")


class DataConfig(_Strict):
    root: str = Field(description="HGGT split folder (images/ + labels/) or the HGGT dataset root")
    split: Literal["train", "test"] = "train"
    gt_size: int = 256
    batch_size: int = Field(8, description="per GPU / process")
    workers: int = 8
    hflip: bool = True
    degradation: DegradationConfig


class IQAConfig(_Strict):
    selection: str | None = Field(None, description="selection.json from `iqa-study select`")
    metric: str | None = Field(None, description="overrides the selection's training_metric")
    random_init: bool = Field(False, description="random-init IQA net: plumbing/benchmarks only, never a quality")
    store: str | None = Field(None, description="SMA/SMP: store with image-level scores of every GT")
    manifest: str | None = Field(None, description="SMA/SMP: the HGGT manifest whose images were scored")


class SamplingConfig(_Strict):
    strategy: Literal["original", "uniform_all", "upos", "sma", "smp", "amo"]
    tau: float = Field(3.0, gt=0, description="softmax temperature for sma/smp, in score units")
    iqa: IQAConfig = IQAConfig()


class LossConfig(_Strict):
    l1: float = 1.0
    perceptual: float = 1.0
    perceptual_weights: str = Field("imagenet", description="'imagenet' (torchvision download), 'random', or a .pth")
    gan: float = 0.1


class OptimConfig(_Strict):
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    milestones: tuple[int, ...] = (200_000, 250_000, 275_000, 287_500)
    gamma: float = 0.5
    ema: float = 0.999


class ScheduleConfig(_Strict):
    total_iters: int = 300_000
    log_every: int = 100
    val_every: int = 5_000
    checkpoint_every: int = 5_000


class ValConfig(_Strict):
    dir: str | None = Field(None, description="folder with hr/ and lr/ (e.g. Set5: hr/, lr_blind_x4/)")
    lr_subdir: str = "lr_blind_x4"
    crop_border: int = 4


class TrainConfig(_Strict):
    name: str
    seed: int = 0
    arch: ArchConfig
    data: DataConfig
    sampling: SamplingConfig
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    val: ValConfig = ValConfig()
    amp_bf16: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU)")


_ENV = re.compile(r"\$\{(\w+)\}")


def _expand(obj, source: str):
    if isinstance(obj, dict):
        return {k: _expand(v, source) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_expand(v, source) for v in obj]
    if isinstance(obj, str):
        def sub(m):
            if m.group(1) not in os.environ:
                raise StudyError(f"{source}: uses ${{{m.group(1)}}} but environment variable {m.group(1)} is not set")
            return os.environ[m.group(1)]
        return _ENV.sub(sub, obj)
    return obj


def _apply_override(tree: dict, item: str, source: str) -> None:
    if "=" not in item:
        raise StudyError(f"override {item!r}: expected key=value (e.g. data.batch_size=4)")
    key, raw = item.split("=", 1)
    node = tree
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise StudyError(f"override {item!r}: {p!r} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: config file does not exist")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise StudyError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    for item in overrides:
        _apply_override(tree, item, str(path))
    tree = _expand(tree, str(path))
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise StudyError(f"{path}: field '{where}': {err['msg']}") from None


def save_config(cfg: TrainConfig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return out


def json_schema() -> dict:
    return TrainConfig.model_json_schema()
