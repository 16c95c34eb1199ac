"""`make demo`: the main job on the embedded offline default, everything under runs/demo/.

sample manifest (SYNTHETIC) -> score (real offline metrics) -> store -> agreement -> report.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.errors import StudyError


def run_demo(out: Path, metrics: str = "piqe,entropy,niqe") -> None:
    from bench.cli import _print_table, _summary_lines
    from bench.manifests import sample, schema
    from bench.metrics.table import select
    from bench.metrics.weights import missing, seed_niqe
    from bench.report.agreement_report import write_agreement_report
    from bench.scoring.engine import score_manifest
    from bench.store import Store
    from bench.store.views import agreement

    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/4] building the embedded SYNTHETIC sample in {out / 'sample'}")
    manifest_path = out / "sample" / "manifest.parquet"
    schema.write(sample.build_sample(out / "sample"), manifest_path)
    manifest = schema.read(manifest_path)

    specs = select(metrics)
    for spec in specs:
        if spec.name in ("niqe", "niqe_matlab") and missing(spec):
            try:
                print("      NIQE parameters: fetching the basicsr-fixed sdist from PyPI (data file only)")
                seed_niqe()
            except StudyError as exc:
                print(f"      niqe unavailable: {exc}")
    print(f"[2/4] scoring {len(manifest)} pairs with {', '.join(s.name for s in specs)}")
    store = Store(out / "store")
    _, summaries = score_manifest(manifest, specs, store, workers=2)
    print("\n".join(_summary_lines(summaries)))
    print("[3/4] agreement (SYNTHETIC preferences, see bench/manifests/sample.py)")
    table = agreement(store)
    _print_table(table[["dataset", "metric", "n_pairs", "n_decided", "strict_acc", "strict_ci_lo", "strict_ci_hi",
                        "tie_half_acc", "vote_agreement"]], False)
    report_dir = out / "report"
    if report_dir.exists():
        shutil.rmtree(report_dir)
    path = write_agreement_report(store, report_dir, title="iqa-study demo: embedded SYNTHETIC sample")
    print(f"[4/4] report: {path}")
