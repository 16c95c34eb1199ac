"""Typed training configuration: a pydantic schema, YAML files, ``key=value`` overrides.

Unknown keys are errors (with the dotted path), values are validated, and the resolved config
is saved into every experiment folder. Option objects are immutable: nothing mutates them.
``${VAR}`` in strings is expanded from the environment (e.g. ``${HGGT_ROOT}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.env import expand_vars
from bench.errors import StudyError
from bench.paths import component_problem
from bench.yamlsafe import load_yaml, load_yaml_file
from sr_training.ft.config import FTConfig


class _Strict(BaseModel):
    # every float finite (gan=.inf, lr=nan are refused); ranges below: weights >= 0, rates > 0, ema in [0, 1)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Fraction = Annotated[float, Field(ge=0, lt=1)]


class ArchConfig(_Strict):
    type: Literal["swinir", "rrdb"] = Field(description="SwinIR (HGGT config) or RRDBNet (Real-ESRGAN)")
    size: Literal["full", "tiny"] = Field("full", description="paper size, or a tiny same-class net for CPU tests")
    scale: int = Field(4, gt=0)
    pretrained: str | None = Field(None, description="a SwinIR / RealESRGAN x4 weights file (spandrel loads it)")
    drop_path_rate: float = Field(0.1, ge=0, lt=1, description=(
        "SwinIR stochastic depth; 0.1 is BasicSR's SwinIR default (basicsr/archs/swinir_arch.py SwinIR.__init__), "
        "which HGGT's SwinIR config inherits by not setting it. Draws are seeded per iteration, so resume stays "
        "bit-identical; set 0 for a deterministic training-mode forward"))


class DegradationConfig(_Strict):
    kind: Literal["one_stage", "two_stage"] = Field(description="HGGT: one_stage for SwinIR, two_stage for RRDB")
    jpeg: Literal["hggt", "kornia"] = Field("hggt", description=(
        "JPEG codec of the degradation. hggt = HGGT's: BasicSR's basicsr/utils/diffjpeg.py "
        "DiffJPEG(differentiable=False), as HGGT's PosNegGTSR/basicsr/models/ours_posgt_model.py and "
        "realesrgan_posgt_model.py __init__ build it (hard rounding, Annex K tables as BasicSR stores them "
        "scaled by quality unrounded, zero pad to 16; sr_training/data/jpeg.py). kornia = kornia's "
        "jpeg_codec_differentiable (soft rounding, floored/clamped tables): NOT HGGT's, about 0.9 dB milder"))


class DataConfig(_Strict):
    source: Literal["multigt", "folder"] = Field("multigt", description=(
        "multigt = the HGGT layout (original + enhanced GTs + labels; needs 'sampling'); folder = a plain folder "
        "of HR images, one GT each (the PSNR stage: HGGT's Blind_PSNR init was trained on DF2K_OST), no labels, "
        "'sampling' refused"))
    root: str = Field(description=(
        "multigt: HGGT split folder (images/ + labels/) or the HGGT dataset root; folder: the folder of HR images"))
    load_size: int | None = Field(None, gt=0, description=(
        "folder only: each image is cropped to load_size x load_size at a seeded random location (reflect-padded "
        "when smaller) before the degradation, as Real-ESRGAN's RealESRGANDataset crop_pad_size (400 for "
        "DF2K_OST); null = 400"))
    split: Literal["train", "test"] = "train"
    gt_size: int = Field(256, gt=0, description="GT patch size (LR patch = gt_size / scale)")
    batch_size: int = Field(8, gt=0, description=(
        "per GPU / process (BasicSR's batch_size_per_gpu); the effective batch is batch_size x world size, "
        "recorded in provenance.json"))
    intended_total_batch: int | None = Field(None, gt=0, description=(
        "optional: the effective batch the recipe intends (HGGT: 4 GPUs x 8 = 32 SwinIR, 4 x 12 = 48 Real-ESRGAN); "
        "a warning is printed when batch_size x world size differs"))
    require_positive: Literal["auto", True, False] = Field("auto", description=(
        "drop groups without an effective Positive (HGGT's filter for its Pos models). auto = on for upos/smp "
        "(they need a Positive), off otherwise; true runs sma/amo/original on UPos's subset (like-for-like)"))
    workers: int = Field(8, ge=0)
    hflip: bool = True
    queue_size: int | None = Field(None, ge=0, description=(
        "HGGT's training-pair queue (sr_training/data/queue.py); null = the size of HGGT's config for this arch "
        "and degradation (SwinIR 160, Real-ESRGAN two-stage 180, RRDBGAN one-stage 144); 0 disables it"))
    crop_before_degrade: bool = Field(False, description=(
        "shortcut, NOT HGGT's recipe: crop gt_size first and degrade only the crop. HGGT (and the default) "
        "degrades the full original, then crops LR and GTs co-located"))
    degradation: DegradationConfig


class IQAConfig(_Strict):
    selection: str | None = Field(None, description="selection.json from `iqa-study select`")
    metric: str | None = Field(None, description=(
        "the sampling metric by name (paper configs pin musiq, the paper's Q); set either this or 'selection'"))
    random_init: bool = Field(False, description="random-init IQA net: plumbing/benchmarks only, never a quality")
    store: str | None = Field(None, description="SMA/SMP: store with image-level scores of every GT")
    manifest: str | None = Field(None, description="SMA/SMP: the HGGT manifest whose images were scored")


class SamplingConfig(_Strict):
    strategy: Literal["original", "uniform_all", "upos", "sma", "smp", "amo"]
    tau: float = Field(0.03, gt=0, description=(
        "softmax temperature for sma/smp on RANGE-NORMALISED scores: Q / (score_max - score_min) of the metric "
        "table entry, so tau means the same for 0-100 and 0-1 metrics; 0.03 = 3 MUSIQ points (method.md 9: 2-5)"))
    iqa: IQAConfig = IQAConfig()
    include_original: bool = Field(True, description=(
        "sma/amo: the original is one of the candidates (method.md 9: AMO scores all 5 co-located crops, original "
        "included; the paper does not say). false = only the enhanced GTs (the 'AMO without the original' "
        "ablation)"))


class LossConfig(_Strict):
    l1: float = Field(1.0, ge=0)
    perceptual: float = Field(1.0, ge=0)
    perceptual_weights: str = Field("imagenet", description="'imagenet' (torchvision download), 'random', or a .pth")
    gan: float = Field(0.1, ge=0)
    d_features: int = Field(64, gt=0, description=(
        "num_feat of the U-Net discriminator (HGGT's network_d: 64, the paper configs). A smaller D is a "
        "documented deviation for tiny CPU runs (iqa-study repro's FT_IG: 16), where a 64-feature D costs "
        "4x the tiny generator's whole FT step"))


class OptimConfig(_Strict):
    lr_g: float = Field(1e-4, gt=0)
    lr_d: float = Field(1e-4, gt=0)
    betas: tuple[Fraction, Fraction] = (0.9, 0.99)
    milestones: tuple[Annotated[int, Field(gt=0)], ...] = (200_000, 250_000, 275_000, 287_500)
    gamma: float = Field(0.5, gt=0, description="learning-rate factor at each milestone")
    ema: Fraction = Field(0.999, description="EMA decay of G, in [0, 1)")


class ScheduleConfig(_Strict):
    total_iters: int = Field(300_000, gt=0)
    log_every: int = Field(100, gt=0)
    val_every: int = Field(5_000, gt=0)
    checkpoint_every: int = Field(5_000, gt=0)
    keep_last: int | None = Field(None, gt=1, description=(
        "keep only the newest N iter_*.pt (N >= 2 so a truncated newest one can fall back); None keeps all "
        "(BasicSR). The best checkpoint (val.best_metric) is kept separately as checkpoints/best.pt"))


class ValConfig(_Strict):
    dir: str | None = Field(None, description="folder with hr/ and lr/ (e.g. Set5: hr/, lr_blind_x4/)")
    lr_subdir: str = "lr_blind_x4"
    crop_border: int = Field(4, ge=0, description="pixels cropped from each border before FR metrics (HGGT: 4)")
    metrics: tuple[str, ...] = Field(("psnr", "psnry", "ssim", "ssimc", "stlpips"), description=(
        "FR metrics against hr/ through bench's metric factory (pyiqa) under evaluate's FR protocol (hggt: RGB, "
        "crop val.crop_border): psnr and ssim = RGB, psnry = Y-PSNR, ssimc = RGB SSIM (pyiqa's), stlpips = LPIPS-ST"))
    nr_metric: str | None = Field("auto", description=(
        "NR metric on the SR outputs: 'auto' = the sampling metric (sma/smp/amo), none otherwise; a name; or null"))
    best_metric: str | None = Field("stlpips", description=(
        "keep checkpoints/best.pt by this validation metric (its table orientation decides better); null = off"))


class TrainConfig(_Strict):
    name: str
    seed: int = Field(0, ge=0)
    arch: ArchConfig
    data: DataConfig
    sampling: SamplingConfig | None = Field(None, description=(
        "the GT sampling strategy of multi-GT data (required there); not applicable to data.source=folder"))
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    val: ValConfig = ValConfig()
    ft: FTConfig | None = Field(None, description="FT stage (LoRA + -lambda_Q*Q): present = `train` runs FTTrainer")
    amp_bf16: bool = Field(False, description=(
        "opt-in bf16 autocast on CUDA (ignored on CPU); off = fp32 as HGGT (no use_amp in its configs)"))

    @field_validator("name")
    @classmethod
    def _name_is_one_component(cls, v: str) -> str:
        if (why := component_problem(v)) is not None:  # evaluate's output folder is named after it
            raise ValueError(f"{v!r} {why}; the run name becomes a folder name")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        d = self.data
        if d.source == "folder":
            if self.sampling is not None:
                raise ValueError("sampling: not applicable to data.source=folder (one GT per image, no labels); "
                                 "remove the 'sampling' section")
            if d.require_positive is True:
                raise ValueError("data.require_positive=true: data.source=folder has no labels")
            if d.crop_before_degrade:
                raise ValueError("data.crop_before_degrade: not available for data.source=folder (data.load_size "
                                 "is its crop)")
        elif self.sampling is None:
            raise ValueError("sampling: required for data.source=multigt (e.g. sampling: {strategy: upos})")
        elif d.load_size is not None:
            raise ValueError("data.load_size: only for data.source=folder (multi-GT groups are degraded whole)")
        if d.gt_size % self.arch.scale:
            raise ValueError(f"data.gt_size {d.gt_size} is not a multiple of arch.scale {self.arch.scale}")
        if d.source == "folder":
            if d.gt_size > (d.load_size or 400):
                raise ValueError(f"data.gt_size {d.gt_size} is larger than data.load_size {d.load_size or 400}")
            return self
        from sr_training.sampling import SAMPLERS  # the strategies' facts, one class each

        s = self.sampling.strategy
        sampler = SAMPLERS[s]
        if not self.sampling.include_original and not sampler.may_drop_original:
            raise ValueError(f"sampling.include_original=false: only for "
                             f"{' and '.join(n for n, c in SAMPLERS.items() if c.may_drop_original)} (not {s})")
        if sampler.positives_only and d.require_positive is False:
            raise ValueError(f"data.require_positive=false is impossible with {s} (it samples among Positives)")
        if d.gt_size % self.arch.scale:
            raise ValueError(f"data.gt_size {d.gt_size} is not a multiple of arch.scale {self.arch.scale}")
        if sampler.needs is not None and bool(self.sampling.iqa.metric) == bool(self.sampling.iqa.selection):
            raise ValueError(f"{s} needs exactly one of sampling.iqa.metric (e.g. musiq, the paper's) and "
                             "sampling.iqa.selection (selection.json from `iqa-study select`)")
        return self

    def strategy(self) -> str:
        """The GT choice of every step: the sampling strategy; 'original' for single-GT folder data."""
        return "original" if self.sampling is None else self.sampling.strategy

    def require_positive(self) -> bool:
        """The resolved group filter (see data.require_positive)."""
        if self.data.require_positive == "auto":
            from sr_training.sampling import SAMPLERS

            return SAMPLERS[self.strategy()].positives_only
        return bool(self.data.require_positive)


# what each variable of the shipped configs names, and where it comes from (the README's table)
ENV_HINTS = {
    "SYNTH_HGGT_ROOT": "a SYNTHETIC multi-GT set: build one with `iqa-study train-data synthetic runs/synthetic_hggt`, "
                       "then SYNTH_HGGT_ROOT=runs/synthetic_hggt",
    "FT_INIT": "the base an FT run starts from: a training run folder (e.g. the --out of a smoke_swinir_amo run)",
    "HGGT_ROOT": "the HGGT dataset root (Train/, Test/; docs/datasets.md)",
    "SET5_ROOT": "a Set5 folder with hr/ and lr_blind_x4/ (validation)",
    "SWINIR_PSNR_INIT": "a PSNR-oriented SwinIR init (README 'Initialisation weights', or a psnr_swinir.yaml run)",
    "RRDB_PSNR_INIT": "a PSNR-oriented RRDBNet init, e.g. RealESRNet_x4plus.pth (README 'Initialisation weights')",
    "STUDY_STORE": "the store holding image-level scores of the HGGT train GTs (`iqa-study score --manifest ...`)",
    "HGGT_TRAIN_MANIFEST": "the HGGT train manifest (`iqa-study manifest build --config data_manifests/hggt_train.yaml`)",
    "SWINIR_AMO_RUN": "the base run folder FT starts from (a swinir_amo.yaml run)",
    "RRDB_AMO_RUN": "the base run folder FT starts from (an rrdb_amo.yaml run)",
    "SWINIR_UPOS_RUN": "the base run folder FT starts from (a swinir_upos.yaml run)",
    "RRDB_UPOS_RUN": "the base run folder FT starts from (an rrdb_upos.yaml run)",
}


def missing_variable(source: str, name: str) -> StudyError:
    hint = ENV_HINTS.get(name)
    return StudyError(f"{source}: uses ${{{name}}} but environment variable {name} is not set"
                      + (f"; it names {hint}" if hint else ""))


def selection_overrides(path: str | Path, overrides: list[str], selection: str | Path) -> list[str]:
    """``train --selection F``: the overrides that make config ``path`` (after ``overrides``) take its
    metrics from selection.json ``F``: ``sampling.iqa.metric=null sampling.iqa.selection=F`` for a
    strategy that scores GTs (sma/smp/amo), and for an FT config ``ft.reward.metric=null
    ft.reward.selection=F ft.guard.metrics=null`` (the guard then watches the selection's metrics).
    Returned before ``overrides`` so an explicit ``key=value`` still wins."""
    import json

    sel = Path(selection)
    if not sel.is_file():
        raise StudyError(f"--selection {sel}: no such file (write one with `iqa-study select`)")
    tree = load_yaml_file(resolve_config(path))
    for item in overrides:
        _apply_override(tree, item, str(path))
    value = json.dumps(str(sel.resolve()))  # JSON is YAML: any path parses back as this one string
    out = []
    sampling = tree.get("sampling") if isinstance(tree.get("sampling"), dict) else {}
    from sr_training.sampling import uses_metric

    if uses_metric(sampling.get("strategy")):
        out += ["sampling.iqa.metric=null", f"sampling.iqa.selection={value}"]
    if isinstance(tree.get("ft"), dict):
        out += ["ft.reward.metric=null", "ft.reward.terms=[]", f"ft.reward.selection={value}", "ft.guard.metrics=null"]
    if not out:
        raise StudyError(f"--selection {sel}: {path} uses no metric (sampling strategy "
                         f"{sampling.get('strategy')!r}, no ft section); nothing to take from a selection")
    return out


def _expand(obj, source: str):
    return expand_vars(obj, lambda name: missing_variable(source, name))


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
    node[parts[-1]] = load_yaml(raw, f"override {item!r}", mapping=False)


PACKAGED_CONFIGS = Path(__file__).with_name("configs")


def resolve_config(path: str | Path) -> Path:
    """The config file ``path`` names, by one rule: an existing file wins; else a bare name (no folder) is a
    config shipped inside the package (sr_training/configs/NAME[.yaml]), so an installed wheel trains without
    a checkout (`iqa-study train --config smoke_swinir_upos`); else one line with the closest shipped names."""
    path = Path(path)
    if path.is_file():
        return path
    if path.parent == Path("."):
        for cand in (PACKAGED_CONFIGS / path.name, PACKAGED_CONFIGS / f"{path.name}.yaml"):
            if cand.is_file():
                return cand
    import difflib

    shipped = sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))
    near = difflib.get_close_matches(path.stem, shipped, n=3)
    hint = f"; did you mean {', '.join(near)}?" if near else f"; shipped configs: {', '.join(shipped)}"
    raise StudyError(f"{path}: config file does not exist and is not a shipped config name{hint}")


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    path = resolve_config(path)
    tree = load_yaml_file(path)  # one line for invalid YAML, a list at the top, an alias bomb
    for item in overrides:
        _apply_override(tree, item, str(path))
    tree = _expand(tree, str(path))
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise StudyError(f"{path}: field '{where}': {err['msg']}") from None


def save_config(cfg: TrainConfig, out: Path) -> Path:
    from bench.atomic import atomic_write_text

    return atomic_write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), out)


def json_schema() -> dict:
    return TrainConfig.model_json_schema()
