"""`repro`: the paper's main table and ablations at small scale on CPU (sr_training/repro)."""

from __future__ import annotations

import os
from pathlib import Path

from bench.cli.common import positive_int
from bench.errors import StudyError


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise StudyError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise StudyError(f"--seeds {text!r}: expected distinct non-negative integers")
    return seeds


def _folder(value: str | None, what: str, shared: str) -> Path:
    """The given folder, else ``shared`` under $IQA_STUDY_SHARED (default ../shared, as the Makefile)."""
    p = Path(value) if value else Path(os.environ.get("IQA_STUDY_SHARED", "../shared")) / shared
    if not p.is_dir():
        raise StudyError(f"{what} {p}: not a folder" + ("" if value else f" (the default; give {what} DIR)"))
    return p


def cmd_repro(a) -> None:
    from sr_training.repro import plan as P
    from sr_training.repro.report import write_report

    out, report = Path(a.out), Path(a.report)
    if not a.report_only:
        from sr_training.repro.run import execute

        selection = Path(a.selection) if a.selection else None
        if selection is not None and not selection.is_file():
            raise StudyError(f"--selection {selection}: file does not exist")
        metric = P.OFFLINE_METRIC
        if selection is not None:
            from bench.study.select import read_selection

            metric = (read_selection(selection).get("sampling_metric") or {}).get("metric")
            if not metric:
                raise StudyError(f"--selection {selection}: no sampling_metric with weights here")
        reasons, second = P.skipped(metric)
        seeds = (P.SEEDS[0],) if a.quick else _seeds(a.seeds)
        only = tuple(n.strip() for n in a.runs.split(",") if n.strip()) if a.runs else None
        plan = P.build_plan(seeds, only, reasons, base_iters=a.base_iters, ft_iters=a.ft_iters, metric=metric)
        print(f"repro: {len(plan.runs)} runs ({len(plan.seeds)} seed(s)) into {out}; skipped: "
              + ("; ".join(f"{v} ({why})" for v, why in plan.skipped) or "none"))
        tests = {"set14": _folder(a.set14, "--set14", "data/set14/hr"), "set5": _folder(a.set5, "--set5", "data/set5/hr")}
        execute(plan, out, _folder(a.photos, "--photos", "data/bsd100/hr"), tests, selection, second)
    for p in write_report(out, report):
        print(f"wrote {p}")


def register(sub) -> None:
    from sr_training.repro import plan as P

    s = sub.add_parser("repro", help="the paper's main table and ablations at small scale on CPU: tiny SwinIR from "
                                     "the shipped PSNR init on SYNTHETIC multi-GT groups of real photographs, "
                                     "tested on Set14 and Set5 (resumable; docs/repro.md)")
    s.add_argument("--out", default="runs/mini_repro", help="run folder (data, runs, store); rerun to resume")
    s.add_argument("--report", default="reports/mini_repro", help="where the tables, figures and page go")
    s.add_argument("--quick", action="store_true", help="one seed (0) instead of --seeds")
    s.add_argument("--seeds", default=",".join(map(str, P.SEEDS)), help="comma-separated training seeds")
    s.add_argument("--runs", help=f"only these variants (and their FT bases), comma-separated: {', '.join(P.BY_NAME)}")
    s.add_argument("--photos", help="folder of real HR photographs to train on (e.g. BSD100 or DIV2K HR); default "
                                    "$IQA_STUDY_SHARED/data/bsd100/hr ($IQA_STUDY_SHARED defaults to ../shared)")
    s.add_argument("--set14", help="Set14 HR folder (test); default $IQA_STUDY_SHARED/data/set14/hr")
    s.add_argument("--set5", help="Set5 HR folder (test); default $IQA_STUDY_SHARED/data/set5/hr")
    s.add_argument("--selection", help="selection.json: its sampling/reward metric instead of NIQE (real weights)")
    s.add_argument("--base-iters", type=positive_int, default=P.BASE_ITERS, help="base training iterations per run")
    s.add_argument("--ft-iters", type=positive_int, default=P.FT_ITERS, help="FT iterations per run")
    s.add_argument("--report-only", action="store_true", help="only rewrite the report from --out")
    s.set_defaults(fn=cmd_repro)
