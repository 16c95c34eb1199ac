"""`userstudy create | invite | serve | status | analyse | export`: 2AFC studies of evaluated SR models
(bench.userstudy; docs/userstudy.md)."""

from __future__ import annotations

from pathlib import Path

from bench.errors import StudyError


def _runs(text: str) -> list[str]:
    runs = [r.strip() for r in text.split(",") if r.strip()]
    if len(runs) < 2:
        raise StudyError(f"--runs {text!r}: give at least two comma-separated runs (labels as in `compare`)")
    return runs


def _exclude(text: str | None) -> tuple[str, ...]:
    return tuple(r.strip() for r in (text or "").split(",") if r.strip())


def cmd_create(a) -> None:
    from bench.store import Store
    from bench.userstudy.design import create, load

    path = create(Store(a.store, create=False), a.test_set, _runs(a.runs), Path(a.out), pairs=a.pairs,
                  baseline=a.baseline, crop=a.crop, reference=a.reference, repeat_fraction=a.repeat_fraction,
                  n_attention=a.attention, trials_per_rater=a.trials_per_rater, seed=a.seed, name=a.name,
                  max_items=a.max_items)
    s = load(path.parent)
    left = s["source"]["items_left_out"]
    print(f"{path.parent}: study '{s['name']}' (dataset {s['dataset']}): {len(s['trials'])} trials on "
          f"{len(s['items'])} test images of {s['source']['test_set']}, runs {', '.join(r['label'] for r in s['runs'])}; "
          f"{len(s['attention'])} attention checks; {len(s['images'])} images copied; seed {s['seed']}")
    if left:
        print(f"      {len(left)} test image(s) left out: not every run has an SR output for them (e.g. {left[0]})")
    print(f"      next: iqa-study userstudy invite {path.parent} --n 5")


def cmd_invite(a) -> None:
    from bench.userstudy import db
    from bench.userstudy.design import load

    study = load(a.study)
    base = a.base_url.rstrip("/")
    for rater, token in db.invite(Path(a.study), study, a.n):
        print(f"{rater}\t{base}/s/{token}")


def cmd_serve(a) -> None:
    from bench.userstudy.server import serve

    serve(a.study, host=a.host, port=a.port)


def cmd_status(a) -> None:
    from bench.cli.common import _print_table
    from bench.userstudy.analyse import status_table

    table = status_table(Path(a.study))
    if table.empty and not a.json:
        print(f"{a.study}: no raters yet (`iqa-study userstudy invite {a.study} --n N`)")
        return
    _print_table(table, a.json)


def cmd_analyse(a) -> None:
    from bench.userstudy.analyse import analyse

    res = analyse(a.study, max_attention_failures=a.max_attention_failures, exclude=_exclude(a.exclude),
                  n_boot=a.n_boot, seed=a.seed, out=a.out)
    excluded = res["raters"][res["raters"]["excluded"]]
    for r in excluded.itertuples():
        print(f"excluded {r.rater}: {r.reason}")
    show = res["preference"].merge(res["bradley_terry"], on="run").sort_values("bt_rank")
    for r in show.itertuples():
        print(f"{r.bt_rank}. {r.run}: preferred in {r.wins}/{r.comparisons} = {r.rate:.3f} "
              f"(Wilson [{r.wilson_lo:.3f}, {r.wilson_hi:.3f}], bootstrap over images [{r.boot_lo:.3f}, {r.boot_hi:.3f}]); "
              f"BT {r.bt_log_strength:+.3f} [{r.bt_lo:+.3f}, {r.bt_hi:+.3f}]")
    print(f"{res['md']}\n{res['html']}")


def cmd_export(a) -> None:
    from bench.store import Store
    from bench.userstudy.export import export

    path, reg, unscored = export(a.study, Store(a.store, create=False), max_attention_failures=a.max_attention_failures,
                                 exclude=_exclude(a.exclude), replace=a.replace)
    print(f"{path}: {reg.summary()} in {a.store}")
    if unscored:
        print(f"      {unscored} image(s) have no stored no-reference score yet (cropped images are new): "
              f"iqa-study score --manifest {path} --store {a.store}")


def _rule_options(s) -> None:
    s.add_argument("--max-attention-failures", type=int, default=0,
                   help="exclude a rater who failed more than this many attention checks")
    s.add_argument("--exclude", help="comma-separated rater ids to exclude by hand (recorded), e.g. r3,r5")


def register(sub) -> None:
    grp = sub.add_parser("userstudy", help="2AFC user studies of evaluated SR models: create, invite, serve, status, "
                                          "analyse, export (docs/userstudy.md)").add_subparsers(dest="sub", required=True)
    s = grp.add_parser("create", help="build a self-contained study folder from the store's registered SR outputs")
    s.add_argument("--store", required=True)
    s.add_argument("--test-set", required=True, help="test set name in the store (as given to `evaluate`)")
    s.add_argument("--runs", required=True, help="comma-separated runs: labels as in `compare` (name or name@iteration)")
    s.add_argument("-o", "--out", required=True, help="the study folder to create (must not exist or be empty)")
    s.add_argument("--pairs", choices=["all", "baseline"], default="all",
                   help="all: every pair of runs per test image; baseline: each run against --baseline")
    s.add_argument("--baseline", help="with --pairs baseline: the run every other run is compared with")
    s.add_argument("--crop", default="full", help="full, N (centred square), WxH (centred) or WxH+X+Y")
    s.add_argument("--reference", choices=["none", "hr", "lr"], default="none",
                   help="shown beside the pair: the item's reference (hr) or the LR image upscaled bicubic (lr)")
    s.add_argument("--repeat-fraction", type=float, default=0.1,
                   help="share of each rater's trials shown again later with the sides swapped")
    s.add_argument("--attention", type=int, default=3, help="attention checks (one side heavily degraded) per rater")
    s.add_argument("--trials-per-rater", type=int, help="trials each rater sees (default: all; fewer: balanced blocks)")
    s.add_argument("--max-items", type=int, help="use only the first N test images (sorted by name)")
    s.add_argument("--name", help="study name (dataset userstudy:NAME; default: the folder name)")
    s.add_argument("--seed", type=int, default=0, help="random seed of the schedules and attention checks (saved)")
    s.set_defaults(fn=cmd_create)

    s = grp.add_parser("invite", help="add raters; prints one personal URL per rater (shown once)")
    s.add_argument("study", help="the study folder")
    s.add_argument("--n", type=int, required=True, help="number of raters to invite")
    s.add_argument("--base-url", default="http://127.0.0.1:8000", help="the address raters reach `serve` at")
    s.set_defaults(fn=cmd_invite)

    s = grp.add_parser("serve", help="serve the study's web page (loopback by default)")
    s.add_argument("study", help="the study folder")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface, with a warning)")
    s.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed)")
    s.set_defaults(fn=cmd_serve)

    s = grp.add_parser("status", help="per-rater progress")
    s.add_argument("study", help="the study folder")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)

    s = grp.add_parser("analyse", help="preference rates with CIs, Bradley-Terry, rater checks; figures and a "
                                       "Markdown/HTML section")
    s.add_argument("study", help="the study folder")
    _rule_options(s)
    s.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples over test images")
    s.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    s.add_argument("-o", "--out", help="output folder (default: STUDY/analysis)")
    s.set_defaults(fn=cmd_analyse)

    s = grp.add_parser("export", help="register the votes as a pairs manifest (dataset userstudy:NAME) in a store")
    s.add_argument("study", help="the study folder")
    s.add_argument("--store", required=True)
    _rule_options(s)
    s.add_argument("--replace", action="store_true",
                   help="let this export's votes replace an earlier export's (pairs with new votes)")
    s.set_defaults(fn=cmd_export)
