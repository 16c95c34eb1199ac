"""FT stage (sr_training/ft): LoRA-only training, merge, the reward's sign and gradient, refusals, resume, guard."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.errors import StudyError
from sr_training.archs import build_generator
from sr_training.config import ArchConfig, load_config
from sr_training.data.multigt import collate

CONFIGS = Path(__file__).resolve().parents[1] / "sr_training" / "configs"
FAST = ("data.queue_size=0", "loss.perceptual=0", "data.batch_size=1", "sampling.strategy=original",
        "ft.guard.enabled=false")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """The synthetic HGGT set plus a 1-image held-out val folder (fast guard checks)."""
    from sr_training.data.synthetic import build_synthetic_hggt

    root = build_synthetic_hggt(tmp_path_factory.mktemp("ftsynth") / "hggt", groups_per_photo=1)
    small = root / "val1"
    for sub in ("hr", "lr_blind_x4"):
        (small / sub).mkdir(parents=True)
        shutil.copy(min((root / "val" / sub).glob("*.png")), small / sub)
    return root


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """Tiny base generators saved as plain state dicts (spandrel-loadable), fixed seeds."""
    out = tmp_path_factory.mktemp("ftbase")
    paths = {}
    for seed, arch in enumerate(("swinir", "rrdb")):
        torch.manual_seed(seed)
        net = build_generator(ArchConfig(type=arch, size="tiny", drop_path_rate=0.0))
        paths[arch] = out / f"{arch}.pth"
        torch.save(net.state_dict(), paths[arch])
    return paths


def _cfg(synth, base, *overrides):
    os.environ["SYNTH_HGGT_ROOT"] = str(synth)
    os.environ["FT_INIT"] = str(base)
    return load_config(CONFIGS / "smoke_ft_swinir.yaml", list(overrides))


def _trainer(synth, bases, arch, tmp_path, *overrides):
    from sr_training.ft.trainer import FTTrainer

    cfg = _cfg(synth, bases[arch], f"arch.type={arch}", *FAST, *overrides)
    return FTTrainer(cfg, tmp_path, "cpu")


def _is_lora(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


@pytest.mark.parametrize("arch", ["swinir", "rrdb"])
def test_only_lora_trains_base_stays_bit_identical_and_adapter_starts_as_noop(arch, synth, bases, tmp_path,
                                                                                niqe_plumbing_params):
    from sr_training.ft.lora import DEFAULT_TARGETS

    tr = _trainer(synth, bases, arch, tmp_path, "optim.lr_g=0.001")
    # the adapter is a no-op at step 0 (peft B = 0): same output as the base loaded by spandrel
    from spandrel import ModelLoader

    plain = ModelLoader().load_from_file(bases[arch]).model.eval()
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(tr.net_g.eval()(x), plain(x))
    params = dict(tr.net_g.named_parameters())
    lora = {n for n in params if _is_lora(n)}
    targets = {n.split(".lora_")[0].replace("base_model.model.", "") for n in lora}
    assert targets and all(re.fullmatch(DEFAULT_TARGETS[arch], t) for t in targets)
    assert {id(p) for g in tr.opt_g.param_groups for p in g["params"]} == {id(params[n]) for n in lora}
    before = {n: p.detach().clone() for n, p in params.items()}
    batch = collate([tr.dataset[(0, 0)]])
    out = [tr.step(batch, it) for it in range(2)]
    assert out[0]["q"] == pytest.approx(out[0]["Q_niqe"] / 100)  # -lambda_q * (-niqe/100), lambda_q = 1
    with_grad = {n for n, p in params.items() if p.grad is not None}
    assert with_grad == lora
    changed = {n for n, p in params.items() if not torch.equal(p.detach(), before[n])}
    assert changed == lora  # every adapter tensor moved (A from the 2nd step on), nothing else did
    assert all(p.grad is None and not p.requires_grad for n, p in params.items() if n not in lora)


def test_merged_model_equals_the_adapted_model(synth, bases, tmp_path, niqe_plumbing_params):
    from spandrel import ModelLoader

    from bench.cli import main
    from sr_training.ft.lora import adapter_hash, adapter_state

    tr = _trainer(synth, bases, "swinir", tmp_path / "run", "optim.lr_g=0.01")
    batch = collate([tr.dataset[(1, 0)]])
    for it in range(2):
        tr.step(batch, it)
    ckpt = tr.save(2)
    state = torch.load(ckpt, weights_only=True)
    assert "net_g" not in state and "ema" not in state
    assert state["adapter"] and all(".lora_A." in k or ".lora_B." in k for k in state["adapter"])
    assert main(["merge", "--checkpoint", str(ckpt), "-o", str(tmp_path / "merged.pth")]) == 0
    merged = ModelLoader().load_from_file(tmp_path / "merged.pth").model.eval()
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        adapted, plain_base = tr.net_g.eval()(x), ModelLoader().load_from_file(bases["swinir"]).model.eval()(x)
        got = merged(x)
    # the adapter changed the output; merging reproduces it up to float reassociation (tolerance 1e-5)
    assert (adapted - plain_base).abs().max() > 1e-4
    assert (got - adapted).abs().max() < 1e-5
    record = json.loads((tmp_path / "merged.pth.json").read_text())
    assert record["adapter_sha256"] == adapter_hash(adapter_state(tr.net_g)) and record["iteration"] == 2
    # a different base file is refused (sha256 recorded at training time)
    with pytest.raises(StudyError, match="not the file the adapter was trained on"):
        from sr_training.ft.merge import merge

        merge(ckpt, tmp_path / "other.pth", base=bases["rrdb"])


def test_q_gradient_reaches_sr_and_one_step_raises_niqe_reward(synth, bases, tmp_path, niqe_params):
    from bench.metrics.factory import create
    from bench.metrics.table import get
    from sr_training.trainer import _load_rgb

    # NIQE rounds its Y channel (pyiqa diff_round, straight-through gradient), so it is piecewise constant: steps
    # far below one grey level only flip roundings (+-0.2 NIQE); lr 0.01 moves pixels by ~1e-3 (a quarter level)
    tr = _trainer(synth, bases, "swinir", tmp_path, "loss.l1=0", "optim.lr_g=0.01")
    niqe = create(get("niqe"), "cpu")  # plain scorer (as_loss=False), independent of the reward's instance
    lr = _load_rgb(min((synth / "val" / "lr_blind_x4").glob("*.png")))  # 32x32 -> 128x128 SR
    tr.net_g.train()
    sr = tr.g(lr)
    sr.retain_grad()
    losses = tr.generator_losses(sr, torch.zeros_like(sr), {})
    from sr_training.ft.reward import ste_clamp_quantise

    # Q scores what evaluate scores (ft.reward.input = clamped_ste): the SR clamped to [0, 1] and 8-bit quantised
    before = float(niqe(ste_clamp_quantise(sr.detach())))
    # NIQE is lower-is-better: Q_norm = -NIQE/100, the loss term is -lambda_q*Q_norm = +NIQE/100
    assert float(losses["q"].detach()) == pytest.approx(before / 100, rel=1e-5)
    tr.opt_g.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    assert sr.grad is not None and torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0
    tr.opt_g.step()
    with torch.no_grad():
        after = float(niqe(ste_clamp_quantise(tr.g(lr))))
    assert after < before - 0.5, (before, after)  # Q (= -NIQE) went up, by more than rounding noise


@pytest.mark.parametrize("metric, why", [("piqe", r"'piqe' is not differentiable \(torch.round"),
                                         ("qalign", r"'qalign' is not differentiable \(converts to PIL"),
                                         ("psnr", r"'psnr' is a full-reference metric")])
def test_non_differentiable_or_fr_targets_are_refused(metric, why, synth, bases, tmp_path):
    from sr_training.ft.trainer import FTTrainer

    cfg = _cfg(synth, bases["swinir"], *FAST, f"ft.reward.metric={metric}")
    with pytest.raises(StudyError, match=f"ft.reward \\(ft.reward.metric\\): {why}.*cannot be the FT target"):
        FTTrainer(cfg, tmp_path, "cpu")
    cfg = _cfg(synth, bases["swinir"], *FAST, "ft.reward.metric=null",
               f"ft.reward.terms=[{{metric: niqe, weight: 1}}, {{metric: {metric}, weight: 0.5}}]")
    with pytest.raises(StudyError, match=why):
        FTTrainer(cfg, tmp_path, "cpu")


def test_base_from_a_training_run_uses_ema_and_refuses_other_archs_and_pickles(tmp_path, synth, capsys):
    from sr_training.config import TrainConfig
    from sr_training.ft.lora import load_base

    os.environ["SYNTH_HGGT_ROOT"] = str(synth)
    base_cfg = load_config(CONFIGS / "smoke_swinir_amo.yaml")
    torch.manual_seed(3)
    net_g, ema = (build_generator(base_cfg.arch) for _ in range(2))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"iteration": 7, "net_g": net_g.state_dict(), "ema": ema.state_dict(),
                "config": base_cfg.model_dump_json()}, run / "checkpoints" / "iter_00000007.pt")
    target = build_generator(base_cfg.arch)
    record = load_base(target, base_cfg.arch, run)  # a run folder -> newest checkpoint, EMA by default
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), ema.state_dict().values()))
    assert record["weights"] == "ema" and record["base_iteration"] == 7
    load_base(target, base_cfg.arch, run, "net_g")
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), net_g.state_dict().values()))
    rrdb = TrainConfig.model_validate(json.loads(base_cfg.model_dump_json()) | {"arch": {"type": "rrdb", "size": "tiny"}})
    with pytest.raises(StudyError, match="trained with arch .*'swinir'.* the FT config says .*'rrdb'"):
        load_base(build_generator(rrdb.arch), rrdb.arch, run)

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"iteration": 1, "ema": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(StudyError, match="evil.pt: refused, it holds pickled objects"):
        load_base(build_generator(base_cfg.arch), base_cfg.arch, tmp_path / "evil.pt")
    assert "code ran" not in capsys.readouterr().out


def test_ft_with_a_gan_loss_starts_from_the_base_runs_discriminator(tmp_path, synth, bases, niqe_plumbing_params):
    """ft.load_discriminator (default): D comes from the base training checkpoint's net_d; a base
    without one is refused in one line (a plain generator file has no D)."""
    from sr_training.ft.trainer import FTTrainer
    from sr_training.losses import UNetDiscriminatorSN

    os.environ["SYNTH_HGGT_ROOT"] = str(synth)
    base_cfg = load_config(CONFIGS / "smoke_swinir_amo.yaml")
    torch.manual_seed(5)
    net_g, net_d = build_generator(base_cfg.arch), UNetDiscriminatorSN()
    ckpt = tmp_path / "base.pt"
    torch.save({"iteration": 3, "net_g": net_g.state_dict(), "ema": net_g.state_dict(), "net_d": net_d.state_dict(),
                "config": base_cfg.model_dump_json()}, ckpt)
    tr = FTTrainer(_cfg(synth, ckpt, *FAST, "loss.gan=0.1"), tmp_path / "ft", "cpu")
    assert all(torch.equal(a, b) for a, b in zip(tr.net_d.state_dict().values(), net_d.state_dict().values()))
    with pytest.raises(StudyError, match=r"has no discriminator \(net_d\) for loss.gan > 0"):
        FTTrainer(_cfg(synth, bases["swinir"], *FAST, "loss.gan=0.1"), tmp_path / "ft2", "cpu")


def test_ft_resume_is_bit_identical_with_the_guard_state(synth, bases, tmp_path, niqe_plumbing_params):
    from bench.cli import main
    from sr_training.ft.trainer import FTTrainer

    common = ("schedule.checkpoint_every=2", "schedule.log_every=1", "schedule.val_every=2",
              "ft.guard.enabled=true", "ft.guard.metrics=[piqe]", "ft.guard.fr=[]", f"val.dir={synth / 'val1'}",
              "val.metrics=[psnr]", "val.best_metric=psnr", "optim.lr_g=0.002")

    def cfg(total):
        return _cfg(synth, bases["swinir"], *FAST, *common, f"schedule.total_iters={total}")

    straight = FTTrainer(cfg(4), tmp_path / "a", "cpu")
    straight.fit()
    # the first half through the CLI: a config with an ft: section routes `train` to FTTrainer
    argv = ["train", "--config", str(CONFIGS / "smoke_ft_swinir.yaml"), "--out", str(tmp_path / "b"),
            "--device", "cpu", "arch.type=swinir", *FAST, *common, "schedule.total_iters=2"]
    assert main(argv) == 0
    assert "adapter" in torch.load(tmp_path / "b" / "checkpoints" / "iter_00000002.pt", weights_only=True)
    resumed = FTTrainer(cfg(4), tmp_path / "b", "cpu")
    resumed.fit(auto_resume=True)
    assert resumed.start_iter == 2
    a, b = straight.net_g.state_dict(), resumed.net_g.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    cols = ["l1", "q", "Q_niqe"]
    log_a = pd.read_csv(tmp_path / "a" / "train_log.csv").set_index("iter")
    log_b = pd.read_csv(tmp_path / "b" / "train_log.csv").set_index("iter")
    pd.testing.assert_frame_equal(log_a.loc[[1, 2, 3, 4], cols], log_b.loc[[1, 2, 3, 4], cols])
    g_a, g_b = (pd.read_csv(tmp_path / r / "guard_log.csv") for r in ("a", "b"))
    assert list(g_a["iter"]) == [0, 2, 4]
    pd.testing.assert_frame_equal(g_a, g_b)


def test_guard_rule_flags_q_up_while_a_watched_metric_worsens():
    from bench.metrics.table import get
    from sr_training.ft.config import GuardConfig
    from sr_training.ft.guard import GuardRule

    specs = {"piqe": get("piqe"), "stlpips": get("stlpips")}  # both lower-is-better, ranges 100 and 1
    rule = GuardRule(GuardConfig(margin=0.02, patience=2), specs)
    assert not rule.update(0, -0.40, {"piqe": 30.0, "stlpips": 0.20}).flagged  # the reference
    d = rule.update(1, -0.39, {"piqe": 31.0, "stlpips": 0.20})  # piqe worse by 0.01 of its range <= margin
    assert not d.flagged and d.is_best
    d = rule.update(2, -0.38, {"piqe": 33.0, "stlpips": 0.20})  # 0.03 > 0.02 while Q rose
    assert d.flagged and d.streak == 1 and not d.tripped and "piqe 30.0000->33.0000" in d.reasons[0]
    d = rule.update(3, -0.41, {"piqe": 40.0, "stlpips": 0.30})  # Q fell: not reward hacking, streak resets
    assert not d.flagged and d.streak == 0 and not d.is_best
    rule.update(4, -0.30, {"piqe": 29.0, "stlpips": 0.25})  # stlpips 0.05 worse
    d = rule.update(5, -0.20, {"piqe": 28.0, "stlpips": 0.26})
    assert d.flagged and d.tripped and "stlpips" in d.reasons[0] and rule.best_iter == 1
    copy = GuardRule(GuardConfig(margin=0.02, patience=2), specs)
    copy.load_state(json.loads(json.dumps(rule.state())))
    assert copy.update(6, -0.1, {"piqe": 50.0, "stlpips": 0.2}).tripped  # streak survived the round trip
    prev = GuardRule(GuardConfig(margin=0.02, patience=1, reference="previous"), specs)
    prev.update(0, -0.4, {"piqe": 30.0, "stlpips": 0.2})
    prev.update(1, -0.3, {"piqe": 32.0, "stlpips": 0.2})  # 0.02 is not more than the margin
    assert not prev.update(2, -0.2, {"piqe": 34.0, "stlpips": 0.2}).flagged  # vs previous: +2 again, not > margin
    assert prev.update(3, -0.1, {"piqe": 37.0, "stlpips": 0.2}).tripped


def test_guard_stops_a_constructed_run_where_q_rises_while_a_watched_metric_falls(synth, bases, tmp_path,
                                                                                  niqe_plumbing_params):
    """Constructed reward hacking: Q = +NIQE/100 (weight -1 on the lower-is-better NIQE), watched: NIQE."""
    from sr_training.ft.trainer import FTTrainer

    cfg = _cfg(synth, bases["swinir"], *FAST, "ft.reward.metric=null", "ft.reward.terms=[{metric: niqe, weight: -1}]",
               "ft.guard.enabled=true", "ft.guard.metrics=[niqe]", "ft.guard.fr=[]", "ft.guard.margin=0",
               "ft.guard.patience=2", f"val.dir={synth / 'val1'}", "val.metrics=[psnr]", "val.best_metric=psnr", "schedule.total_iters=8",
               "schedule.val_every=1", "schedule.checkpoint_every=8", "schedule.log_every=1", "optim.lr_g=0.003")
    tr = FTTrainer(cfg, tmp_path, "cpu")
    result = tr.fit()
    guard = pd.read_csv(tmp_path / "guard_log.csv")
    stop = result["stopped_by_guard"]
    assert stop is not None and stop < 8
    assert list(guard["iter"]) == list(range(stop + 1))
    last = guard.iloc[-1]
    assert last["action"] == "stop" and last["streak"] == 2 and last["q_norm"] > guard.iloc[0]["q_norm"]
    assert last["niqe"] > guard.iloc[0]["niqe"]
    assert any("guard: STOPPED the run at iteration" in n for n in tr.notes)
    assert json.loads((tmp_path / "provenance.json").read_text())["stopped_by_guard"]["iteration"] == stop
    assert pd.read_csv(tmp_path / "train_log.csv")["iter"].max() == stop  # no step after the stop


def test_shipped_ft_configs_parse_and_differ_as_named(monkeypatch):
    for var in ("HGGT_ROOT", "SET5_ROOT", "SWINIR_AMO_RUN", "SWINIR_UPOS_RUN", "RRDB_AMO_RUN", "RRDB_UPOS_RUN"):
        monkeypatch.setenv(var, f"/data/{var}")
    for arch in ("swinir", "rrdb"):
        ft, hp, ig, paq, upos = (load_config(CONFIGS / f"{n}.yaml") for n in
                                 (f"ft_{arch}_amo", f"ft_hp_{arch}_amo", f"ft_ig_{arch}_amo",
                                  f"ft_paq2piq_{arch}_amo", f"ft_{arch}_upos"))
        assert ft.loss.gan == 0 and ig.loss.gan > 0 and hp.loss.perceptual > ft.loss.perceptual
        assert ft.ft.reward.metric == "musiq" and paq.ft.reward.metric == "paq2piq"
        assert ft.ft.init == f"/data/{arch.upper()}_AMO_RUN" and upos.ft.init == f"/data/{arch.upper()}_UPOS_RUN"
        assert upos.sampling.strategy == "upos" and ft.sampling.strategy == "amo"
        assert ft.ft.lora.rank == 8 and ft.arch.type == arch and ft.arch.pretrained is None


def test_merge_refuses_what_it_cannot_merge(tmp_path, capsys):
    from bench.cli import main

    run = tmp_path / "base_run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"iteration": 3, "ema": {}, "net_g": {}, "config": "{}"}, run / "checkpoints" / "iter_00000003.pt")
    assert main(["merge", "--run", str(run), "-o", str(tmp_path / "m.pth")]) == 2
    assert "not an FT checkpoint (no 'adapter')" in capsys.readouterr().err
    assert main(["merge", "--run", str(tmp_path / "nothing"), "-o", str(tmp_path / "m.pth")]) == 2
    assert "no checkpoints/iter_*.pt" in capsys.readouterr().err
    assert main(["merge", "--run", str(run), "--guard-best", "-o", str(tmp_path / "m.pth")]) == 2
    assert "guard_best.pt does not exist" in capsys.readouterr().err
    assert not (tmp_path / "m.pth").exists()


def test_full_parameter_ft_trains_every_base_weight_and_merges_to_them(synth, bases, tmp_path, niqe_plumbing_params):
    """ft.params=full: no LoRA, every base parameter gets a gradient and moves; the checkpoint holds the full
    weights, merge writes exactly them out and evaluate-style loading (spandrel) reproduces the trained net.
    The default (lora) keeps the base frozen: the contrast is the ablation's point."""
    from spandrel import ModelLoader

    from sr_training.ft.merge import merge

    tr = _trainer(synth, bases, "swinir", tmp_path / "full", "optim.lr_g=0.001", "ft.params=full")
    params = dict(tr.net_g.named_parameters())
    assert not any(_is_lora(n) for n in params)
    assert {id(p) for g in tr.opt_g.param_groups for p in g["params"]} == {id(p) for p in params.values()}
    before = {n: p.detach().clone() for n, p in params.items()}
    batch = collate([tr.dataset[(0, 0)]])
    for it in range(2):
        tr.step(batch, it)
    changed = {n for n, p in params.items() if not torch.equal(p.detach(), before[n])}
    assert len(changed) > 0.9 * len(params)  # (a weight whose gradient is exactly 0 may stay)
    assert any("residual_group" in n for n in changed) and any(n.startswith("conv_first") for n in changed)
    ckpt = tr.save(2)
    state = torch.load(ckpt, weights_only=True)
    assert state["ft"]["params"] == "full" and set(state["adapter"]) == set(tr.net_g.state_dict())
    record = merge(ckpt, tmp_path / "full.pth")
    assert record["params"] == "full" and "no adapter" in record["merge"]
    merged = ModelLoader().load_from_file(tmp_path / "full.pth").model.eval()
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        got, trained = merged(x), tr.net_g.eval()(x)
        base = ModelLoader().load_from_file(bases["swinir"]).model.eval()(x)
    assert torch.equal(got, trained) and (trained - base).abs().max() > 1e-4
    # resume restores the full weights
    tr2 = _trainer(synth, bases, "swinir", tmp_path / "full", "optim.lr_g=0.001", "ft.params=full")
    assert tr2.resume() == 2
    assert all(torch.equal(v, tr.net_g.state_dict()[k]) for k, v in tr2.net_g.state_dict().items())
    # LoRA mode (the default) on the same base: the base weights stay bit-identical after the same steps
    lora = _trainer(synth, bases, "swinir", tmp_path / "lora", "optim.lr_g=0.001")
    assert lora.cfg.ft.params == "lora"
    base_before = {n: p.detach().clone() for n, p in lora.net_g.named_parameters() if not _is_lora(n)}
    for it in range(2):
        lora.step(batch, it)
    assert all(torch.equal(p.detach(), base_before[n]) for n, p in lora.net_g.named_parameters() if not _is_lora(n))
