"""Which ground truth each sample trains on (method.md 3).

    original     the HR original (index 0)
    uniform_all  uniform over the 5 versions
    upos         uniform over effective Positives (HGGT's UPos baseline)
    sma / smp    softmax_tau over image-level IQA scores of all GTs / of the Positives only
    amo          per-patch argmax of online IQA scores of all 5 co-located crops; exact ties are broken
                 uniformly at random with the iteration's seeded generator (never toward the original,
                 which ``argmax`` would do by returning the first index)

Scores are oriented so that higher is better before any softmax/argmax. tau (sma/smp) acts on
RANGE-NORMALISED scores, ``Q / (score_max - score_min)`` with the range of the metric's table entry
(bench/metrics/metrics.yaml), so tau = 0.03 means 3 points of a 0-100 metric (MUSIQ) and 0.03 of a
0-1 metric alike (:func:`normalise`).
"""

from __future__ import annotations

import math

import torch

from sr_training.data.multigt import POSITIVE


def softmax_probs(scores: torch.Tensor, tau: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """p_k = exp(Q_k / tau) / sum_j exp(Q_j / tau) over the allowed (mask) candidates."""
    logits = scores.double() / tau
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1)


def normalise(scores: torch.Tensor, spec) -> torch.Tensor:
    """Oriented scores divided by the metric's score range (``MetricSpec.span``, pyiqa's score_max - score_min)."""
    return scores / spec.span


def tau_warning(scores: torch.Tensor, tau: float, mask: torch.Tensor | None = None) -> str | None:
    """A warning when tau makes softmax sampling indistinguishable from uniform or from argmax for the
    observed within-group score spread (normalised scores, (G,K)).

    With spread d = max - min of a group's candidates, the most/least likely candidate odds are exp(d/tau).
    Median odds below 1.1 (d/tau < 0.095) is practically uniform; the best candidate taking >= 99% of the
    mass in the median group is practically argmax."""
    s = scores.double()
    if mask is not None:
        s = s.masked_fill(~mask, float("nan"))
    hi, lo = torch.nan_to_num(s, nan=-math.inf).amax(1), torch.nan_to_num(s, nan=math.inf).amin(1)
    ok = torch.isfinite(hi) & torch.isfinite(lo)
    if not ok.any():
        return None
    spread = float((hi - lo)[ok].median())
    top = softmax_probs(torch.nan_to_num(s, nan=0.0), tau, mask).amax(1)[ok]
    p_top = float(top.median())
    if spread / tau < math.log(1.1):
        return (f"tau={tau:g} is large for the observed score spread (median {spread:.4g} normalised units): "
                f"softmax sampling is practically uniform (odds best/worst {math.exp(spread / tau):.3f})")
    if p_top >= 0.99:
        return (f"tau={tau:g} is small for the observed score spread (median {spread:.4g} normalised units): "
                f"softmax sampling is practically argmax (median top probability {p_top:.3f})")
    return None


def argmax_random_ties(scores: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per row, an index of the maximum; among exact ties, uniformly at random (seeded by ``gen``)."""
    s = scores.detach().cpu().double()
    best = s == s.amax(dim=1, keepdim=True)
    if not best.any(dim=1).all():
        raise ValueError("amo: a candidate's IQA score is NaN, no maximum to choose")
    return torch.multinomial(best.double(), 1, generator=gen).squeeze(1)


def positives(labels: torch.Tensor) -> torch.Tensor:
    mask = labels == POSITIVE
    if not mask.any(dim=1).all():
        raise ValueError("a sample has no effective Positive GT (the dataset must drop such groups for upos/smp)")
    return mask


@torch.no_grad()
def amo_scores(iqa, patches: torch.Tensor, sign: int) -> torch.Tensor:
    """Score all candidate patches (B,K,3,h,w) in one batched forward; returns (B,K), higher = better."""
    b, k = patches.shape[:2]
    net = getattr(iqa, "net", None)
    if net is not None:
        net.eval()  # pyiqa nets (MUSIQ) preprocess only in eval mode
    out = iqa(patches.reshape(b * k, *patches.shape[2:]).clamp(0, 1))
    return sign * out.reshape(b, k).float()


class Sampler:
    """One GT-sampling strategy (the registry ``SAMPLERS`` holds one subclass per name; ``build_sampler``).

    Class facts the trainer and the config read instead of comparing strategy names:
    ``needs``: None, 'image' (stored image-level IQA scores, ``image_scores``) or 'patch' (online IQA scores of
    the co-located GT patches of each step, ``patch_scores``); ``positives_only``: samples among the effective
    Positives (groups without one are dropped); ``may_drop_original``: ``include_original=False`` applies."""

    name: str = ""
    needs: str | None = None
    positives_only: bool = False
    may_drop_original: bool = False

    def __init__(self, tau: float = 1.0, include_original: bool = True):
        if not include_original and not self.may_drop_original:
            raise ValueError(f"sampling.include_original=false: only for "
                             f"{' and '.join(n for n, c in SAMPLERS.items() if c.may_drop_original)} (not {self.name})")
        self.tau, self.include_original = tau, include_original

    def candidates(self, labels: torch.Tensor) -> torch.Tensor | None:
        """(B,K) bool mask of the GTs this strategy may pick (None: all of them)."""
        if self.positives_only:
            return positives(labels)
        if not self.include_original:
            mask = torch.ones_like(labels, dtype=torch.bool)
            mask[:, 0] = False
            return mask
        return None

    def choose(self, labels: torch.Tensor, gen: torch.Generator, *, image_scores: torch.Tensor | None = None,
               patch_scores: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


SAMPLERS: dict[str, type[Sampler]] = {}


def register(cls: type[Sampler]) -> type[Sampler]:
    SAMPLERS[cls.name] = cls
    return cls


@register
class Original(Sampler):
    name = "original"

    def choose(self, labels, gen, *, image_scores=None, patch_scores=None):
        return torch.zeros(labels.shape[0], dtype=torch.long)


@register
class UniformAll(Sampler):
    name = "uniform_all"

    def choose(self, labels, gen, *, image_scores=None, patch_scores=None):
        return torch.randint(labels.shape[1], (labels.shape[0],), generator=gen)


@register
class UPos(Sampler):
    name, positives_only = "upos", True

    def choose(self, labels, gen, *, image_scores=None, patch_scores=None):
        probs = self.candidates(labels).double()
        return torch.multinomial(probs / probs.sum(1, keepdim=True), 1, generator=gen).squeeze(1)


class _Softmax(Sampler):
    needs = "image"

    def choose(self, labels, gen, *, image_scores=None, patch_scores=None):
        if image_scores is None:
            raise ValueError(f"{self.name} needs image-level IQA scores")
        probs = softmax_probs(image_scores.cpu(), self.tau, self.candidates(labels))
        return torch.multinomial(probs, 1, generator=gen).squeeze(1)


@register
class SMA(_Softmax):
    name, may_drop_original = "sma", True


@register
class SMP(_Softmax):
    name, positives_only = "smp", True


@register
class AMO(Sampler):
    name, needs, may_drop_original = "amo", "patch", True

    def choose(self, labels, gen, *, image_scores=None, patch_scores=None):
        if patch_scores is None:
            raise ValueError("amo needs online patch scores")
        if not self.include_original:
            patch_scores = patch_scores.clone().float()
            patch_scores[:, 0] = float("-inf")
        return argmax_random_ties(patch_scores, gen)


def uses_metric(strategy) -> bool:
    """Whether the strategy named ``strategy`` (from a raw config tree: any value) scores GTs with an IQA metric."""
    return strategy in SAMPLERS and SAMPLERS[strategy].needs is not None


def build_sampler(strategy: str, tau: float = 1.0, include_original: bool = True) -> Sampler:
    """The sampler registered under ``strategy`` (one-line error listing the registered ones)."""
    if strategy not in SAMPLERS:
        raise ValueError(f"sampling strategy {strategy!r}: expected one of {', '.join(SAMPLERS)}")
    return SAMPLERS[strategy](tau, include_original)


def choose(strategy: str, labels: torch.Tensor, gen: torch.Generator, *, image_scores: torch.Tensor | None = None,
           tau: float = 1.0, patch_scores: torch.Tensor | None = None, include_original: bool = True) -> torch.Tensor:
    """Index (B,) of the GT to train on, for a batch with ``labels`` (B,K) coded as HGGT: ``build_sampler``'s
    choice. ``include_original`` False (sampling.include_original) removes the original (index 0) from the
    candidates of sma and amo."""
    return build_sampler(strategy, tau, include_original).choose(labels, gen, image_scores=image_scores,
                                                                 patch_scores=patch_scores)
