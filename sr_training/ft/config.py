"""The ``ft:`` section of a training config (sr_training.config.TrainConfig.ft).

Kept free of other sr_training imports so sr_training.config can import it. Defaults are
method.md 9 recommendations (the paper fixes none of them): LoRA rank 8, alpha = rank;
lambda_Q = 1 on the range-normalised reward (== method.md's 0.01 on raw MUSIQ, see reward.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # every float finite


class LoRAConfig(_Strict):
    rank: int = Field(8, gt=0, description="LoRA rank r (method.md 9: 8; also run 16)")
    alpha: float | None = Field(None, gt=0, description="lora_alpha; null = rank (scaling alpha/r = 1)")
    targets: str | None = Field(None, description="regex, re.fullmatch on the dotted module name; null = the "
                                                  "arch default (sr_training.ft.lora.DEFAULT_TARGETS)")
    dropout: float = Field(0.0, ge=0, lt=1, description="lora_dropout")


class RewardTerm(_Strict):
    metric: str
    weight: float = 1.0


class RewardConfig(_Strict):
    metric: str | None = Field(None, description="the target Q; overrides the selection's reward_metric")
    terms: tuple[RewardTerm, ...] = Field((), description="beyond the paper: Q = sum_k weight_k * Q_k (each "
                                                           "range-normalised); exclusive with 'metric'")
    selection: str | None = Field(None, description="selection.json; Q = its reward_metric; falls back "
                                                    "to sampling.iqa.selection")
    lambda_q: float = Field(1.0, ge=0, description="weight of -Q_norm in the loss (Q_norm = sign*score/(hi-lo))")
    input: Literal["clamped_ste", "raw"] = Field("clamped_ste", description=(
        "what Q scores: clamped_ste = the SR clamped to [0,1] and 8-bit quantised (what evaluate scores) with a "
        "straight-through gradient (method.md 9: 'no hard clamp (straight-through if needed)'); raw = the "
        "unclamped network output (Q can then rise through out-of-range pixels)"))
    random_init: bool = Field(False, description="random-init Q network: plumbing/benchmarks only")

    @model_validator(mode="after")
    def _one_source(self):
        if self.metric and self.terms:
            raise ValueError("set either 'metric' or 'terms', not both")
        return self


class GuardConfig(_Strict):
    enabled: bool = Field(True, description="reward-hacking guard at every schedule.val_every (needs val.dir)")
    metrics: tuple[str, ...] | None = Field(None, description="NR metrics watched beside Q; null = the selection's "
                                                              "two top-ranked metrics other than Q and its "
                                                              "complementary metrics, those available here")
    fr: tuple[str, ...] = Field(("stlpips",), description="FR metrics against the val GT watched by the rule "
                                                           "(LPIPS-ST; PSNR etc. are logged through val.metrics)")
    margin: float = Field(0.0, ge=0, description="worsening tolerated, as a fraction of the metric's score range")
    patience: int = Field(2, gt=0, description="consecutive flagged checks before the action")
    reference: Literal["start", "previous"] = Field("start", description="compare with the check before FT "
                                                                         "(start) or the previous check")
    action: Literal["stop", "keep_best"] = Field("stop", description="stop the run, or keep training and keep "
                                                                      "checkpoints/best.pt by the rule")


class FTConfig(_Strict):
    init: str = Field(description="base model: a training run folder (newest checkpoint), a training checkpoint, "
                                  "or a spandrel-loadable weights file")
    weights: Literal["ema", "net_g"] = Field("ema", description="which generator of a training checkpoint")
    params: Literal["lora", "full"] = Field("lora", description=(
        "what FT trains: lora = peft LoRA adapters on the frozen base (the paper); full = every base parameter "
        "(no LoRA; the 'lora' section is then unused), same loss, lambda's and schedule: the ablation of the "
        "paper's reason for LoRA (direct optimisation of Q gets exploited). Checkpoints then hold the full "
        "weights under 'adapter'; merge writes them out as they are"))
    lora: LoRAConfig = LoRAConfig()
    reward: RewardConfig = RewardConfig()
    guard: GuardConfig = GuardConfig()
    load_discriminator: bool = Field(True, description="with loss.gan > 0: start D from the base checkpoint's net_d")
    base_drop_path: bool = Field(False, description=(
        "SwinIR only: keep arch.drop_path_rate (stochastic depth) active in the frozen base while the adapter "
        "trains. Off by default: the base is frozen, so its random depth only adds noise to the LoRA gradient "
        "(the paper and HGGT state nothing for FT; HGGT's base runs inherit BasicSR's 0.1). The rate used is "
        "recorded in provenance.json"))
