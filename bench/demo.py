"""`make demo`: the main job on the embedded offline default; everything under runs/demo/.

sample manifest (SYNTHETIC) -> score (real offline metrics) -> store -> agreement -> Phase I /
Phase II -> complement -> ensemble -> selection.json -> report -> short AMO training run with the
selected metric on the SYNTHETIC multi-GT set.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bench.errors import StudyError


def run_demo(out: Path, metrics: str = "piqe,entropy,niqe", train_iters: int = 20) -> None:
    from bench.cli.common import _print_table, _summary_lines
    from bench.manifests import sample, schema
    from bench.metrics.table import select
    from bench.metrics.weights import missing, seed_niqe
    from bench.report.study_report import write_study_report
    from bench.scoring.engine import score_manifest
    from bench.store import Store
    from bench.store.views import agreement
    from bench.study.complement import complement
    from bench.study.ensemble import ensemble
    from bench.study.phases import phase1, phase2
    from bench.study.select import build_selection, summary_text, write_selection

    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/7] building the embedded SYNTHETIC sample in {out / 'sample'}")
    manifest_path = out / "sample" / "manifest.parquet"
    schema.write(sample.build_sample(out / "sample"), manifest_path)
    manifest = schema.read(manifest_path)

    specs = select(metrics)
    if any(s.name in ("niqe", "niqe_matlab") and missing(s) for s in specs):
        try:
            print("      NIQE parameters: fetching the basicsr-fixed sdist from PyPI (data file only)")
            seed_niqe()
        except StudyError as exc:
            print(f"      niqe unavailable: {exc}")
    print(f"[2/7] scoring {len(manifest)} pairs with {', '.join(s.name for s in specs)}")
    store = Store(out / "store")
    _, summaries = score_manifest(manifest, specs, store, workers=2)
    print("\n".join(_summary_lines(summaries)))
    print("[3/7] agreement (SYNTHETIC preferences, see bench/manifests/sample.py)")
    table = agreement(store)
    _print_table(table[["dataset", "metric", "n_pairs", "n_decided", "strict_acc", "strict_ci_lo", "strict_ci_hi",
                        "tie_half_acc", "vote_agreement"]], False)

    print("[4/7] study: Phase I (40-pair subset, top-2) -> Phase II -> complement -> ensemble -> selection")
    _, ranked, _ = phase1(manifest, store, specs, n_pairs=40, top_k=2, workers=0, progress=False)
    _, p2 = phase2(manifest, store, workers=0, progress=False)
    complement(store)
    ensemble(store, n_splits=3)
    try:
        chosen = build_selection(store)
    except StudyError as exc:  # e.g. NIQE parameters could not be fetched: no differentiable metric here
        chosen = None
        print(f"      selection.json not written: {exc}")
    if chosen:
        selection = write_selection(chosen, out / "selection.json")
        print(summary_text(chosen))
        print(f"      {selection}")

    report_dir = out / "report"
    if report_dir.exists():
        shutil.rmtree(report_dir)
    path = write_study_report(store, report_dir, title="iqa-study demo: embedded SYNTHETIC sample")
    print(f"[5/7] report: {path} and {path.with_suffix('.html')}")

    if chosen is None:
        print("[6/7] [7/7] training skipped: it needs a differentiable metric with weights (see above)")
        return
    print(f"[6/7] SYNTHETIC multi-GT set (HGGT layout) for training in {out / 'synthetic_hggt'}")
    from sr_training.config import load_config
    from sr_training.data.synthetic import build_synthetic_hggt
    from sr_training.trainer import Trainer

    synth = out / "synthetic_hggt"
    if not (synth / "SYNTHETIC.md").exists():
        build_synthetic_hggt(synth)
    os.environ["SYNTH_HGGT_ROOT"] = str(synth.resolve())
    config = Path(__file__).resolve().parents[1] / "sr_training" / "configs" / "smoke_swinir_amo.yaml"
    cfg = load_config(config, ["sampling.iqa.metric=null", f"sampling.iqa.selection={selection}",
                               f"schedule.total_iters={train_iters}"])
    print(f"[7/7] training {cfg.name}: tiny SwinIR, AMO with the selected metric, {train_iters} iterations on CPU")
    train_dir = out / "train"
    if train_dir.exists():
        shutil.rmtree(train_dir)
    result = Trainer(cfg, train_dir, device="cpu").fit()
    print(f"      GT index chosen by AMO (0 = original): {result['chosen']}; "
          f"{result['sec_per_iter']:.2f} s/iter; checkpoints, logs and validation images in {train_dir}")
