"""Which ground truth each sample trains on (method.md 3).

    original     the HR original (index 0)
    uniform_all  uniform over the 5 versions
    upos         uniform over effective Positives (HGGT's UPos baseline)
    sma / smp    softmax_tau over image-level IQA scores of all GTs / of the Positives only
    amo          per-patch argmax of online IQA scores of all 5 co-located crops

Scores are oriented so that higher is better before any softmax/argmax.
"""

from __future__ import annotations

import torch

from sr_training.data.multigt import POSITIVE

STRATEGIES = ("original", "uniform_all", "upos", "sma", "smp", "amo")


def softmax_probs(scores: torch.Tensor, tau: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """p_k = exp(Q_k / tau) / sum_j exp(Q_j / tau) over the allowed (mask) candidates."""
    logits = scores.double() / tau
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1)


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


def choose(strategy: str, labels: torch.Tensor, gen: torch.Generator, *, image_scores: torch.Tensor | None = None,
           tau: float = 1.0, patch_scores: torch.Tensor | None = None) -> torch.Tensor:
    """Index (B,) of the GT to train on, for a batch with ``labels`` (B,K) coded as HGGT."""
    b, k = labels.shape
    if strategy == "original":
        return torch.zeros(b, dtype=torch.long)
    if strategy == "uniform_all":
        return torch.randint(k, (b,), generator=gen)
    if strategy == "upos":
        probs = positives(labels).double()
        return torch.multinomial(probs / probs.sum(1, keepdim=True), 1, generator=gen).squeeze(1)
    if strategy in ("sma", "smp"):
        if image_scores is None:
            raise ValueError(f"{strategy} needs image-level IQA scores")
        mask = positives(labels) if strategy == "smp" else None
        return torch.multinomial(softmax_probs(image_scores.cpu(), tau, mask), 1, generator=gen).squeeze(1)
    if strategy == "amo":
        if patch_scores is None:
            raise ValueError("amo needs online patch scores")
        return patch_scores.argmax(dim=1).cpu()
    raise ValueError(f"sampling strategy {strategy!r}: expected one of {STRATEGIES}")
