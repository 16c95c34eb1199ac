"""`evaluate` (an SR model on a test set, into the store) and `compare` (the paper's table and plots)."""

from __future__ import annotations

from pathlib import Path

from bench.cli.common import positive_int


def cmd_evaluate(a) -> None:
    from bench.cli.common import _summary_lines
    from bench.errors import StudyError
    from bench.scoring.options import pick_device
    from bench.store import Store
    from sr_training.evaluate import evaluate, lr_hr_test_set

    if a.tile is not None and a.tile <= 0:
        raise StudyError(f"--tile {a.tile}: expected a positive tile size in LR pixels")
    if a.tile_overlap < 0:
        raise StudyError(f"--tile-overlap {a.tile_overlap}: expected >= 0")
    if a.hr and not a.lr:
        raise StudyError("evaluate: --hr goes with --lr DIR (a --test folder finds its own hr/)")
    if not (a.test or a.lr):
        raise StudyError("evaluate: give --test DIR_OR_YAML (repeatable) or --lr DIR [--hr DIR]")
    tests = list(a.test or []) + ([lr_hr_test_set(a.lr, a.hr, a.name if not a.test else None)] if a.lr else [])
    fresh = not Path(a.store).exists()
    store = Store(a.store)
    runs = []
    try:
        for test in tests:
            run = evaluate(a.checkpoint, test, store, metrics=a.metrics, tile=a.tile, overlap=a.tile_overlap,
                           out=a.out, which=a.weights, device=pick_device(a.device),
                           test_name=a.name if len(tests) == 1 else None, workers=a.workers)
            print("\n".join(_summary_lines(_Summary.wrap(run.get("summary", [])))))
            print(f"      SR outputs: {run['config']['out_dir']}; evaluate run {run['run_id']} in {store.root}")
            runs.append(run)
    except StudyError:
        if fresh and not runs:
            _remove_skeleton(store.root)  # a refused first evaluate leaves no empty store behind
        raise
    table = mean_table(store, runs)
    if not table.empty:
        from bench.cli.common import _print_table

        print("\nmean over the test images (NR: SR outputs; FR: multi-reference average; "
              "`query` the runs_eval_summary view for every evaluated model):")
        _print_table(table, False)


_SKELETON = {"scores/part-empty-schema.parquet", "cache/parts.json"}


def _remove_skeleton(root: Path) -> None:
    """Remove a store this command created when it still holds nothing but its empty skeleton."""
    import shutil

    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    if files <= _SKELETON:
        shutil.rmtree(root)


def mean_table(store, runs: list[dict]):
    """One row per test set of these evaluate runs: n_images and the mean of each metric they scored
    (from the ``runs_eval_summary`` view, under the runs' own metric configurations), ↑/↓ per metric."""
    import pandas as pd

    from bench.store.views import connect

    con = connect(store)
    rows = []
    for run in runs:
        model, ts = run["config"]["model"], run["config"]["test_set"]
        hashes = {d["metric"]: d["config_hash"] for d in run.get("summary", []) if d.get("config_hash")}
        got = con.execute(
            "SELECT n_images, mean, lower_better FROM runs_eval_summary WHERE checkpoint_sha256 = ? AND weights = ? "
            "AND test_set = ?", [model["checkpoint_sha256"], model["weights"], ts]).fetchone()
        if got is None:
            continue
        n, means, lower = got
        row = {"test_set": ts, "n_images": n}
        for metric in hashes:
            key = metric if metric in means else f"{metric}@{hashes[metric][:8]}"
            if key in means:
                row[f"{metric} {'↓' if lower[key] else '↑'}"] = means[key]
        rows.append(row)
    return pd.DataFrame(rows)


class _Summary:
    """Attribute access over the summary dicts a run record holds (for the shared summary printer)."""

    def __init__(self, d: dict):
        self.__dict__.update({"unavailable": None, "first_errors": [], "skipped_existing": 0, "seconds": 0.0,
                              "scored": 0, "ok": 0, "error": 0, "nan": 0, **d})

    @classmethod
    def wrap(cls, items: list[dict]) -> list[_Summary]:
        return [cls(d) for d in items]


def cmd_compare(a) -> None:
    from bench.report.compare import write_compare
    from bench.store import Store

    paths = write_compare(Store(a.store, create=False), Path(a.out), baseline=a.baseline, test_set=a.test_set,
                          n_boot=a.n_boot, crop_item=a.crop_item)
    for p in paths:
        print(p)


def register(sub) -> None:
    s = sub.add_parser("evaluate", help="run an SR model on a test set; register and score its outputs in the store")
    s.add_argument("--checkpoint", required=True, help="suite training checkpoint (iter_*.pt), a merged FT model, "
                                                       "or any weights file spandrel reads")
    s.add_argument("--test", action="append",
                   help="test set: HGGT-layout folder, a folder with lr_blind_x4/ or lr/ (else LR images in it) and "
                        "optional hr/ (e.g. Set5), or a data_manifests/*.yaml with kind: hggt|folder (repeat for several)")
    s.add_argument("--lr", help="instead of (or besides) --test: a folder of LR images (any name)")
    s.add_argument("--hr", help="with --lr: the references, matched by file name (optional)")
    s.add_argument("--store", required=True)
    s.add_argument("--metrics", help="comma-separated NR and FR metrics (default: musiq, nima, qalign, topiq_nr where "
                                     "available, else the available NR ones; psnr, ssim, stlpips against references)")
    s.add_argument("--tile", type=int, help="tiled inference: tile size in LR pixels (default: whole image)")
    s.add_argument("--tile-overlap", type=int, default=16, help="overlap between tiles in LR pixels")
    s.add_argument("--weights", default="ema", choices=["ema", "net_g"], help="which weights of a suite checkpoint")
    s.add_argument("--name", help="test-set name in the store (default: the YAML's name or the folder name)")
    s.add_argument("-o", "--out", help="folder for SR PNGs (default: STORE/sr)")
    s.add_argument("--device", default="auto")
    s.add_argument("--workers", type=int, help="image-decoding worker processes while scoring (default: 0 on CPU, up to 4 on GPU)")
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("compare", help="table of every evaluated run (+ Gold standard) with deltas and bootstrap CIs, "
                                       "perception-distortion plots and a crop grid (Markdown, CSV, HTML)")
    s.add_argument("--store", required=True)
    s.add_argument("--baseline", help="run name (or name@iteration) the deltas are taken against "
                                      "(default: a run with sampling 'upos', else the first run)")
    s.add_argument("--test-set", help="only this test set (default: every evaluated test set)")
    s.add_argument("--n-boot", type=positive_int, default=2000, help="paired bootstrap resamples for the delta CIs")
    s.add_argument("--crop-item", help="test image for the crop grid (default: the first of each test set)")
    s.add_argument("-o", "--out", required=True)
    s.set_defaults(fn=cmd_compare)
