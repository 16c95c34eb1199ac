"""`phase1`, `phase2`, `complement`, `ensemble`, `select`, `report`."""

from __future__ import annotations

from pathlib import Path

from bench.cli.common import _print_table, _score_opts, _summary_lines, nonneg_int, positive_int


def cmd_phase1(a) -> None:
    from bench.manifests import schema
    from bench.metrics.table import select
    from bench.store import Store
    from bench.study.configs import parse_pins
    from bench.study.phases import phase1

    key, ranked, summaries = phase1(schema.read(a.manifest, root=a.root), Store(a.store), select(a.metrics),
                                    n_pairs=a.n_pairs, seed=a.seed, top_k=a.top_k, n_boot=a.n_boot,
                                    include_inferred=a.include_inferred, pins=parse_pins(a.config), **_score_opts(a))
    print("\n".join(_summary_lines(summaries)))
    print(f"phase1 {key}: {int(ranked['n'].iloc[0])} complete pairs ({int(ranked['n_groups'].iloc[0])} source groups) "
          f"of a {int(ranked['n_subset'].iloc[0])}-pair subset; CI: {ranked['ci_method'].iloc[0]}")
    _print_table(ranked[["rank", "metric", "config_hash", "acc", "ci_lo", "ci_hi", "n", "top_k", "differentiable"]],
                 a.json)


def cmd_phase2(a) -> None:
    from bench.manifests import schema
    from bench.store import Store
    from bench.study.configs import parse_pins
    from bench.study.phases import phase2

    key, ranked = phase2(schema.read(a.manifest, root=a.root), Store(a.store), from_phase1=a.from_phase1,
                         split=a.split, n_boot=a.n_boot, include_inferred=a.include_inferred,
                         pins=parse_pins(a.config), **_score_opts(a))
    best = ranked.iloc[0]
    print(f"phase2 {key} (from phase1 {best['phase1_key']}, split {best['split_by_dataset']}): best = {best['metric']} "
          f"({best['acc']:.4f} [{best['ci_lo']:.4f}, {best['ci_hi']:.4f}], n={int(best['n'])} pairs, "
          f"{int(best['n_groups'])} groups; CI: {best['ci_method']})")
    _print_table(ranked[["rank", "metric", "config_hash", "acc", "ci_lo", "ci_hi", "only_best_right",
                         "only_this_right", "p_value_vs_best", "p_value_holm", "best_significantly_better"]], a.json)
    close = ranked[(~ranked["is_best"]) & (~ranked["best_significantly_better"])]
    if len(close) and not a.json:
        print(f"not significantly different from the best ({best['test_method']}): {', '.join(close['metric'])}")


def cmd_complement(a) -> None:
    from bench.store import Store
    from bench.study.complement import complement
    from bench.study.configs import parse_pins

    key, t = complement(Store(a.store, create=False), a.best, metrics=a.metrics.split(",") if a.metrics else None,
                        datasets=a.dataset, split=a.split, phase2_key=a.from_phase2,
                        include_inferred=a.include_inferred or None, pins=parse_pins(a.config))
    best = t["complement_conditional"]["best"].iloc[0]
    n_wrong = int(t["complement_conditional"]["n_best_wrong"].iloc[0])
    p2 = t["complement_greedy"]["phase2_key"].iloc[0]
    print(f"complement {key} ({'phase2 ' + p2 if p2 else 'explicit scope'}): best = {best}, wrong on {n_wrong} of "
          f"{int(t['complement_greedy']['n_pairs'].iloc[0])} pairs")
    _print_table(t["complement_conditional"][["metric", "acc_on_best_wrong", "n_best_wrong"]], a.json)
    if not a.json:
        print("\ngreedy complement (share of pairs where at least one chosen metric is right):")
        _print_table(t["complement_greedy"][["step", "metric", "oracle_acc", "gain"]], False)


def cmd_ensemble(a) -> None:
    from bench.store import Store
    from bench.study.configs import parse_pins
    from bench.study.ensemble import ensemble

    key, summary, scorer = ensemble(Store(a.store, create=False), metrics=a.metrics.split(",") if a.metrics else None,
                                    datasets=a.dataset, split=a.split, n_splits=a.folds, C=a.C,
                                    phase2_key=a.from_phase2, include_inferred=a.include_inferred or None,
                                    pins=parse_pins(a.config))
    print(f"ensemble {key}: {summary['n_folds'].iloc[0]}-fold grouped CV; model saved to "
          f"{a.store}/models/ensemble-{key}.json")
    _print_table(summary[["model", "strict_acc", "n_pairs"]], a.json)


def cmd_select(a) -> None:
    import sys

    from bench.store import Store
    from bench.study.select import build_selection, summary_text, write_selection

    sel = build_selection(Store(a.store, create=False), phase2_key=a.from_phase2, allow_weak=a.allow_weak_metric)
    print(f"wrote {write_selection(sel, a.output)}")
    print(summary_text(sel, with_warnings=False))
    for w in sel["warnings"]:
        print(f"iqa-study: WARNING: {w}", file=sys.stderr)


def cmd_report(a) -> None:
    from bench.report.study_report import write_study_report
    from bench.store import Store

    path = write_study_report(Store(a.store, create=False), Path(a.out), title=a.title, selection=a.selection,
                              phase2_key=a.phase2)
    print(f"report: {path} (+ {path.with_suffix('.html').name})")


def register(sub) -> None:
    def scoring_opts(sp):
        sp.add_argument("--root", help="override the manifest's image root")
        sp.add_argument("--device", default="auto")
        sp.add_argument("--batch-size", type=int, help="default: 8 on GPU, 1 on CPU")
        sp.add_argument("--workers", type=int, help="image-decoding worker processes (default: 0 on CPU, up to 4 on GPU)")
        sp.add_argument("--shard")
        sp.add_argument("--max-pixels", type=int)
        sp.add_argument("--n-boot", type=positive_int, default=2000,
                        help="bootstrap resamples of source groups for the 95%% CIs (default: %(default)s)")
        sp.add_argument("--json", action="store_true")
        study_opts(sp)

    def study_opts(sp):
        sp.add_argument("--config", action="append", metavar="METRIC=HASH",
                        help="use this stored configuration of METRIC (repeatable); default: the configuration of "
                             "the latest run that scored it")
        sp.add_argument("--include-inferred", action="store_true",
                        help="count pairs inferred from labels (HGGT enhanced-vs-enhanced; manifest kind='inferred'),"
                             " excluded by default")

    s = sub.add_parser("phase1", help="all study metrics on a stratified subset -> ranking with bootstrap CIs -> top-k")
    s.add_argument("--manifest", required=True)
    s.add_argument("--store", required=True)
    s.add_argument("--n-pairs", type=positive_int, default=1212, help="size of the stratified Phase I subset (the paper: 1,212)")
    s.add_argument("--seed", type=nonneg_int, default=0)
    s.add_argument("--metrics", default="study")
    s.add_argument("--top-k", type=positive_int, default=7, help="metrics that go on to Phase II (the paper: 7)")
    scoring_opts(s)
    s.set_defaults(fn=cmd_phase1)

    s = sub.add_parser("phase2", help="Phase I's top-k on the full manifest -> best, McNemar vs runners-up")
    s.add_argument("--manifest", required=True)
    s.add_argument("--store", required=True)
    s.add_argument("--from-phase1", help="phase1 key (default: the latest)")
    s.add_argument("--split", help="split to evaluate; default: 'test' for datasets that have one, else every pair; "
                                   "'all' for every pair")
    scoring_opts(s)
    s.set_defaults(fn=cmd_phase2)

    def study_scope(sp):
        sp.add_argument("--store", required=True)
        sp.add_argument("--dataset", action="append", help="restrict to this dataset (repeatable)")
        sp.add_argument("--split", help="restrict to this split")
        sp.add_argument("--from-phase2", help="Phase II key whose metrics and pairs to use (default: the latest, "
                                              "unless --dataset/--split name an explicit scope)")
        sp.add_argument("--json", action="store_true")
        study_opts(sp)

    s = sub.add_parser("complement", help="which metrics are right where the best one is wrong")
    study_scope(s)
    s.add_argument("--best", help="default: the Phase II winner")
    s.add_argument("--metrics", help="comma-separated (default: the Phase II metrics)")
    s.set_defaults(fn=cmd_complement)

    s = sub.add_parser("ensemble", help="logistic combination of metric scores, grouped cross-validation")
    study_scope(s)
    s.add_argument("--metrics", help="comma-separated (default: the Phase II metrics)")
    s.add_argument("--folds", type=positive_int, default=5, help="cross-validation folds, grouped by source image")
    s.add_argument("--C", type=float, default=1.0, help="inverse L2 regularisation strength of the logistic regression")
    s.set_defaults(fn=cmd_ensemble)

    s = sub.add_parser("select", help="write selection.json (consumed by sr_training)")
    s.add_argument("--store", required=True)
    s.add_argument("-o", "--out", "--output", dest="output", default="selection.json", help="selection.json to write")
    s.add_argument("--from-phase2", help="Phase II key to select from (default: the latest); its Phase I, complement "
                                         "and ensemble results are followed by key")
    s.add_argument("--allow-weak-metric", action="store_true",
                   help="let a metric whose 95%% CI does not exclude chance (0.5) from below be the sampling or "
                        "reward metric (recorded with a warning); by default such metrics are skipped")
    s.set_defaults(fn=cmd_select)

    s = sub.add_parser("report", help="study report: self-contained report.html, report.md, figures (PNG, PDF, CSV)")
    s.add_argument("--store", required=True)
    s.add_argument("-o", "--out", default="runs/report", help="output folder (relative to the current directory)")
    s.add_argument("--title", default="iqa-study: metric selection report", help="report title")
    chain = s.add_mutually_exclusive_group()
    chain.add_argument("--selection", help="selection.json: the report follows its chain of results and opens with "
                                           "its metrics, evidence and warnings")
    chain.add_argument("--phase2", help="Phase II key to report (default: the latest) with its Phase I, complement "
                                        "and ensemble")
    s.set_defaults(fn=cmd_report)
