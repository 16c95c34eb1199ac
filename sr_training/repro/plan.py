"""The runs of the small-scale reproduction (`iqa-study repro`): what each one is, from what it starts, and
the settings every run shares. Nothing here trains; :mod:`sr_training.repro.run` executes a plan.

Every run starts from the shipped tiny PSNR-oriented SwinIR init (sr_training/pretrained/, as HGGT starts
from Blind_PSNR) and uses the demo's measured short-run settings (bench/demo.py: EMA 0.96, lr 2e-4, 16-sample
pair queue, L1 only; FT lr 4e-4, lambda_Q 100 on Q/100, 192-px FT patches). They were fixed before this
experiment ran and are not tuned on its test sets (Set14, Set5).

Variants (``VARIANTS``), one run per seed each:

  sampling  original (HR only), upos, sma, smp, amo, amo_pos (AMO on UPos's Positive subset)
  ft        amo_ft (LoRA, L1 - lambda_Q Q), amo_ft_hp (lambda_P x 4), amo_ft_ig (GAN 0.1 kept), upos_ft,
            amo_ft_full (every base parameter trainable, no LoRA)
  lambda    amo_ft_l0, amo_ft_l10, amo_ft_l1000 (with amo_ft = lambda 100: the lambda_Q sweep)
  reward    amo_ft_terms: a two-term reward through ft.reward.terms (needs a second differentiable metric)

A variant that cannot run here (FT_HP without ImageNet VGG19 weights; the second reward without a second
differentiable NR metric) is listed with the reason (:func:`skipped`), never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# shared settings (bench/demo.py holds the measurements behind them)
BASE_ITERS = 150
FT_ITERS = 120
FT_CHECK_EVERY = 20           # finer than the demo's 40: the reward-hacking figure needs the trajectory
QUICK_BASE_ITERS, QUICK_FT_ITERS = 150, 120
EMA, LR, FT_LR, LAMBDA_Q = 0.96, 2e-4, 4e-4, 100.0
LAMBDA_SWEEP = (0.0, 10.0, 100.0, 1000.0)
FT_GT_SIZE, GROUP_SIZE = 192, 256
GROUPS_PER_PHOTO, VAL_PHOTOS = 2, 10
HP_PERCEPTUAL = 4.0           # method.md 9: FT_HP = lambda_P x 3-5 (the FT base weight is 1)
IG_D_FEATURES = 16  # FT_IG's discriminator width (HGGT: 64; see the variant)
IG_GAN = 0.1                  # method.md 9: FT_IG = lambda_A 0.1 with D on
SEEDS = (0, 1, 2)
OFFLINE_METRIC = "niqe"       # the one real differentiable NR metric offline (docs/offline: PIQE's gradient is 0)
EVAL_NR_OFFLINE = ("niqe", "piqe", "entropy")
EVAL_FR = ("psnr", "ssim", "stlpips")


@dataclass(frozen=True)
class Variant:
    name: str
    group: str                      # sampling | ft | lambda | reward
    what: str                       # one line for the tables
    overrides: tuple[str, ...] = ()
    base: str | None = None         # FT: the sampling variant whose model it fine-tunes (same seed)
    needs: str | None = None        # 'perceptual' | 'second_reward': checked by skipped()

    def strategy(self) -> str | None:
        """The sampling strategy its overrides set (None: the base config's)."""
        found = [o.split("=", 1)[1] for o in self.overrides if o.startswith("sampling.strategy=")]
        return found[-1] if found else None

    def needs_image_scores(self) -> bool:
        """Whether its sampler reads stored image-level scores (sr_training.sampling: sma, smp), which
        ``iqa-study repro`` scores into a training store first."""
        from sr_training.sampling import SAMPLERS

        sampler = SAMPLERS.get(self.strategy() or "")
        return sampler is not None and sampler.needs == "image"


VARIANTS: tuple[Variant, ...] = (
    Variant("original", "sampling", "HR original only (no enhanced GT)", ("sampling.strategy=original",)),
    Variant("upos", "sampling", "UPos: uniform over the labelled Positives (HGGT)", ("sampling.strategy=upos",)),
    Variant("sma", "sampling", "SMA: softmax over image-level Q of all GTs", ("sampling.strategy=sma",)),
    Variant("smp", "sampling", "SMP: softmax over image-level Q of the Positives", ("sampling.strategy=smp",)),
    Variant("amo", "sampling", "AMO: per-patch argmax of Q over all GTs (no labels)", ("sampling.strategy=amo",)),
    Variant("amo_pos", "sampling", "AMO on UPos's Positive subset (like-for-like)",
            ("sampling.strategy=amo", "data.require_positive=true")),
    Variant("amo_ft", "ft", "AMO+FT: LoRA, L1 - lambda_Q Q (lambda_Q 100)", base="amo"),
    Variant("amo_ft_hp", "ft", f"AMO+FT_HP: FT with lambda_P {HP_PERCEPTUAL:g} (perceptual)", base="amo",
            overrides=(f"loss.perceptual={HP_PERCEPTUAL}", "loss.perceptual_weights=imagenet"), needs="perceptual"),
    Variant("amo_ft_ig", "ft", f"AMO+FT_IG: FT with the GAN loss kept (lambda_A {IG_GAN:g})", base="amo",
            # the L1-only base has no net_d: a fresh D; 16 features instead of HGGT's 64 (measured on 2 cores: the
            # 64-feature D made an FT_IG step 3.3 s, 4.5x an FT step, 20 of the experiment's 90 minutes)
            overrides=(f"loss.gan={IG_GAN}", "ft.load_discriminator=false", f"loss.d_features={IG_D_FEATURES}")),
    Variant("upos_ft", "ft", "UPos+FT: the same FT from the UPos model", base="upos"),
    Variant("amo_ft_full", "ft", "AMO+FT full: every base parameter trainable (no LoRA)", base="amo",
            overrides=("ft.params=full",)),
    *(Variant(f"amo_ft_l{lam:g}", "lambda", f"AMO+FT, lambda_Q {lam:g}", base="amo",
              overrides=(f"ft.reward.lambda_q={lam}",)) for lam in LAMBDA_SWEEP if lam != LAMBDA_Q),
    Variant("amo_ft_terms", "reward", "AMO+FT, a two-term reward (ft.reward.terms)", base="amo",
            needs="second_reward"),
)
BY_NAME = {v.name: v for v in VARIANTS}


def lambda_of(v: Variant) -> float | None:
    """lambda_Q of an AMO+FT LoRA variant of the sweep (amo_ft is the default one), else None."""
    if v.name == "amo_ft":
        return LAMBDA_Q
    return float(v.name.removeprefix("amo_ft_l")) if v.group == "lambda" else None


@dataclass(frozen=True)
class Run:
    variant: Variant
    seed: int

    @property
    def name(self) -> str:
        return f"{self.variant.name}_s{self.seed}"

    @property
    def base_run(self) -> str | None:
        return f"{self.variant.base}_s{self.seed}" if self.variant.base else None


@dataclass(frozen=True)
class Plan:
    runs: tuple[Run, ...]
    skipped: tuple[tuple[str, str], ...]          # (variant, reason)
    seeds: tuple[int, ...]
    base_iters: int
    ft_iters: int
    metric: str                                    # sampling + reward metric (NIQE offline, or the selection's)
    extra: dict = field(default_factory=dict)


def build_plan(seeds: tuple[int, ...] = SEEDS, only: tuple[str, ...] | None = None, reasons: dict | None = None,
               base_iters: int = BASE_ITERS, ft_iters: int = FT_ITERS, metric: str = OFFLINE_METRIC) -> Plan:
    """The runs in execution order (every base run before the FT runs that start from it).

    ``only``: variant names to keep (their FT bases are added); ``reasons``: {need: why it cannot run here}
    from :func:`skipped` (a variant with such a need is left out, with the reason)."""
    from bench.errors import StudyError

    reasons = reasons or {}
    if only is not None:
        unknown = [n for n in only if n not in BY_NAME]
        if unknown:
            raise StudyError(f"--runs: unknown variant(s) {', '.join(unknown)}; expected some of "
                             f"{', '.join(BY_NAME)}")
        keep = set(only) | {BY_NAME[n].base for n in only if BY_NAME[n].base}
    else:
        keep = set(BY_NAME)
    if not seeds:
        raise StudyError("--seeds: expected at least one seed")
    chosen, skipped = [], []
    for v in VARIANTS:
        if v.name not in keep:
            continue
        if v.needs and v.needs in reasons:
            skipped.append((v.name, reasons[v.needs]))
            continue
        chosen.append(v)
    order = [v for v in chosen if v.base is None] + [v for v in chosen if v.base is not None]
    runs = tuple(Run(v, s) for v in order for s in seeds)
    return Plan(runs, tuple(skipped), tuple(seeds), base_iters, ft_iters, metric)


def skipped(metric: str) -> tuple[dict[str, str], str | None]:
    """({need: reason} for the variants this machine cannot run as the paper means them, the second reward
    metric if one is available)."""
    from bench.env import cache_dirs
    from bench.metrics.table import select
    from bench.metrics.weights import is_available
    from sr_training.losses import VGG19_FILE

    out = {}
    vgg = cache_dirs().torchvision / VGG19_FILE
    if not vgg.is_file():  # checked, never downloaded: a 550 MB fetch is the user's decision
        out["perceptual"] = (f"FT_HP needs the perceptual loss's ImageNet VGG19 weights ({vgg} is missing); a "
                             "random-weight VGG is no perceptual loss")
    second = [s.name for s in select("available") if s.mode == "NR" and s.differentiable and s.name != metric
              and is_available(s)]
    if not second:
        out["second_reward"] = (f"no second differentiable NR metric is available here besides {metric} (entropy: "
                                "histogram, no gradient; PIQE: zero input gradient; the learned ones need weights)")
    return out, (second[0] if second else None)
