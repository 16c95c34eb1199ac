"""PSNR-oriented initialisations: train, export, check against bicubic on held-out photographs.

HGGT fine-tunes every perceptual model from a PSNR-oriented blind model (``Blind_PSNR``, DF2K_OST,
``params_ema``); it never trains from scratch. The suite ships two TINY such models, trained on a CPU on
real photographs (BSD100) with the single-GT folder data (:mod:`sr_training.data.folder`), L1 only:

    sr_training/pretrained/psnr_init_{swinir,rrdb}_tiny.safetensors   EMA generator weights (spandrel-loadable)
    sr_training/pretrained/psnr_init_{swinir,rrdb}_tiny.safetensors.json   the record (below) = evaluate's sidecar

:func:`build` makes one: train (``sr_training/configs/psnr_init_<arch>_tiny.yaml``, auto-resumed), export the
EMA weights of the last checkpoint, build the held-out test sets (Set14 and the demo's held-out photographs;
HR cropped to a multiple of the scale, LR = the one-stage training degradation with a fixed seed,
``sr_training.evaluate.fixed_lr``), evaluate the model and the bicubic reference (``@bicubic``) into a store
with PSNR / SSIM / LPIPS-ST (evaluate's FR protocol: RGB, crop 4) and record the paired per-image
differences with 95 % bootstrap CIs (bench.report.compare). The record holds the config, the training file
list hash, iterations, wall time, machine, git commit and those held-out numbers; ``acceptance`` says
whether the model beats bicubic in PSNR and LPIPS-ST on every held-out set with CIs excluding 0.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from bench.atomic import atomic_save_image
from bench.errors import StudyError

PRETRAINED = Path(__file__).resolve().parent / "pretrained"
CONFIGS = Path(__file__).resolve().parent / "configs"
ARCHS = ("swinir", "rrdb")
LABEL = ("TINY model trained on a CPU (2 cores) on 100 BSD100 photographs, L1 only: a PSNR-oriented initialisation "
         "for small experiments, far weaker than a paper-size model")


def name_of(arch: str) -> str:
    if arch not in ARCHS:
        raise StudyError(f"--arch {arch!r}: expected one of {', '.join(ARCHS)}")
    return f"psnr_init_{arch}_tiny"


def shipped(arch: str) -> Path:
    """The committed weights file of ``arch`` (one line naming the reproduce command when it is absent)."""
    path = PRETRAINED / f"{name_of(arch)}.safetensors"
    if not path.is_file():
        raise StudyError(f"{path}: the shipped PSNR init is missing; rebuild it with "
                         f"`python scripts/make_psnr_init.py --arch {arch}` (docs/pretrained.md)")
    return path


def heldout_from_folder(src: Path | list[Path], out: Path, scale: int = 4, seed: int = 1) -> Path:
    """A folder test set ``out/{hr,lr_blind_x4}`` from HR photographs: each HR cropped to a multiple of ``scale``
    (top-left kept), greyscale made RGB, LR = ``fixed_lr`` (one-stage training degradation, seed (seed, index)).
    Existing files are kept (a fixed LR is never regenerated)."""
    from PIL import Image

    from sr_training.data.folder import list_images
    from sr_training.evaluate import fixed_lr
    from sr_training.infer import load_rgb, save_png

    files = list_images(src) if isinstance(src, (str, Path)) else sorted(src)
    (out / "hr").mkdir(parents=True, exist_ok=True)
    (out / "lr_blind_x4").mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(files):
        hr_path = out / "hr" / f"{path.stem}.png"
        if not hr_path.exists():
            with Image.open(path) as im:
                rgb = im.convert("RGB")
                w, h = rgb.width - rgb.width % scale, rgb.height - rgb.height % scale
                atomic_save_image(rgb.crop((0, 0, w, h)), hr_path)
        lr_path = out / "lr_blind_x4" / f"{path.stem}.png"
        if not lr_path.exists():
            save_png(fixed_lr(load_rgb(hr_path), index, scale, seed), lr_path)
    return out


def versus_bicubic(store, test_set: str, run: str, metrics=("psnr", "ssim", "stlpips")) -> dict:
    """{metric: {model, bicubic, delta, ci: [lo, hi], n}} of ``run`` against the '@bicubic' reference on
    ``test_set``: means over images and the paired per-image difference with its 95 % bootstrap CI."""
    from bench.report.compare import compare_table, load_per_image

    per, runs, _ = load_per_image(store, test_set)
    labels = dict(zip(runs["run_name"], runs["label"]))
    if "bicubic" not in labels or run not in labels:
        raise StudyError(f"test set {test_set}: needs evaluated runs 'bicubic' and {run!r} (has {sorted(labels)})")
    t = compare_table(per, runs, test_set, labels["bicubic"]).set_index("run")
    out = {}
    for m in metrics:
        if m not in t.columns:
            continue
        r, b = t.loc[labels[run]], t.loc[labels["bicubic"]]
        out[m] = {"model": float(r[m]), "bicubic": float(b[m]), "delta": float(r[f"d_{m}"]),
                  "ci": [float(r[f"d_{m}_lo"]), float(r[f"d_{m}_hi"])], "n": int(r[f"n_{m}_paired"])}
    return out


def beats_bicubic(result: dict) -> bool:
    """PSNR higher and LPIPS-ST lower than bicubic, each paired 95 % CI excluding 0."""
    p, s = result.get("psnr"), result.get("stlpips")
    return bool(p and s and p["ci"][0] > 0 and s["ci"][1] < 0)


def _wall_time(sessions: list[dict], run_dir: Path) -> tuple[float | None, str]:
    """(seconds of training summed over the sessions of a run, how): a finished session counts started_at ->
    finished_at; a session that was killed (no finished_at) counts its iterations (up to where the next session
    resumed) x its average sec_per_iter in train_log.csv (logged since that session's start)."""
    import csv
    from datetime import datetime

    rows = []
    if (run_dir / "train_log.csv").is_file():
        with open(run_dir / "train_log.csv", newline="") as fh:
            rows = [(int(r["iter"]), float(r["sec_per_iter"])) for r in csv.DictReader(fh)]
    total, estimated = 0.0, False
    for k, p in enumerate(sessions):
        if p.get("started_at") and p.get("finished_at"):
            total += (datetime.fromisoformat(p["finished_at"]) - datetime.fromisoformat(p["started_at"])).total_seconds()
            continue
        start = (p.get("resumed_from") or {}).get("iteration", 0)
        nxt = sessions[k + 1] if k + 1 < len(sessions) else {}
        end = (nxt.get("resumed_from") or {}).get("iteration")
        logged = [spi for it, spi in rows if start < it <= (end or 0)]
        if end is None or not logged:
            return None, "unknown: a session without finished_at and no log to estimate it"
        total += (end - start) * logged[-1]
        estimated = True
    how = "provenance start -> finish" + ("; a killed session: its iterations x its logged sec_per_iter"
                                          if estimated else "")
    return round(total, 1), how


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "device": "cpu",
            "omp_num_threads_at_export": os.environ.get("OMP_NUM_THREADS")}


def export_ema(checkpoint: Path, out: Path, record: dict) -> Path:
    """EMA generator weights of a suite checkpoint -> safetensors (atomically) + ``<file>.json`` record."""
    from safetensors.torch import save_file

    from bench.atomic import atomic_write, atomic_write_text
    from bench.hashing import sha256_file
    from sr_training.checkpoint import read_weights

    state = read_weights(checkpoint, "checkpoint")
    ema = {k: v.contiguous() for k, v in state["ema"].items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: save_file(ema, str(tmp), metadata={"format": "pt", "source": "iqa-study"}))
    record = record | {"file": out.name, "sha256": sha256_file(out), "source_checkpoint_sha256": sha256_file(checkpoint)}
    atomic_write_text(json.dumps(record, indent=2, default=str) + "\n", out.with_name(out.name + ".json"))
    return out


def build(arch: str, data: Path, work: Path, out_dir: Path = PRETRAINED, val: Path | None = None,
          heldout: dict[str, Path] | None = None, overrides: list[str] = (), train: bool = True,
          note: str | None = None) -> dict:
    """Train (auto-resume), export and check one tiny PSNR init; returns the record (module docstring)."""
    from bench.provenance import git_commit
    from bench.store import Store
    from sr_training.config import load_config
    from sr_training.data.folder import file_list_sha256, list_images
    from sr_training.evaluate import evaluate
    from sr_training.infer import BICUBIC
    from sr_training.trainer import Trainer

    name = name_of(arch)
    os.environ["PSNR_INIT_DATA"] = str(Path(data).resolve())
    if val is not None:
        os.environ["SET5_ROOT"] = str(Path(val).resolve())
    extra = [] if val is not None else ["val.dir=null"]
    cfg = load_config(CONFIGS / f"{name}.yaml", [*extra, *overrides])
    run_dir = work / "train" / name
    if train:
        Trainer(cfg, run_dir).fit(auto_resume=True)
    prov = json.loads((run_dir / "provenance.json").read_text()) if (run_dir / "provenance.json").is_file() else {}
    sessions = [p for p in prov.get("previous_sessions", []) + [prov] if p]
    ckpts = sorted((run_dir / "checkpoints").glob("iter_*.pt"))
    if not ckpts:
        raise StudyError(f"{run_dir}: no checkpoint (train first)")
    files = list_images(data)
    wall, wall_how = _wall_time(sessions, run_dir)
    record = {
        "run_name": name, "arch": f"{arch}-tiny", "sampling": None, "ft_variant": None,
        "iteration": cfg.schedule.total_iters, "weights": "ema", "label": LABEL,
        "config": json.loads(cfg.model_dump_json()),
        "training_data": {"folder": Path(data).name, "n_files": len(files), "file_list_sha256": file_list_sha256(files),
                          "rule": "sha256 of 'name<TAB>sha256(file)' lines in name order"},
        "wall_time_s": wall, "wall_time_rule": wall_how,
        "training_sessions": [{"started_at": p.get("started_at"), "finished_at": p.get("finished_at"),
                               "resumed_from_iteration": (p.get("resumed_from") or {}).get("iteration"),
                               "git_commit": p.get("git_commit"), "host": p.get("host")} for p in sessions],
        "machine": machine(), "git_commit": git_commit(), "training_note": note,
        "reproduce": f"python scripts/make_psnr_init.py --arch {arch} --data {Path(data)}",
    }
    weights = export_ema(ckpts[-1], out_dir / f"{name}.safetensors", record)
    store = Store(work / "store")
    results = {}
    for test_name, root in (heldout or {}).items():
        for model in (BICUBIC, weights):
            evaluate(model, root, store, metrics="psnr,ssim,stlpips", test_name=test_name, progress=False)
        results[test_name] = versus_bicubic(store, test_name, name)
    record["heldout"] = {"protocol": "evaluate's FR protocol hggt (RGB, crop border 4); LR = fixed_lr (one-stage "
                                     "training degradation, seed 1); delta = mean paired per-image difference, 95% "
                                     "bootstrap CI (2000 resamples)", "sets": results}
    record["acceptance"] = {"rule": "PSNR up and LPIPS-ST down vs bicubic on every held-out set, paired 95% CI "
                                    "excluding 0", "passed": bool(results) and all(map(beats_bicubic, results.values()))}
    export_ema(ckpts[-1], weights, record)  # same weights, the record now with its held-out numbers
    return json.loads(weights.with_name(weights.name + ".json").read_text())


def summary(record: dict) -> str:
    lines = [f"{record['run_name']}: {record['file']} (sha256 {record['sha256'][:12]}), {record['iteration']} iterations"]
    for ts, res in record.get("heldout", {}).get("sets", {}).items():
        parts = [f"{m} {r['model']:.3f} vs bicubic {r['bicubic']:.3f} (d {r['delta']:+.3f} [{r['ci'][0]:+.3f}, "
                 f"{r['ci'][1]:+.3f}], n={r['n']})" for m, r in res.items()]
        lines.append(f"  {ts}: " + "; ".join(parts))
    acc = record.get("acceptance", {})
    lines.append(f"  acceptance ({acc.get('rule')}): {'PASSED' if acc.get('passed') else 'FAILED'}")
    return "\n".join(lines)

