"""`iqa-study evaluate`: run an SR model on a test set, register the outputs, score them (issue 7 §2).

Test sets (``load_test_set``; SPEC is a folder or a ``data_manifests/*.yaml`` with ``kind``):

* ``hggt``: HGGT layout (images/{original,01..04}, labels/{A,B,C}) with a FIXED LR per group,
  looked up in ``lr:`` (YAML), else ``<root>/Test/Blind_Degradation_Benchmark_LQ/Test-100/Blind_LR``
  (the Test-100 zip, datasets.md 1.6), else ``<split dir>/Blind_LR``. The shipped LR files are
  used as they are; only the SYNTHETIC set (its folder holds SYNTHETIC.md) gets its fixed LR made
  here once, by the one-stage training degradation seeded per group (``make_fixed_lr``).
  References = the effective-Positive GTs (HGGT protocol); every GT is registered with its label.
* ``folder``: LR images (``lr_blind_x4/`` or ``lr/`` inside SPEC, else SPEC itself) with an
  optional HR folder (``hr/``) matched by file name - e.g. Set5. References = the HR (label 'HR').

Metrics: NR on every SR output and on every reference (the "Gold standard", method.md 6),
default the paper's table (musiq, nima, qalign, topiq_nr) where their weights are here, else
every available NR metric (the choice and its reason are printed and recorded). FR against
every reference: psnr, ssim and LPIPS-ST (pyiqa ``stlpips``) under the engine's FR protocol
``hggt`` (bench.scoring.protocol: HGGT's PosNegGTSR/scripts/metrics/calculate_multigt_labeled_*.py,
RGB, crop border 4 for every FR metric; recorded in each score's config key). The per-image
average over the references is the ``eval_fr_multigt`` view.

Idempotent: SR outputs are written to ``OUT/<run>-<sha12>-<weights>/<test set>[-tileN]/<item>.png``;
an output already there whose hash the store holds for this checkpoint is not recomputed, image
rows are content-keyed (bench.store.images) and the engine skips stored score keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench import provenance
from bench.atomic import atomic_write_text
from bench.env import expand_vars
from bench.errors import StudyError
from bench.manifests.schema import file_hash
from bench.paths import inside, safe_component
from bench.progress import progress_bar
from bench.store import Store
from bench.store.images import REFERENCE_LABELS, has_images, register_images
from bench.yamlsafe import load_yaml_file
from sr_training import infer

PAPER_NR = ("musiq", "nima", "qalign", "topiq_nr")
FR_DEFAULT = ("psnr", "ssim", "stlpips")
FR_PROTOCOL = "hggt"  # bench.scoring.protocol: RGB, crop border 4
LR_DIRS = ("lr_blind_x4", "lr")
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class GT:
    path: Path
    gt_index: int | None
    label: str


@dataclass
class TestItem:
    item: str
    group: str
    lr: Path
    gts: list[GT] = field(default_factory=list)


@dataclass
class TestSet:
    name: str
    kind: str
    root: Path
    items: list[TestItem]
    synthetic: bool = False

    @property
    def n_refs(self) -> int:
        return sum(g.label in REFERENCE_LABELS for it in self.items for g in it.gts)


# --- test sets ------------------------------------------------------------------------------------------------------

def _expand(value: str, source: Path) -> str:
    from sr_training.config import missing_variable

    return expand_vars(str(value), lambda name: missing_variable(str(source), name))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT and not p.name.startswith("."))


def fixed_lr(hr: torch.Tensor, index: int, scale: int = 4, seed: int = 0) -> torch.Tensor:
    """The fixed LR of test image number ``index``: the training one-stage degradation (method.md 5,
    sr_training.data.degradation.degrade) with a generator seeded by (seed, index)."""
    from sr_training.data.degradation import degrade

    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, index]).generate_state(1)[0]))
    return degrade(hr, "one_stage", scale, gen)


def make_fixed_lr(layout, out: Path, scale: int = 4, seed: int = 0) -> Path:
    """SYNTHETIC set only: one fixed LR per group (``fixed_lr`` of its original, group index in
    label order); existing files are kept (an LR is never regenerated)."""
    out.mkdir(parents=True, exist_ok=True)
    for i, stem in enumerate(layout.stems()):
        target = out / f"{stem}.png"
        if not target.exists():
            infer.save_png(fixed_lr(infer.load_rgb(layout.original(stem)), i, scale, seed), target)
    return out


def _hggt_set(root: Path, name: str, lr_dir: str | None, source: str) -> TestSet:
    from bench.manifests.hggt import group_table, resolve_layout

    layout = resolve_layout(root, "test")
    synthetic = (root / "SYNTHETIC.md").is_file()
    candidates = ([Path(lr_dir)] if lr_dir else
                  [root / "Test" / "Blind_Degradation_Benchmark_LQ" / "Test-100" / "Blind_LR", root / "Blind_LR"])
    lr = next((c for c in candidates if c.is_dir()), None)
    if lr is None:
        if not synthetic:
            raise StudyError(f"{source}: no fixed LR folder for the HGGT test set (looked in "
                             f"{', '.join(str(c) for c in candidates)}); give it with 'lr:' in a test-set YAML")
        lr = make_fixed_lr(layout, root / "Blind_LR")
        print(f"      SYNTHETIC set: fixed LR inputs (one-stage degradation, seeded per group) in {lr}")
    table = group_table(layout)
    items = []
    for stem, g in table.groupby("group", sort=True):
        lr_path = lr / f"{stem}.png"
        if not lr_path.is_file():
            raise StudyError(f"{lr_path}: missing fixed LR for HGGT group {stem}")
        gts = [GT(layout.original(stem), 0, "Original")]
        gts += [GT(layout.enhanced(stem, r.gt), int(r.gt), r.label) for r in g.itertuples()]
        items.append(TestItem(stem, stem, lr_path, gts))
    return TestSet(name, "hggt", root, items, synthetic)


def _folder_set(root: Path, name: str, lr_dir: str | None, hr_dir: str | None, source: str) -> TestSet:
    if lr_dir:
        lr = Path(lr_dir)
    else:
        lr = next((root / d for d in LR_DIRS if (root / d).is_dir()), root)
    hr = Path(hr_dir) if hr_dir else (root / "hr" if (root / "hr").is_dir() else None)
    if not lr.is_dir():
        raise StudyError(f"{source}: LR folder {lr} does not exist")
    if hr is not None and not hr.is_dir():
        raise StudyError(f"{source}: HR folder {hr} does not exist")
    lrs = _images_in(lr)
    if not lrs:
        tried = (f"LR folder {lr}" if lr_dir else
                 f"LR images in {', '.join(str(root / d) + '/' for d in LR_DIRS)} or {root} itself")
        subdirs = sorted(p.name + "/" for p in root.iterdir() if p.is_dir()) if root.is_dir() and not lr_dir else []
        raise StudyError(f"{source}: no images ({', '.join(IMAGE_EXT)}) found; looked for {tried}"
                         + (f" (it holds {', '.join(subdirs[:6])})" if subdirs else "")
                         + "; name the folders with --lr DIR [--hr DIR]")
    items = []
    for p in lrs:
        gts = []
        if hr is not None:
            match = [h for h in (hr / p.name, *(hr / (p.stem + e) for e in IMAGE_EXT)) if h.is_file()]
            if match:
                gts = [GT(match[0], None, "HR")]
        items.append(TestItem(p.stem, p.stem, p, gts))
    return TestSet(name, "folder", root, items, (root / "SYNTHETIC.md").is_file() or (root.parent / "SYNTHETIC.md").is_file())


def lr_hr_test_set(lr: str | Path, hr: str | Path | None = None, name: str | None = None) -> TestSet:
    """A folder test set from ``--lr DIR [--hr DIR]`` (HR matched by file name). Default name: the
    LR folder's name, or its parent's when the LR folder has one of the usual names (``lr``, ...)."""
    lr = Path(lr)
    if not lr.is_dir():
        raise StudyError(f"--lr {lr}: not a folder")
    root = lr.resolve()
    name = name or (root.parent.name if root.name in LR_DIRS else root.name)
    return _folder_set(root, name, str(lr), str(hr) if hr is not None else None, f"--lr {lr}")


def load_test_set(spec: str | Path, name: str | None = None) -> TestSet:
    """A test set from a folder (HGGT layout or LR[/HR] folder) or a YAML (module docstring)."""
    spec = Path(spec)
    if spec.suffix.lower() in (".yaml", ".yml"):
        if not spec.is_file():
            raise StudyError(f"--test {spec}: file does not exist")
        cfg = load_yaml_file(spec)  # a mapping, or one line (invalid YAML, a list at the top, an alias bomb)
        kind = cfg.get("kind")
        if kind not in ("hggt", "folder"):
            raise StudyError(f"{spec}: field 'kind' is {kind!r}; expected 'hggt' or 'folder'")
        if "root" not in cfg:
            raise StudyError(f"{spec}: field 'root' missing")
        root = Path(_expand(cfg["root"], spec))
        if not root.is_dir():
            raise StudyError(f"{spec}: root {root} is not a folder")
        name = name or cfg.get("name") or spec.stem
        lr_dir = _expand(cfg["lr"], spec) if cfg.get("lr") else None
        if kind == "hggt":
            return _hggt_set(root, name, lr_dir, str(spec))
        return _folder_set(root, name, lr_dir, _expand(cfg["hr"], spec) if cfg.get("hr") else None, str(spec))
    if not spec.is_dir():
        raise StudyError(f"--test {spec}: expected a folder (HGGT layout, or LR images with optional hr/) or a YAML")
    name = name or spec.resolve().name
    if ((spec / "images").is_dir() and (spec / "labels").is_dir()) or (spec / "Test" / "GT" / "Test-100").is_dir():
        return _hggt_set(spec, name, None, f"--test {spec}")
    return _folder_set(spec, name, None, None, f"--test {spec}")


# --- metrics --------------------------------------------------------------------------------------------------------


def default_nr_metrics() -> tuple[list, str]:
    """(specs, why): the paper's NR metrics that are available here, else every available NR metric."""
    from bench.metrics.table import get, select
    from bench.metrics.weights import is_available

    paper = [get(n) for n in PAPER_NR]
    have = [s for s in paper if is_available(s)]
    if have:
        missing = [s.name for s in paper if s not in have]
        return have, ("the paper's NR metrics" + (f" available here (missing weights: {', '.join(missing)})"
                                                  if missing else ""))
    avail = select("available")
    return avail, (f"none of the paper's NR metrics ({', '.join(PAPER_NR)}) has weights here; "
                   f"using every available NR metric: {', '.join(s.name for s in avail)}")


def default_fr_metrics() -> tuple[list, str]:
    from bench.metrics.table import get
    from bench.metrics.weights import is_available

    specs = [get(n) for n in FR_DEFAULT]
    have = [s for s in specs if is_available(s)]
    gone = [s.name for s in specs if s not in have]
    return have, (f"protocol {FR_PROTOCOL}: RGB, crop border 4; against every reference"
                  + (f"; unavailable: {', '.join(gone)}" if gone else ""))


def _split_metrics(text: str | None) -> tuple[list, list, str, str]:
    if not text:
        nr, nr_why = default_nr_metrics()
        fr, fr_why = default_fr_metrics()
        return nr, fr, nr_why, fr_why
    from bench.metrics.table import select

    specs = select(text)
    nr = [s for s in specs if s.mode == "NR"]
    fr = [s for s in specs if s.mode == "FR"]
    return nr, fr, "given with --metrics", "given with --metrics"


# --- the evaluation -------------------------------------------------------------------------------------------------


def _stored_outputs(store: Store, sha: str, weights: str, test_set: str) -> dict[str, str]:
    """{path: image_id} of SR outputs already registered for this checkpoint and test set."""
    if not has_images(store):
        return {}
    from bench.store.views import connect

    rows = connect(store).execute(
        "SELECT path, image_id FROM images WHERE role = 'sr_output' AND checkpoint_sha256 = ? AND weights = ? "
        "AND test_set = ?", [sha, weights, test_set]).fetchall()
    return dict(rows)


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def evaluate(checkpoint: str | Path, test: str | Path | TestSet, store: Store, *, metrics: str | None = None,
             tile: int | None = None, overlap: int = 16, out: str | Path | None = None, which: str = "ema",
             device: str = "cpu", test_name: str | None = None, workers: int | None = None, progress: bool = True) -> dict:
    """Evaluate one model on one test set into ``store``; returns the evaluate run record (with summaries)."""
    from bench.scoring.engine import score_refs
    from bench.scoring.images import ImageRef
    from bench.scoring.options import ScoreOptions

    options = ScoreOptions.resolve(device=device, workers=workers, progress=progress, fr_protocol=FR_PROTOCOL)

    model = infer.load_model(checkpoint, which, device)
    info = model.info
    ts = test if isinstance(test, TestSet) else load_test_set(test, test_name)
    nr, fr, nr_why, fr_why = _split_metrics(metrics)
    fr_capable = "ref_id" in getattr(ImageRef, "__dataclass_fields__", {})
    if fr and not fr_capable:
        fr_why = (f"skipped ({', '.join(s.name for s in fr)}): this scoring engine has no reference support yet "
                  f"(contract C1, bench.scoring.images.ImageRef.ref_id)")
        fr = []
    if fr and ts.n_refs == 0:
        fr_why, fr = f"skipped: test set '{ts.name}' has no references", []
    src = f"--checkpoint {checkpoint}: model"  # run_name/weights come from its config or sidecar JSON
    label = safe_component(f"{safe_component(info['run_name'], f'{src} run_name')}-{info['checkpoint_sha256'][:12]}-"
                           f"{safe_component(info['weights'], f'{src} weights')}", f"{src} output folder")
    safe_component(ts.name, "test set name")
    for it in ts.items:
        safe_component(it.item, f"test set {ts.name}: item")
    out_root = Path(out) if out else store.folder("sr")
    out_dir = inside(out_root / label / (ts.name + (f"-tile{tile}" if tile else "")), out_root, "SR output folder")
    config = {"checkpoint": (infer.BICUBIC if str(checkpoint) == infer.BICUBIC else str(Path(checkpoint).resolve())),
              "model": info, "test_set": ts.name, "test_kind": ts.kind,
              "test_root": str(ts.root.resolve()), "synthetic": ts.synthetic, "tile": tile, "overlap": overlap,
              "out_dir": str(out_dir), "nr_metrics": [s.name for s in nr], "nr_metrics_why": nr_why,
              "fr_metrics": [s.name for s in fr], "fr_metrics_why": fr_why,
              "fr_protocol": FR_PROTOCOL if fr else None, "scoring": options.record()}
    run = provenance.new_run("evaluate", config, device=device, seed=None)
    store.write_run(run)
    print(f"evaluate {label} on {ts.name} ({ts.kind}, {len(ts.items)} images{', SYNTHETIC' if ts.synthetic else ''})")
    print(f"      NR: {', '.join(s.name for s in nr) or 'none'} ({nr_why})")
    print(f"      FR: {', '.join(s.name for s in fr) or 'none'} ({fr_why})")

    stored = _stored_outputs(store, info["checkpoint_sha256"], info["weights"], ts.name)
    model_fields = {k: info.get(k) for k in infer.INFO_FIELDS}
    rows, sr_refs, reused = [], [], 0
    for it in progress_bar(ts.items, desc=f"SR {ts.name}", unit="img", disable=not progress):
        target = out_dir / f"{it.item}.png"
        iid = stored.get(str(target))
        if iid is None or not target.is_file() or file_hash(target) != iid:
            lr = infer.load_rgb(it.lr).to(device)
            sr = infer.upscale(model.net, lr, model.scale, tile, overlap)
            infer.save_png(sr, target)
            iid = file_hash(target)
        else:
            reused += 1
        w, h = _size(target)
        common = {"test_set": ts.name, "item": it.item, "group": it.group, "eval_run_id": run["run_id"],
                  "created_at": provenance.now()}
        rows.append({**common, **model_fields, "image_id": iid, "path": str(target), "role": "sr_output"})
        rows.append({**common, "image_id": file_hash(it.lr), "path": str(it.lr.resolve()), "role": "lr"})
        for g in it.gts:
            gw, gh = _size(g.path)
            if g.label in REFERENCE_LABELS and (gw, gh) != (w, h):
                raise StudyError(f"{g.path}: reference is {gw}x{gh}, the SR output of {it.lr.name} is {w}x{h} "
                                 f"(LR x{model.scale}); expected equal sizes")
            rows.append({**common, "image_id": file_hash(g.path), "path": str(g.path.resolve()), "role": "gt",
                         "gt_index": g.gt_index, "label": g.label})
        sr_refs.append((iid, target, w, h, it))
    register_images(store, rows)
    if reused:
        print(f"      {reused} SR output(s) already in the store for this checkpoint: reused")

    nr_images = [ImageRef(iid, str(p), w, h) for iid, p, w, h, _ in sr_refs]
    seen = {r.image_id for r in nr_images}
    for it in ts.items:  # the Gold standard: NR scores of the references themselves
        for g in it.gts:
            gid = file_hash(g.path)
            if g.label in REFERENCE_LABELS and gid not in seen:
                seen.add(gid)
                nr_images.append(ImageRef(gid, str(g.path), *_size(g.path)))
    jobs = list(nr_images)
    if fr:  # one engine call (one writer per run): NR metrics score each image, FR metrics each (image, ref)
        jobs += [ImageRef(iid, str(p), w, h, ref_id=file_hash(g.path), ref_path=str(g.path))
                 for iid, p, w, h, it in sr_refs for g in it.gts if g.label in REFERENCE_LABELS]
    summaries = score_refs(jobs, nr + fr, store, run=run, options=options) if nr or fr else []
    run["finished_at"] = provenance.now().isoformat(timespec="seconds")
    run["summary"] = [s.__dict__ for s in summaries]
    store.write_run(run)
    atomic_write_text(json.dumps(run, indent=2, default=str), out_dir / "provenance.json")
    return run
