"""`userstudy create`: a 2AFC study of SR models from the store's registered SR outputs.

    STUDY/
      study.json          the design (runs, trials, attention checks, options, seed); written once
      images/<id>.png     every image a rater can see, named by content id (file_hash): SR outputs
                          (cropped if asked), references, degraded copies for the attention checks
      votes.sqlite        raters (token hashes) and their presentation schedules, votes (bench.userstudy.db)
      analysis/, export/  written by `analyse` and `export`

The folder is self-contained: move it to another machine and `serve` it there.

Design:

* Runs: ``--runs A,B[,C...]``: labels as in `compare` (the training run name, ``name@iteration``
  when one name has several evaluated checkpoints) or a unique run name. Test images: those every
  chosen run has an SR output for (the others are left out and counted).
* Trials: every pair of runs on each test image (``pairs='all'``), or each run against
  ``baseline`` (``pairs='baseline'``). A trial is unordered (run_a, run_b) in ``--runs`` order.
* Crop: ``full`` (the file as registered: same bytes, same image id as in the store, so the
  store's scores apply), ``N`` (centred N x N), ``WxH`` (centred) or ``WxH+X+Y`` (offset); the same
  box for every run of a test image. Reference (shown beside, never chosen): ``none``, ``hr``
  (the item's first reference: label Positive/HR, lowest GT index) or ``lr`` (the LR image,
  bicubic to the SR size), cropped the same way.
* Attention checks: ``n_attention`` trials, each an SR output against a heavily degraded copy of
  itself (8x pixelated, then Gaussian blur); the undegraded side is the right answer.
* Per rater (``schedule``, from the seed and the rater's index, saved when the rater is invited):
  the base trials are permuted once per study; rater k gets the cyclic window of
  ``trials_per_rater`` (default: all) starting at k * trials_per_rater, so after n raters every
  trial has been assigned floor or ceil of n * K / N times (balanced). The window is shuffled, left/right
  is balanced (half the trials each way, shuffled); ``repeat_fraction`` (~10 %, at least one
  when > 0) of the trials come again later with the sides swapped (at least one other trial in
  between when possible); the attention checks are mixed in after the first trial.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from bench.atomic import atomic_write_bytes, atomic_write_text
from bench.errors import StudyError

FORMAT = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CROP_RE = re.compile(r"^(?:(\d+)|(\d+)x(\d+)(?:\+(\d+)\+(\d+))?)$")
REFERENCES = ("none", "hr", "lr")
PAIRS = ("all", "baseline")
DEGRADED = "(degraded)"  # the run label of an attention check's degraded side


@dataclass(frozen=True)
class Crop:
    """``None`` width: the full image."""
    width: int | None = None
    height: int | None = None
    x: int | None = None
    y: int | None = None

    @classmethod
    def parse(cls, text: str) -> Crop:
        if text == "full":
            return cls()
        m = _CROP_RE.match(text or "")
        if not m:
            raise StudyError(f"--crop {text!r}: expected full, N (centred square), WxH (centred) or WxH+X+Y")
        if m.group(1):
            w = h = int(m.group(1))
            x = y = None
        else:
            w, h = int(m.group(2)), int(m.group(3))
            x, y = (int(m.group(4)), int(m.group(5))) if m.group(4) is not None else (None, None)
        if w <= 0 or h <= 0:
            raise StudyError(f"--crop {text!r}: width and height must be positive")
        return cls(w, h, x, y)

    def box(self, size: tuple[int, int], where: str) -> tuple[int, int, int, int] | None:
        if self.width is None:
            return None
        W, H = size
        x = (W - self.width) // 2 if self.x is None else self.x
        y = (H - self.height) // 2 if self.y is None else self.y
        if x < 0 or y < 0 or x + self.width > W or y + self.height > H:
            raise StudyError(f"--crop {self}: the box {self.width}x{self.height}+{x}+{y} does not fit {where} "
                             f"({W}x{H})")
        return (x, y, x + self.width, y + self.height)

    def __str__(self) -> str:
        if self.width is None:
            return "full"
        off = "" if self.x is None else f"+{self.x}+{self.y}"
        return f"{self.width}x{self.height}{off}"


# --- the store's SR outputs -------------------------------------------------------------------------------------------


def store_outputs(store, test_set: str):
    """(SR-output rows with a ``label`` column, references, LR rows) of ``test_set`` from the ``images`` view."""
    from bench.store.views import connect

    con = connect(store)
    sr = con.execute("SELECT * FROM images WHERE role = 'sr_output' AND test_set = ?", [test_set]).df()
    if sr.empty:
        sets = [r[0] for r in con.execute("SELECT DISTINCT test_set FROM images WHERE role = 'sr_output' "
                                          "ORDER BY 1").fetchall()]
        raise StudyError(f"{store.root}: no SR outputs registered for test set {test_set!r} "
                         f"(evaluated test sets: {', '.join(sets) or 'none; run `iqa-study evaluate` first'})")
    sr = sr.drop(columns=["label"])  # the GT label column (null for SR outputs); "label" is the run's label here
    runs = sr.drop_duplicates(["checkpoint_sha256", "weights"]).copy()
    from bench.report.compare import run_labels

    runs["label"] = run_labels(runs.reset_index(drop=True))  # the same rule as `compare`
    sr = sr.merge(runs[["checkpoint_sha256", "weights", "label"]], on=["checkpoint_sha256", "weights"])
    refs = con.execute("SELECT * FROM eval_refs WHERE test_set = ? ORDER BY item, gt_index NULLS FIRST, ref_id",
                       [test_set]).df()
    lrs = con.execute("SELECT * FROM images WHERE role = 'lr' AND test_set = ?", [test_set]).df()
    return sr, runs, refs, lrs


def _resolve(runs, name: str, option: str):
    hit = runs[(runs["label"] == name) | (runs["run_name"] == name)]
    if len(hit) != 1:
        what = "matches several evaluated runs (use a label)" if len(hit) else "matches no evaluated run"
        raise StudyError(f"{option}: {name!r} {what}; evaluated runs: {', '.join(sorted(runs['label']))}")
    return hit.iloc[0]


def pick_runs(runs, wanted: list[str]) -> list[dict]:
    """The runs named by ``wanted`` (labels, or unique run names), in that order."""
    import pandas as pd

    out = []
    for name in wanted:
        r = _resolve(runs, name, "--runs")
        out.append({"label": r["label"], **{k: (None if pd.isna(r[k]) else (int(r[k]) if k == "iteration" else r[k]))
                                            for k in ("run_name", "arch", "sampling", "ft_variant", "iteration",
                                                      "checkpoint_sha256", "weights", "run_dir")}})
    labels = [r["label"] for r in out]
    if len(set(labels)) != len(labels):
        raise StudyError(f"--runs names a run twice: {', '.join(wanted)}")
    if len(out) < 2:
        raise StudyError(f"--runs {','.join(wanted)}: a 2AFC study needs at least two runs")
    return out


# --- images ---------------------------------------------------------------------------------------------------------


class _Images:
    """Writes images into STUDY/images/ by content id and records them for study.json."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.meta: dict[str, dict] = {}

    def add_bytes(self, data: bytes, size: tuple[int, int], role: str, **info) -> str:
        iid = hashlib.sha256(data).hexdigest()[:32]  # = bench.manifests.schema.file_hash of the written file
        target = self.folder / f"{iid}.png"
        if not target.exists():
            atomic_write_bytes(data, target)
        self.meta.setdefault(iid, {"file": f"images/{iid}.png", "width": size[0], "height": size[1], "role": role,
                                   **info})
        return iid

    def add_array(self, im: Image.Image, role: str, **info) -> str:
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return self.add_bytes(buf.getvalue(), im.size, role, **info)

    def add_file(self, path: Path, image_id: str, crop: Crop, role: str, where: str, **info) -> str:
        if not path.is_file():
            raise StudyError(f"{path}: {where} is registered in the store but the file is missing")
        if crop.width is None and path.suffix.lower() == ".png":
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest()[:32] != image_id:
                raise StudyError(f"{path}: {where} changed since it was registered (content id {image_id[:12]}...)")
            with Image.open(io.BytesIO(data)) as im:
                size = im.size
            return self.add_bytes(data, size, role, source_image_id=image_id, **info)
        with Image.open(path) as im:
            im = im.convert("RGB")
            box = crop.box(im.size, where)
            return self.add_array(im.crop(box) if box else im, role, source_image_id=image_id, **info)


def degrade(im: Image.Image) -> Image.Image:
    """The attention check's bad side: 8x pixelated, then blurred (unmistakably worse)."""
    w, h = im.size
    small = im.resize((max(1, w // 8), max(1, h // 8)), Image.Resampling.BOX)
    return small.resize((w, h), Image.Resampling.NEAREST).filter(ImageFilter.GaussianBlur(max(2.5, min(w, h) / 32)))


# --- create ---------------------------------------------------------------------------------------------------------


def create(store, test_set: str, runs: list[str], out: Path, *, pairs: str = "all", baseline: str | None = None,
           crop: str = "full", reference: str = "none", repeat_fraction: float = 0.1, n_attention: int = 3,
           trials_per_rater: int | None = None, seed: int = 0, name: str | None = None,
           max_items: int | None = None) -> Path:
    """Build STUDY at ``out`` from the store's SR outputs; returns the path of study.json."""
    from bench import provenance
    from bench.userstudy import db

    out = Path(out)
    name = name or out.resolve().name
    if not NAME_RE.match(name):
        raise StudyError(f"study name {name!r}: expected letters, digits, '_', '.', '-' (at most 64), "
                         f"starting with a letter or digit (give --name)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StudyError(f"-o {out}: exists and is not an empty folder; a study is created once (pick a new folder)")
    if pairs not in PAIRS:
        raise StudyError(f"--pairs {pairs!r}: expected one of {', '.join(PAIRS)}")
    if reference not in REFERENCES:
        raise StudyError(f"--reference {reference!r}: expected one of {', '.join(REFERENCES)}")
    if not 0 <= repeat_fraction <= 1:
        raise StudyError(f"--repeat-fraction {repeat_fraction}: expected a fraction in [0, 1]")
    if n_attention < 0:
        raise StudyError(f"--attention {n_attention}: expected >= 0")
    if trials_per_rater is not None and trials_per_rater <= 0:
        raise StudyError(f"--trials-per-rater {trials_per_rater}: expected a positive number")
    box = Crop.parse(crop)
    sr, all_runs, refs, lrs = store_outputs(store, test_set)
    chosen = pick_runs(all_runs, runs)
    labels = [r["label"] for r in chosen]
    if pairs == "baseline":
        if baseline is None:
            raise StudyError("--pairs baseline needs --baseline RUN (one of --runs)")
        base = _resolve(all_runs, baseline, "--baseline")["label"]
        if base not in labels:
            raise StudyError(f"--baseline {baseline!r} is not one of --runs ({', '.join(labels)})")
        run_pairs = [(base, lab) for lab in labels if lab != base]
    else:
        if baseline is not None:
            raise StudyError("--baseline goes with --pairs baseline")
        run_pairs = list(itertools.combinations(labels, 2))
    sr = sr[sr["label"].isin(labels)]
    per = sr.drop_duplicates(["label", "item", "image_id"]).groupby(["label", "item"]).size()
    if (per > 1).any():
        lab, item = per[per > 1].index[0]
        raise StudyError(f"run {lab} has {int(per.max())} different SR outputs for {item!r} of test set {test_set} "
                         f"(evaluated with different --tile?); keep one store per setting")
    have = sr.groupby("item")["label"].nunique()
    items = sorted(have[have == len(labels)].index)
    left_out = sorted(set(have.index) - set(items))
    if not items:
        raise StudyError(f"test set {test_set}: no test image has SR outputs of every run in --runs")
    if max_items is not None:
        items = items[:max_items]
    if reference == "hr" and not set(items) <= set(refs["item"]):
        missing = sorted(set(items) - set(refs["item"]))
        raise StudyError(f"--reference hr: test set {test_set} has no reference (HR/Positive) for {missing[0]!r}")
    if reference == "lr" and not set(items) <= set(lrs["item"]):
        missing = sorted(set(items) - set(lrs["item"]))
        raise StudyError(f"--reference lr: test set {test_set} has no LR image registered for {missing[0]!r}")

    out.mkdir(parents=True, exist_ok=True)
    try:
        images = _Images(out / "images")
        shown: dict[tuple[str, str], str] = {}
        ref_of: dict[str, str | None] = {}
        groups: dict[str, str] = {}
        for item in items:
            rows = sr[sr["item"] == item].drop_duplicates("label").set_index("label")
            groups[item] = str(rows["group"].iloc[0]) if rows["group"].notna().any() else item
            for lab in labels:
                r = rows.loc[lab]
                shown[(item, lab)] = images.add_file(Path(r["path"]), r["image_id"], box, "sr_output",
                                                     f"SR output of {lab} for {item!r}", item=item, run=lab)
            sizes = {(images.meta[shown[(item, lab)]]["width"], images.meta[shown[(item, lab)]]["height"])
                     for lab in labels}
            size = next(iter(sizes))
            if len(sizes) > 1:
                raise StudyError(f"test image {item!r}: the runs' SR outputs differ in size; a 2AFC trial needs "
                                 f"equal sizes")
            ref_of[item] = _reference(images, reference, item, refs, lrs, box, sr[sr["item"] == item], size)
        trials = []
        for item in items:
            for a, b in run_pairs:
                trials.append({"trial_id": f"t{len(trials) + 1:04d}", "item": item, "group": groups[item],
                               "run_a": a, "run_b": b, "image_a": shown[(item, a)], "image_b": shown[(item, b)],
                               "reference": ref_of[item]})
        rng = np.random.default_rng([seed, 0xA77E])
        attention = []
        order = rng.permutation(len(items))  # the checks spread over the test images, then cycle
        picks = [(items[order[i % len(items)]], labels[int(rng.integers(len(labels)))]) for i in range(n_attention)]
        for item, lab in picks:
            good = shown[(item, lab)]
            with Image.open(out / images.meta[good]["file"]) as im:
                bad = images.add_array(degrade(im.convert("RGB")), "attention", item=item, run=lab,
                                       degraded_from=good)
            attention.append({"trial_id": f"c{len(attention) + 1:03d}", "item": item, "group": groups[item],
                              "run": lab, "image": good, "degraded": bad, "reference": ref_of[item]})
        study = {
            "format": FORMAT, "name": name, "dataset": f"userstudy:{name}",
            "created_at": provenance.now().isoformat(timespec="seconds"), "seed": int(seed),
            "source": {"store": str(Path(store.root).resolve()), "test_set": test_set, "items_left_out": left_out},
            "runs": chosen,
            "design": {"pairs": pairs, "baseline": run_pairs[0][0] if pairs == "baseline" else None,
                       "crop": str(box), "reference": reference, "repeat_fraction": float(repeat_fraction),
                       "n_attention": int(n_attention), "trials_per_rater": trials_per_rater},
            "items": items, "trials": trials, "attention": attention, "images": images.meta,
        }
        path = atomic_write_text(json.dumps(study, indent=1) + "\n", out / "study.json")
        db.init(out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # nothing half-made is left to be served
        raise
    return path


def _reference(images: _Images, reference: str, item: str, refs, lrs, box: Crop, sr_rows, size) -> str | None:
    if reference == "none":
        return None
    if reference == "hr":
        r = refs[refs["item"] == item].iloc[0]
        path, iid = Path(r["ref_path"]), r["ref_id"]
        with Image.open(path) as im:
            if im.size != size and box.width is None:
                raise StudyError(f"{path}: reference is {im.size[0]}x{im.size[1]}, the SR outputs of {item!r} are "
                                 f"{size[0]}x{size[1]}")
        return images.add_file(path, iid, box, "reference", f"reference of {item!r}", item=item, kind="hr")
    r = lrs[lrs["item"] == item].iloc[0]
    full = sr_rows.iloc[0]
    with Image.open(full["path"]) as im:
        full_size = im.size
    with Image.open(r["path"]) as im:
        up = im.convert("RGB").resize(full_size, Image.Resampling.BICUBIC)
    crop_box = box.box(up.size, f"LR of {item!r}")
    return images.add_array(up.crop(crop_box) if crop_box else up, "reference", item=item, kind="lr_bicubic",
                            source_image_id=r["image_id"])


def load(study_dir: str | Path) -> dict:
    """study.json of STUDY (one-line errors for a folder that is not a study)."""
    path = Path(study_dir) / "study.json"
    if not path.is_file():
        raise StudyError(f"{study_dir}: not a user study (no study.json; create one with `iqa-study userstudy create`)")
    try:
        study = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StudyError(f"{path}: not readable JSON ({exc})") from None
    if study.get("format") != FORMAT:
        raise StudyError(f"{path}: format {study.get('format')!r}, this version reads format {FORMAT}")
    return study


# --- per-rater schedule -----------------------------------------------------------------------------------------------


def schedule(study: dict, rater_index: int) -> list[dict]:
    """The presentations of rater ``rater_index`` (0-based), in order; deterministic in (seed, index)."""
    trials, seed = study["trials"], int(study["seed"])
    n = len(trials)
    k = min(study["design"]["trials_per_rater"] or n, n)
    perm = np.random.default_rng([seed, 1]).permutation(n)
    start = (rater_index * k) % n
    block = [trials[perm[(start + j) % n]] for j in range(k)]
    rng = np.random.default_rng([seed, 2, rater_index])
    mains = [block[i] for i in rng.permutation(k)]
    swaps = rng.permutation(np.arange(k) % 2 == 1)  # half each way (one more unswapped when k is odd)
    frac = study["design"]["repeat_fraction"]
    n_rep = 0 if frac <= 0 else min(k, max(1, round(frac * k)))
    rep_of = sorted(rng.choice(k, size=n_rep, replace=False).tolist()) if n_rep else []
    # each extra presentation goes after `j` main trials: repeats at least 2 after their original
    extras: list[tuple[int, int, dict]] = []
    for i in rep_of:
        lo = min(i + 2, k)
        extras.append((int(rng.integers(lo, k + 1)), len(extras), {"kind": "repeat", "of": i}))
    for check in study["attention"]:
        extras.append((int(rng.integers(min(1, k), k + 1)), len(extras),
                       {"kind": "attention", "check": check, "swap": bool(rng.random() < 0.5)}))
    extras.sort(key=lambda e: (e[0], e[1]))
    out: list[dict] = []
    main_pres: list[dict] = []

    def main(i: int) -> dict:
        t = mains[i]
        left, right = (("b", "a") if swaps[i] else ("a", "b"))
        return {"kind": "main", "trial_id": t["trial_id"], "left_run": t[f"run_{left}"], "right_run": t[f"run_{right}"],
                "left_image": t[f"image_{left}"], "right_image": t[f"image_{right}"], "reference": t["reference"],
                "correct": None, "repeat_of": None}

    e = 0
    for j in range(k + 1):
        while e < len(extras) and extras[e][0] == j:
            x = extras[e][2]
            if x["kind"] == "repeat":
                m = main_pres[x["of"]]
                out.append({**m, "kind": "repeat", "left_run": m["right_run"], "right_run": m["left_run"],
                            "left_image": m["right_image"], "right_image": m["left_image"], "repeat_of": m["pres_id"]})
            else:
                c = x["check"]
                sides = [(c["degraded"], DEGRADED), (c["image"], c["run"])]
                if x["swap"]:
                    sides.reverse()
                out.append({"kind": "attention", "trial_id": c["trial_id"], "left_run": sides[0][1],
                            "right_run": sides[1][1], "left_image": sides[0][0], "right_image": sides[1][0],
                            "reference": c["reference"], "correct": "left" if sides[0][1] != DEGRADED else "right",
                            "repeat_of": None})
            out[-1]["pres_id"] = f"p{len(out):04d}"
            e += 1
        if j < k:
            out.append(main(j))
            out[-1]["pres_id"] = f"p{len(out):04d}"
            main_pres.append(out[-1])
    for seq, p in enumerate(out, start=1):
        p["seq"] = seq
    return out
