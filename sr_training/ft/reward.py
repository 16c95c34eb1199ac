"""The FT reward Q(SR): pyiqa metrics as differentiable, frozen, eval-only, range-normalised terms.

Rule (stated once, used everywhere):

    Q_norm(x) = sum_k  w_k * sign_k * mean_batch(score_k(x)) / (score_max_k - score_min_k)

with sign = -1 for lower-is-better metrics (NIQE, ...) and the score range from the metric
table (bench/metrics/metrics.yaml). The loss term is ``-lambda_Q * Q_norm``, so lambda_Q means
the same for every metric: lambda_Q = 1 on MUSIQ (range 0-100) equals method.md 9's
"lambda_Q = 0.01 on raw MUSIQ". The paper optimises one metric (MUSIQ); several weighted terms
are beyond the paper (its stated future work, method.md 8.6).

Each metric is created through ``bench.metrics.factory.create(..., as_loss=True)`` (pyiqa's
``as_loss`` returns the batch-mean score and does not negate, method.md 4). It is kept outside
the generator's module tree (this class is not an ``nn.Module``), its parameters are frozen, it
is put in eval mode before every call (MUSIQ builds its multi-scale input and NIMA its
preprocessing only when ``training`` is False), and it runs in float32 with autocast disabled.
"""

from __future__ import annotations

import torch

from bench.errors import StudyError
from bench.metrics.table import MetricSpec, get


def ste_clamp_quantise(x: torch.Tensor) -> torch.Tensor:
    """The forward value of the evaluated image - clamp to [0, 1], round to 8 bits - with the identity as its
    gradient (straight-through estimator): d out / d x = 1 everywhere."""
    return x + ((x.clamp(0, 1) * 255).round() / 255 - x).detach()


def refusal(spec: MetricSpec) -> str | None:
    """Why ``spec`` cannot be an FT target (one line), or None."""
    if spec.mode != "NR":
        return f"'{spec.name}' is a full-reference metric; Q(SR) must be a no-reference metric"
    if not spec.differentiable:
        return f"'{spec.name}' is not differentiable ({spec.not_differentiable_because or 'metric table'})"
    if spec.score_min is None or spec.score_max is None or spec.score_max <= spec.score_min:
        return f"'{spec.name}' has no score range in the metric table (Q_norm = sign*score/(hi-lo) needs one)"
    return None


def resolve_terms(reward_cfg, fallback_selection: str | None = None) -> list[tuple[MetricSpec, float, str]]:
    """[(spec, weight, where it came from)]: ``terms`` > ``metric`` > selection's reward_metric (C3)."""
    if reward_cfg.terms:
        chosen = [(t.metric, t.weight, "ft.reward.terms") for t in reward_cfg.terms]
    elif reward_cfg.metric:
        chosen = [(reward_cfg.metric, 1.0, "ft.reward.metric")]
    else:
        path = reward_cfg.selection or fallback_selection
        if not path:
            raise StudyError("ft.reward: set 'metric', 'terms' or 'selection' (selection.json from `iqa-study select`)")
        from bench.study.select import read_selection

        sel = read_selection(path)
        record = sel.get("reward_metric")
        if not isinstance(record, dict) or "metric" not in record:
            raise StudyError(f"{path}: 'reward_metric' is empty (no ranked metric is both differentiable and "
                             f"available here); name the FT target with ft.reward.metric")
        chosen = [(record["metric"], 1.0, f"{path}:reward_metric")]
    out = []
    for name, weight, source in chosen:
        spec = get(name)
        why = refusal(spec)
        if why:
            raise StudyError(f"ft.reward ({source}): {why}; it cannot be the FT target")
        out.append((spec, float(weight), source))
    return out


class Reward:
    """Callable: ``reward(sr) -> (q_norm: 0-dim tensor with grad, raw: {metric: batch-mean score})``."""

    def __init__(self, terms: list[tuple[MetricSpec, float, str]], device: str | torch.device,
                 random_init: bool = False):
        from bench.metrics.factory import create

        self.device = torch.device(device)
        self.terms = []
        for spec, weight, source in terms:
            model = create(spec, self.device, as_loss=True, random_init=random_init)
            model.eval()
            model.requires_grad_(False)
            self.terms.append((spec, weight, model))
        self.random_init = random_init

    @property
    def names(self) -> list[str]:
        return [spec.name for spec, _, _ in self.terms]

    def describe(self) -> list[dict]:
        return [{"metric": s.name, "weight": w, "sign": s.sign, "score_min": s.score_min, "score_max": s.score_max}
                for s, w, _ in self.terms]

    @staticmethod
    def normalise(spec: MetricSpec, score: torch.Tensor) -> torch.Tensor:
        return spec.normalised(score)

    def __call__(self, sr: torch.Tensor, input_mode: str = "clamped_ste") -> tuple[torch.Tensor, dict[str, float]]:
        """(Q_norm, raw scores); ``raw['out_of_range']`` = the share of SR values outside [0, 1]. ``input_mode``
        (ft.reward.input): 'clamped_ste' scores what evaluation scores - the SR clamped to [0, 1] and quantised to
        8 bits - with a straight-through gradient (``ste_clamp_quantise``), so Q cannot rise through out-of-range
        or sub-quantum pixel values; 'raw' scores the unclamped network output."""
        q = sr.new_zeros((), dtype=torch.float32)
        raw = {"out_of_range": float(((sr < 0) | (sr > 1)).float().mean().detach())}
        with torch.autocast(self.device.type, enabled=False):
            x = ste_clamp_quantise(sr.float()) if input_mode == "clamped_ste" else sr.float()
            for spec, weight, model in self.terms:
                model.eval()  # permanently: MUSIQ/NIMA preprocess differently in train mode
                score = model(x)
                raw[spec.name] = float(score.detach())
                q = q + weight * self.normalise(spec, score).float()
        return q, raw
