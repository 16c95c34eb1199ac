"""`evaluate` (an SR model on a test set, into the store) and `compare` (the paper's table and plots)."""

from __future__ import annotations

from pathlib import Path

from bench.cli.common import positive_int


def cmd_evaluate(a) -> None:
    from bench.cli.common import _summary_lines
    from bench.errors import StudyError
    from bench.scoring.engine import pick_device
    from bench.store import Store
    from sr_training.evaluate import evaluate

    if a.tile is not None and a.tile <= 0:
        raise StudyError(f"--tile {a.tile}: expected a positive tile size in LR pixels")
    if a.tile_overlap < 0:
        raise StudyError(f"--tile-overlap {a.tile_overlap}: expected >= 0")
    fresh = not Path(a.store).exists()
    store = Store(a.store)
    try:
        for test in a.test:
            run = evaluate(a.checkpoint, test, store, metrics=a.metrics, tile=a.tile, overlap=a.tile_overlap,
                           out=a.out, which=a.weights, device=pick_device(a.device),
                           test_name=a.name if len(a.test) == 1 else None, workers=a.workers)
            print("\n".join(_summary_lines(_Summary.wrap(run.get("summary", [])))))
            print(f"      SR outputs: {run['config']['out_dir']}; evaluate run {run['run_id']} in {store.root}")
    except StudyError:
        if fresh:
            _remove_skeleton(store.root)  # a refused first evaluate leaves no empty store behind
        raise


_SKELETON = {"scores/part-empty-schema.parquet", "cache/parts.json"}


def _remove_skeleton(root: Path) -> None:
    """Remove a store this command created when it still holds nothing but its empty skeleton."""
    import shutil

    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    if files <= _SKELETON:
        shutil.rmtree(root)


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
    s.add_argument("--test", required=True, action="append",
                   help="test set: HGGT-layout folder, LR folder with optional hr/ (e.g. Set5: hr/, lr_blind_x4/), "
                        "or a data_manifests/*.yaml with kind: hggt|folder (repeat for several)")
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
