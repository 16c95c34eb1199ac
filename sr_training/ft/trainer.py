"""FTTrainer: the paper's second stage (method.md 4), a subclass of the base Trainer.

    L~(phi | SR, I) = lambda_l1 * ||I - SR||_1 + lambda_P * d_P(SR, I) (+ lambda_A * D(SR)) - lambda_Q * Q_norm(SR)

* theta (the base generator) is frozen; only the peft LoRA weights phi train (sr_training.ft.lora).
  ``ft.params: full`` is the ablation without LoRA: every base parameter trains (same loss and schedule).
  The base comes from ``ft.init`` (EMA weights of a training run by default, method.md 9).
* Q_norm is the range-normalised reward of sr_training.ft.reward, computed in fp32 outside autocast
  with the IQA nets frozen and permanently in eval mode.
* GAN off by default in the FT configs (the paper's FT); ``loss.gan > 0`` is FT_IG, with D
  started from the base checkpoint's ``net_d`` (``ft.load_discriminator``).
* EMA is off for the LoRA weights (method.md 9 "EMA in FT"): ``self.ema`` is an empty module,
  so the base step's EMA update has nothing to average; validation uses the adapted generator.
* Checkpoints hold the adapter only (``adapter``, peft naming) plus the optimiser, scheduler,
  D, data state, the guard state and ``ft`` (base file + sha256, adapter sha256). ``iqa-study
  merge`` turns one into a plain model (sr_training.ft.merge).
* The reward-hacking guard (sr_training.ft.guard) runs on every validation (and once before the
  first step); its metrics are added to the validation metrics, so val_log.csv holds Q, the
  watched NR metrics and LPIPS-ST/PSNR side by side; guard_log.csv holds its decisions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bench.atomic import atomic_copy, atomic_write_text
from bench.errors import StudyError
from sr_training.csvlog import append_row, truncate_rows
from sr_training.ft.guard import GuardRule, watched_metrics
from sr_training.ft.lora import (
    DEFAULT_TARGETS,
    adapter_hash,
    adapter_state,
    attach_lora,
    load_base,
    set_adapter_state,
)
from sr_training.ft.reward import Reward, resolve_terms
from sr_training.trainer import Trainer


class FTTrainer(Trainer):
    ft_base: dict | None = None  # the base the adapter trains on (build_generator loads it)

    def check_config(self, cfg) -> None:
        if cfg.ft is None:
            raise StudyError("FT: the config has no 'ft:' section (use the base trainer)")
        if cfg.arch.pretrained:
            raise StudyError("FT: arch.pretrained and ft.init are both set; the FT base is ft.init (drop arch.pretrained)")
        self._terms = resolve_terms(cfg.ft.reward, cfg.sampling.iqa.selection if cfg.sampling else None)  # a bad Q
        for spec, _, _ in self._terms:  # Q scores SR outputs of GT-patch size
            if (err := spec.size_error(cfg.data.gt_size, cfg.data.gt_size)) is not None:
                raise StudyError(f"data.gt_size {cfg.data.gt_size}: the FT reward scores SR patches of this size, and "
                                 f"the {err} (raise data.gt_size or choose another ft.reward metric)")

    def __init__(self, cfg, out: Path, device: str | None = None):
        super().__init__(cfg, out, device)
        self.ema = torch.nn.Module()  # EMA off in FT (see module docstring)
        self.reward = Reward(self._terms, self.device, cfg.ft.reward.random_init)
        desc = " + ".join(f"{w:g}*{s.name}" for s, w, _ in self._terms)
        self.note(f"FT TARGET Q = {desc} (from {self._terms[0][2]}); loss term -{cfg.ft.reward.lambda_q:g} * Q_norm, "
                  f"Q_norm = sign*score/(score_max-score_min)"
                  + (" [RANDOM-INIT Q: plumbing only]" if cfg.ft.reward.random_init else ""))
        n_lora = sum(p.numel() for p in self.trainable_parameters())
        n_all = sum(p.numel() for p in self.net_g.parameters())
        what = (f"LoRA rank {cfg.ft.lora.rank}" if cfg.ft.params == "lora"
                else "FULL-PARAMETER FT (no LoRA: every base parameter trains)")
        self.note(f"FT base {self.ft_base['init']} ({self.ft_base['kind']}, {self.ft_base['weights']}); {what}, "
                  f"{n_lora} trainable of {n_all} parameters")
        self._q_raw: dict[str, float] = {}
        self._stop: tuple[int, str] | None = None
        g = cfg.ft.guard
        self.guard = None
        self.guard_names: list[str] = []
        if g.enabled:
            if not cfg.val.dir:
                raise StudyError("ft.guard: needs val.dir (a held-out folder with hr/ and the LR subfolder); "
                                 "or set ft.guard.enabled: false")
            selection = cfg.ft.reward.selection or (cfg.sampling.iqa.selection if cfg.sampling else None)
            nr_specs, notes = watched_metrics(g, selection, self.reward.names)
            for n in notes:
                self.note(f"guard: {n}")
            from bench.metrics.table import get

            for name in g.fr:
                if get(name).mode != "FR":
                    raise StudyError(f"ft.guard.fr: '{name}' is not a full-reference metric (list it under "
                                     f"ft.guard.metrics)")
            self.guard_names = [s.name for s in nr_specs] + list(g.fr)
            self.guard = GuardRule(g, {n: get(n) for n in self.guard_names})
            self.note(f"guard: watching Q against {', '.join(self.guard_names) or '(nothing)'}; margin {g.margin}, "
                      f"patience {g.patience}, reference {g.reference}, action {g.action}")

    # --- model --------------------------------------------------------------------------------
    def base_arch(self):
        """The arch of the frozen base: drop-path off unless ft.base_drop_path (see FTConfig)."""
        arch = self.cfg.arch
        if arch.type == "swinir" and not self.cfg.ft.base_drop_path:
            arch = arch.model_copy(update={"drop_path_rate": 0.0})
        return arch

    def build_generator(self) -> torch.nn.Module:
        from sr_training.archs import build_generator

        ft = self.cfg.ft
        net = build_generator(self.base_arch())
        self.ft_base = load_base(net, self.cfg.arch, ft.init, ft.weights)
        if ft.params == "full":
            return net.requires_grad_(True)
        return attach_lora(net, self.cfg.arch.type, ft.lora)

    def trained_state(self) -> dict[str, torch.Tensor]:
        """What an FT checkpoint holds under 'adapter': the LoRA weights, or every weight in full-parameter FT."""
        if self.cfg.ft.params == "full":
            return {k: v.detach().cpu().clone() for k, v in self.net_g.state_dict().items()}
        return adapter_state(self.net_g)

    def build_discriminator(self) -> torch.nn.Module | None:
        net_d = super().build_discriminator()
        if net_d is None or not self.cfg.ft.load_discriminator:
            return net_d
        from sr_training.checkpoint import TRAINING, checkpoint_kind, read_weights
        from sr_training.ft.lora import resolve_init

        path = resolve_init(self.cfg.ft.init)
        state = read_weights(path, "ft.init")  # weights_only / safetensors: a pickle payload never runs
        if checkpoint_kind(state) != TRAINING or "net_d" not in state:
            raise StudyError(f"ft.init {path}: has no discriminator (net_d) for loss.gan > 0; train D from scratch "
                             f"with ft.load_discriminator: false")
        net_d.load_state_dict(state["net_d"])
        return net_d

    def generator_losses(self, sr, target, batch):
        losses = super().generator_losses(sr, target, batch)
        q, self._q_raw = self.reward(sr, self.cfg.ft.reward.input)
        losses["q"] = -self.cfg.ft.reward.lambda_q * q
        return losses

    def step(self, batch: dict, it: int) -> dict[str, float]:
        out = super().step(batch, it)
        return out | {f"Q_{k}": v for k, v in self._q_raw.items()}

    # --- the loop's hooks (sr_training.trainer.Trainer) -----------------------------------------------
    def on_train_start(self) -> None:
        if self.start_iter == 0 and self.guard is not None and not self.guard.history and self.rank == 0:
            self._guard_check(0, self.validate(0))  # the reference: the base model (adapter B = 0)

    def should_stop(self, it: int) -> tuple[int, str] | None:
        stop = self._stop is not None
        if self.world > 1:  # rank 0 runs the guard: every rank stops together
            import torch.distributed as dist

            flag = torch.tensor([int(stop)], device=self.device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        return (self._stop or (it, "stopped by the guard on rank 0")) if stop else None

    def on_validation(self, it: int, scores: dict) -> None:
        if scores and self.guard is not None:
            if self.guard.history and self.guard.history[-1]["iter"] == it:
                self._guard_done(it)  # a redone validation (resume): the checkpoint already holds this check
            else:
                self._guard_check(it, scores)

    # --- validation and guard ---------------------------------------------------------------------
    def validation_network(self) -> torch.nn.Module:
        return self.net_g.eval()  # the next step puts it back in train mode

    def validation_metrics(self):
        if self._val_metrics is not None:
            return self._val_metrics
        from bench.metrics.factory import create
        from bench.metrics.table import get

        out = list(super().validation_metrics())
        have = {name for name, *_ in out}
        extra = [s.name for s, _, _ in self._terms] + self.guard_names
        for name in dict.fromkeys(extra):
            if name in have:
                continue
            spec = get(name)  # FR metrics under the same FR protocol as val.metrics
            out.append(self.fr_val_metric(name) if spec.mode == "FR" else (name, spec, create(spec, str(self.device)), 0))
        self._val_metrics = out
        return out

    def _guard_done(self, it: int) -> None:
        """The guard checked ``it`` before the run was killed (its row is in guard_log.csv, its state in the
        checkpoint): do not count it twice, but stop again if that check tripped a stopping guard."""
        g = self.cfg.ft.guard
        if g.action == "stop" and self.guard.streak >= g.patience:
            self._stop = (it, f"guard: STOPPED the run at iteration {it} (the check before the interruption)")

    def _guard_check(self, it: int, scores: dict) -> None:
        means = {m: float(np.mean([s[m] for s in scores.values()])) for m in next(iter(scores.values()))}
        q_norm = sum(w * Reward.normalise(s, means[s.name]) for s, w, _ in self._terms)
        watched = {n: means[n] for n in self.guard_names}
        d = self.guard.update(it, q_norm, watched)
        g = self.cfg.ft.guard
        action = ""
        if d.tripped:
            action = "stop" if g.action == "stop" else "flagged (keep_best: training continues)"
        append_row(self.out / "guard_log.csv",
                   {"iter": it, "q_norm": q_norm, **{f"Q_{s.name}": means[s.name] for s, _, _ in self._terms},
                    **watched, "flagged": int(d.flagged), "streak": d.streak, "best": int(d.is_best),
                    "action": action, "reason": "; ".join(d.reasons)})
        ckpt = self.out / "checkpoints" / f"iter_{it:08d}.pt"
        if it > 0:
            self.save(it)  # again, now holding this check in its guard state (bit-identical resume)
        if d.is_best and ckpt.is_file():
            dst = self.out / "checkpoints" / "guard_best.pt"
            atomic_copy(ckpt, dst)
            atomic_write_text(json.dumps({"iteration": it, "q_norm": q_norm, "watched": watched,
                                          "rule": g.model_dump(mode="json")}, indent=2),
                              self.out / "checkpoints" / "guard_best.json")
        if d.flagged:
            self.note(f"guard: iteration {it} flagged ({d.streak}/{g.patience}): {'; '.join(d.reasons)}")
        if d.tripped:
            best = (f"checkpoints/guard_best.pt = iteration {self.guard.best_iter}" if self.guard.best_iter is not None
                    else "no unflagged FT checkpoint yet")
            if g.action == "stop":
                msg = (f"guard: STOPPED the run at iteration {it}: Q rose while a watched metric worsened by more "
                       f"than {g.margin} of its range for {d.streak} consecutive checks; {best}")
                self._stop = (it, msg)
            else:
                msg = f"guard: reward hacking suspected at iteration {it} (keep_best: continuing); {best}"
            self.note(msg)

    # --- checkpoints --------------------------------------------------------------------------
    def weights_state(self) -> dict:
        """The adapter (LoRA: only its weights; full: every parameter) and what it was trained on; no EMA."""
        adapter = self.trained_state()
        lora = self.cfg.ft.lora
        return {"adapter": adapter,
                "ft": {"base": dict(self.ft_base), "adapter_sha256": adapter_hash(adapter), "params": self.cfg.ft.params,
                       "lora": {"rank": lora.rank, "alpha": float(lora.alpha or lora.rank),
                                "targets": lora.targets or "", "dropout": lora.dropout},
                       "reward": json.dumps(self.reward.describe())}}

    def checkpoint_state(self, it: int) -> dict:
        s = super().checkpoint_state(it)
        if self.guard is not None:
            s["guard"] = self.guard.state()
        return s

    def load_weights_state(self, s: dict) -> None:
        if "adapter" not in s:
            raise StudyError("FT resume: the checkpoint holds no 'adapter' (not an FT checkpoint)")
        base = s["ft"]["base"]
        if base["init_sha256"] != self.ft_base["init_sha256"]:
            raise StudyError(f"FT resume: the checkpoint was trained on base {base['init']} (sha256 "
                             f"{base['init_sha256'][:12]}), ft.init is now {self.ft_base['init']} "
                             f"(sha256 {self.ft_base['init_sha256'][:12]})")
        if self.cfg.ft.params == "full":
            self.net_g.load_state_dict({k: v.to(self.device) for k, v in s["adapter"].items()}, strict=True)
        else:
            set_adapter_state(self.net_g, {k: v.to(self.device) for k, v in s["adapter"].items()})

    def load_checkpoint_state(self, s: dict) -> None:
        if self.guard is not None and "guard" in s:
            self.guard.load_state(s["guard"])
        super().load_checkpoint_state(s)

    def resume(self, allow_config_change: bool = False) -> int:
        it = super().resume(allow_config_change)
        if self.resumed_from is not None and self.rank == 0:
            # rows after the last check the checkpoint's guard state holds belong to the lost interval
            last = self.guard.history[-1]["iter"] if self.guard is not None and self.guard.history else -1
            truncate_rows(self.out / "guard_log.csv", min(it, last) if self.guard is not None else it)
        return it

    # --- the loop -------------------------------------------------------------------------------
    def ft_record(self) -> dict:
        """What provenance.json records about the FT stage (beside the base trainer's fields)."""
        ft = self.cfg.ft
        return {"base": self.ft_base, "params": ft.params, "lora": ft.lora.model_dump(mode="json") | {
                    "targets_resolved": ft.lora.targets or DEFAULT_TARGETS[self.cfg.arch.type]},
                "reward": self.reward.describe(), "lambda_q": ft.reward.lambda_q,
                "q_norm_rule": "Q_norm = sum_k w_k * sign_k * score_k / (score_max_k - score_min_k)",
                "reward_random_init": ft.reward.random_init, "ema": "off (LoRA weights; method.md 9)",
                "reward_input": ft.reward.input,
                "base_drop_path_rate": self.base_arch().drop_path_rate if self.cfg.arch.type == "swinir" else None,
                "guard": ft.guard.model_dump(mode="json") | {"watched": self.guard_names}}

    def _write_provenance(self, record: dict) -> None:
        super()._write_provenance(record | {"ft": self.ft_record()})

    def fit(self, auto_resume: bool = False, allow_config_change: bool = False) -> dict:
        result = super().fit(auto_resume=auto_resume, allow_config_change=allow_config_change)
        stopped = result["stopped"]  # the guard's stop (should_stop), or a trip at the last check
        result["stopped_by_guard"] = stopped["iteration"] if stopped else (self._stop[0] if self._stop else None)
        result["adapter_sha256"] = adapter_hash(self.trained_state())
        if self.rank == 0 and getattr(self, "provenance", None) is not None:
            if stopped:
                self.provenance["stopped_by_guard"] = stopped
            self.provenance["final_adapter_sha256"] = result["adapter_sha256"]
            self._write_provenance(self.provenance)
        return result
