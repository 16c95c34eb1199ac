"""`metrics` and `weights`: the metric table and weight files."""

from __future__ import annotations

import json

from bench import env
from bench.cli.common import _print_table


def cmd_metrics_list(a) -> None:
    import pandas as pd

    from bench.metrics.table import load_table
    from bench.metrics.weights import is_available, missing

    rows = []
    for m in load_table().metrics:
        if (a.study and not m.study) or (a.available and not is_available(m)):
            continue
        rows.append({"name": m.name, "mode": m.mode, "family": m.family, "train_set": m.train_set, "study": m.study,
                     "lower_better": m.lower_better, "score_min": m.score_min, "score_max": m.score_max,
                     "range_approx": m.range_approx, "differentiable": m.differentiable, "offline": m.offline,
                     "weights_available": not missing(m), "available": is_available(m),
                     "weights": [w.name for w in m.weights], "extra_deps": list(m.extra_deps)})
    if a.json:
        print(json.dumps(rows, indent=1))
        return
    df = pd.DataFrame(rows).drop(columns=["weights", "extra_deps", "train_set", "score_min", "score_max", "range_approx"])
    _print_table(df, False)
    print(f"\n{len(df)} metrics ({sum(r['study'] for r in rows)} in the study set, "
          f"{sum(r['available'] for r in rows)} available here)")


def cmd_weights_status(a) -> None:
    import pandas as pd

    from bench.metrics.table import select
    from bench.metrics.weights import status

    specs = select("study" if a.study else (a.names or "all"))
    rows = [s.__dict__ for spec in specs for s in status(spec)]
    df = pd.DataFrame(rows, columns=["metric", "cache", "name", "path", "present"])
    if a.missing:
        df = df[~df["present"]]
    _print_table(df, a.json)
    if not a.json:
        dirs = env.cache_dirs()
        print(f"\npyiqa cache: {dirs.pyiqa}\ntorchvision: {dirs.torchvision}\nHF hub: {dirs.hf_hub}\n"
              f"iqa-study cache ($IQA_STUDY_HOME): {dirs.study}\n"
              f"{int(df['present'].sum())} present, {int((~df['present']).sum())} missing")


def cmd_weights_fetch(a) -> None:
    from bench.metrics.table import select
    from bench.metrics.weights import fetch, missing

    for spec in select(a.names):
        fetch(spec)
        gone = missing(spec)
        print(f"{spec.name}: {'ok' if not gone else 'still missing ' + ', '.join(g.name for g in gone)}")


def cmd_weights_seed_niqe(a) -> None:
    from bench.metrics.weights import seed_niqe

    for p in seed_niqe(a.from_path):
        print(f"wrote {p}")


# --- manifests ---------------------------------------------------------------------------


def register(sub) -> None:
    m = sub.add_parser("metrics", help="the metric table").add_subparsers(dest="sub", required=True)
    s = m.add_parser("list")
    s.add_argument("--json", action="store_true")
    s.add_argument("--study", action="store_true", help="only the 42-variant study set")
    s.add_argument("--available", action="store_true", help="only metrics that give real scores here")
    s.set_defaults(fn=cmd_metrics_list)

    w = sub.add_parser("weights", help="weight files: status, fetch, NIQE parameters").add_subparsers(dest="sub", required=True)
    s = w.add_parser("status")
    s.add_argument("names", nargs="?", help="comma-separated metrics (default: all)")
    s.add_argument("--study", action="store_true")
    s.add_argument("--missing", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_weights_status)
    s = w.add_parser("fetch", help="download through pyiqa (connected machine)")
    s.add_argument("names", help="comma-separated metric names, or study / all")
    s.set_defaults(fn=cmd_weights_fetch)
    s = w.add_parser("seed-niqe", help="NIQE pristine parameters (BasicSR niqe_pris_params.npz) into iqa-study's "
                                       "own cache: read from the basicsr-fixed 1.4.2 archive on the package index "
                                       "($PIP_INDEX_URL, else PyPI; pinned sha256, nothing executed), or --from FILE")
    s.add_argument("--from", dest="from_path", help="a local niqe_pris_params.npz (checked against its pinned sha256)")
    s.set_defaults(fn=cmd_weights_seed_niqe)
