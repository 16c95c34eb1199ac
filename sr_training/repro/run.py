"""Execute a repro plan (sr_training.repro.plan) into one folder; resumable.

Layout of ``out`` (nothing here is committed; the report goes to reports/mini_repro/):

  data/train/           SYNTHETIC multi-GT groups cut from the real training photographs (train-data synthetic --photos)
  data/test/{set14,set5}/  hr/ (cropped to a multiple of 4) + lr_blind_x4/ (fixed-seed one-stage degradation)
  runs/<variant>_s<seed>/  one training (or FT) run; ``repro_done.json`` once trained AND evaluated
  store/                the evaluation store (every run, bicubic, the PSNR init, the gold standard's NR scores)
  plan.json, repro.log  the plan with its skipped variants; one line per finished run (time, ETA)

Resume rule: a run with ``repro_done.json`` is skipped; an unfinished one continues from its newest checkpoint
(Trainer.fit(auto_resume=True)); evaluation reuses the SR outputs already stored. Evaluated weights: a base run's
EMA at its last iteration; an FT run's merged LoRA (or full) weights at its LAST iteration, as the paper evaluates
its FT models -- the guard runs with action keep_best, so it only logs (guard_log.csv), it never picks the model.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import ClassVar

from bench.atomic import atomic_write_text
from bench.errors import StudyError
from sr_training.repro import plan as P

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TEST_SETS = ("set14", "set5")


def _write_json(obj, path: Path) -> Path:
    return atomic_write_text(json.dumps(obj, indent=1, default=str) + "\n", path)


def prepare_data(out: Path, photos: Path, tests: dict[str, Path]) -> tuple[Path, dict[str, Path]]:
    """(train root, {test name: folder with hr/ and lr_blind_x4/}); built once, kept on resume."""
    from sr_training.data.synthetic import build_synthetic_hggt
    from sr_training.psnr_init import heldout_from_folder

    train = out / "data" / "train"
    if not (train / "SYNTHETIC.md").is_file():
        build_synthetic_hggt(train, groups_per_photo=P.GROUPS_PER_PHOTO, size=P.GROUP_SIZE, seed=0, photos=photos,
                             val_photos=P.VAL_PHOTOS)
    built = {}
    for name, src in tests.items():
        built[name] = heldout_from_folder(src, out / "data" / "test" / name, seed=1)
    return train, built


def train_image_scores(out: Path, train_root: Path, metric: str) -> tuple[Path, Path]:
    """(store, manifest) of the training groups' image-level ``metric`` scores, which SMA/SMP sample by (HGGT's
    manifest of the training split scored into a store of its own, apart from the evaluation store)."""
    from bench.manifests import schema
    from bench.manifests.hggt import hggt
    from bench.metrics.table import get
    from bench.scoring.engine import score_manifest
    from bench.store import Store

    manifest, store_dir = out / "data" / "train_manifest.parquet", out / "train_scores"
    if not manifest.is_file():
        schema.write(hggt(train_root, "train"), manifest)
    if not (store_dir / "SCORED").is_file():
        score_manifest(schema.read(manifest), [get(metric)], Store(store_dir), workers=0, progress=False)
        atomic_write_text(f"{metric}\n", store_dir / "SCORED")
    return store_dir, manifest


def _last_checkpoint(run_dir: Path) -> Path:
    ckpts = sorted((run_dir / "checkpoints").glob("iter_*.pt"))
    if not ckpts:
        raise StudyError(f"{run_dir}: training wrote no checkpoint")
    return ckpts[-1]


def base_overrides(plan: P.Plan, run: P.Run, selection: Path | None) -> list[str]:
    it = plan.base_iters
    metric = (["sampling.iqa.metric=null", f"sampling.iqa.selection={selection}"] if selection else
              [f"sampling.iqa.metric={plan.metric}"])
    if run.variant.needs_image_scores():  # image-level scores from a store (execute scores them first)
        metric += [f"sampling.iqa.store={plan.extra['train_store']}",
                   f"sampling.iqa.manifest={plan.extra['train_manifest']}"]
    return [f"name={run.name}", f"seed={run.seed}", f"schedule.total_iters={it}", f"schedule.val_every={it}",
            f"schedule.checkpoint_every={max(1, it // 3)}", f"schedule.log_every={max(1, it // 10)}",
            "arch.drop_path_rate=0.0", "data.queue_size=16", f"optim.lr_g={P.LR}", f"optim.lr_d={P.LR}",
            f"optim.ema={P.EMA}", "loss.perceptual=0.0", "loss.gan=0.0", *metric, *run.variant.overrides]


def ft_overrides(plan: P.Plan, run: P.Run, selection: Path | None, second: str | None) -> list[str]:
    it, check = plan.ft_iters, min(P.FT_CHECK_EVERY, plan.ft_iters)
    reward = (["ft.reward.metric=null", f"ft.reward.selection={selection}", "sampling.iqa.metric=null",
               f"sampling.iqa.selection={selection}"] if selection else
              [f"ft.reward.metric={plan.metric}", f"sampling.iqa.metric={plan.metric}"])
    if run.variant.needs == "second_reward":
        terms = f"[{{metric: {plan.metric}, weight: 1.0}}, {{metric: {second}, weight: 1.0}}]"
        reward = ["ft.reward.metric=null", f"ft.reward.terms={terms}"]
    strategy = "upos" if run.variant.base == "upos" else "amo"
    return [f"name={run.name}", f"seed={run.seed}", f"schedule.total_iters={it}", f"schedule.val_every={check}",
            f"schedule.checkpoint_every={check}", f"schedule.log_every={max(1, it // 10)}", "data.queue_size=16",
            f"optim.lr_g={P.FT_LR}", f"optim.lr_d={P.FT_LR}", f"ft.reward.lambda_q={P.LAMBDA_Q}",
            f"data.gt_size={P.FT_GT_SIZE}", "ft.guard.action=keep_best", "loss.perceptual=0.0", "loss.gan=0.0",
            f"sampling.strategy={strategy}", *reward, *run.variant.overrides]


class _Clock:
    """ETA from the mean wall time of the runs of each kind finished in this session (a prior before any)."""

    PRIOR: ClassVar[dict[str, float]] = {"base": 60.0, "ft": 150.0}

    def __init__(self, runs: list[P.Run]):
        self.left = {"base": sum(r.variant.base is None for r in runs), "ft": sum(r.variant.base is not None for r in runs)}
        self.times: dict[str, list[float]] = {"base": [], "ft": []}

    def done(self, kind: str, seconds: float | None) -> None:
        self.left[kind] -= 1
        if seconds is not None:
            self.times[kind].append(seconds)

    def eta(self) -> float:
        return sum(n * (sum(self.times[k]) / len(self.times[k]) if self.times[k] else self.PRIOR[k])
                   for k, n in self.left.items())


def _log(out: Path, text: str) -> None:
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}"
    print(line, flush=True)
    with open(out / "repro.log", "a") as fh:
        fh.write(line + "\n")


def eval_metrics(selection: Path | None) -> str | None:
    """Offline: NIQE, PIQE, entropy + PSNR, SSIM, LPIPS-ST; with a selection: evaluate's defaults (the paper's
    NR metrics with weights here, and the FR protocol's metrics)."""
    return None if selection else ",".join((*P.EVAL_NR_OFFLINE, *P.EVAL_FR))


def _evaluate_all(ckpt, tests: dict[str, Path], store, metrics: str | None) -> None:
    from sr_training.evaluate import evaluate, lr_hr_test_set

    for name, folder in tests.items():
        ts = lr_hr_test_set(folder / "lr_blind_x4", folder / "hr", name=name)
        evaluate(ckpt, ts, store, metrics=metrics, test_name=name, progress=False)


def _ensure_metric(name: str) -> None:
    """NIQE's parameters, as `make demo` gets them (BasicSR's .npz from the package index, data only); any other
    metric must be available already: one line naming it, before anything is trained."""
    from bench.metrics.table import get
    from bench.metrics.weights import is_available, missing, seed_niqe

    spec = get(name)
    if name in ("niqe", "niqe_matlab") and missing(spec):
        print("NIQE parameters: fetching the basicsr-fixed sdist from the package index (data file only)")
        seed_niqe()
    if not is_available(spec):
        raise StudyError(f"repro: metric {name} has no weights here (`iqa-study weights status {name}`)")


def execute(plan: P.Plan, out: Path, photos: Path, tests: dict[str, Path], selection: Path | None = None,
            second: str | None = None) -> list[dict]:
    """Train, fine-tune, merge and evaluate every run of ``plan`` (resumable); returns the done records."""
    from bench.store import Store
    from sr_training.config import load_config
    from sr_training.ft.merge import merge
    from sr_training.ft.trainer import FTTrainer
    from sr_training.infer import BICUBIC
    from sr_training.psnr_init import shipped
    from sr_training.trainer import Trainer

    out.mkdir(parents=True, exist_ok=True)
    _ensure_metric(plan.metric)
    train_root, test_dirs = prepare_data(out, photos, tests)
    init = shipped("swinir")
    _write_json({"runs": [r.name for r in plan.runs], "skipped": dict(plan.skipped), "seeds": plan.seeds,
                 "base_iters": plan.base_iters, "ft_iters": plan.ft_iters, "metric": plan.metric,
                 "selection": str(selection) if selection else None, "photos": str(photos),
                 "tests": {k: str(v) for k, v in tests.items()}, "init": str(init)}, out / "plan.json")
    os.environ["SYNTH_HGGT_ROOT"] = str(train_root.resolve())
    if any(r.variant.needs_image_scores() for r in plan.runs):
        ts, tm = train_image_scores(out, train_root, plan.metric)
        plan.extra.update(train_store=str(ts.resolve()), train_manifest=str(tm.resolve()))
    store = Store(out / "store")
    metrics = eval_metrics(selection)
    refs = out / "references_done.json"
    if not refs.is_file():
        t0 = time.perf_counter()
        for ckpt in (BICUBIC, init):
            _evaluate_all(ckpt, test_dirs, store, metrics)
        _write_json({"models": ["bicubic", str(init)], "eval_s": round(time.perf_counter() - t0, 1)}, refs)
        _log(out, f"references (bicubic, PSNR init) evaluated on {', '.join(test_dirs)}")
    clock, records, t_all = _Clock(list(plan.runs)), [], time.perf_counter()
    for k, run in enumerate(plan.runs, 1):
        run_dir = out / "runs" / run.name
        kind = "base" if run.variant.base is None else "ft"
        done = run_dir / "repro_done.json"
        if done.is_file():
            records.append(json.loads(done.read_text()))
            clock.done(kind, None)
            continue
        t0 = time.perf_counter()
        if kind == "base":
            cfg = load_config(CONFIGS / "smoke_swinir_amo.yaml",
                              [*base_overrides(plan, run, selection), f"arch.pretrained={init}"])
            Trainer(cfg, run_dir, device="cpu").fit(auto_resume=True)
            evaluated = _last_checkpoint(run_dir)
        else:
            base_done = out / "runs" / run.base_run / "repro_done.json"
            if not base_done.is_file():
                raise StudyError(f"{run.name}: its base run {run.base_run} has not finished (plan order broken)")
            os.environ["FT_INIT"] = json.loads(base_done.read_text())["evaluated"]
            cfg = load_config(CONFIGS / "smoke_ft_swinir.yaml", ft_overrides(plan, run, selection, second))
            FTTrainer(cfg, run_dir, device="cpu").fit(auto_resume=True)
            record = merge(_last_checkpoint(run_dir), run_dir / "merged.pth")
            evaluated = Path(record["output"])
        t_train = time.perf_counter() - t0
        _evaluate_all(evaluated, test_dirs, store, metrics)
        rec = {"run": run.name, "variant": run.variant.name, "seed": run.seed, "kind": kind,
               "evaluated": str(evaluated.resolve()), "train_s": round(t_train, 1),
               "eval_s": round(time.perf_counter() - t0 - t_train, 1),
               "iterations": plan.base_iters if kind == "base" else plan.ft_iters}
        _write_json(rec, done)
        records.append(rec)
        clock.done(kind, time.perf_counter() - t0)
        _log(out, f"[{k}/{len(plan.runs)}] {run.name}: train {rec['train_s']:.0f} s, eval {rec['eval_s']:.0f} s; "
                  f"session {time.perf_counter() - t_all:.0f} s, ETA {clock.eta() / 60:.1f} min")
    return records
