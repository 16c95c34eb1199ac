#!/usr/bin/env python
"""Rebuild a shipped tiny PSNR-oriented init (sr_training/pretrained/), with its held-out check.

    python scripts/make_psnr_init.py --arch swinir --data ../shared/data/bsd100/hr
    python scripts/make_psnr_init.py --arch rrdb   --data ../shared/data/bsd100/hr

Trains sr_training/configs/psnr_init_<arch>_tiny.yaml on the folder (auto-resumes in --work), exports the EMA
weights to sr_training/pretrained/psnr_init_<arch>_tiny.safetensors and writes its record (.json beside it):
config, training file list hash, iterations, wall time, machine, git commit, and PSNR / SSIM / LPIPS-ST against
bicubic on the held-out sets (Set14 when --set14 is given or ../shared has it, and the demo's held-out photos).
See docs/pretrained.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    shared = Path(os.environ.get("IQA_STUDY_SHARED", ROOT.parent / "shared")) / "data"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, choices=["swinir", "rrdb"])
    p.add_argument("--data", type=Path, default=shared / "bsd100" / "hr", help="folder of HR training photographs")
    p.add_argument("--val", type=Path, default=shared / "set5", help="validation folder (hr/, lr_blind_x4/); "
                   "skipped when absent")
    p.add_argument("--set14", type=Path, default=shared / "set14" / "hr", help="Set14 HR folder (held-out test)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "psnr_init", help="training run, test sets, store")
    p.add_argument("--out", type=Path, default=ROOT / "sr_training" / "pretrained", help="where the weights go")
    p.add_argument("--eval-only", action="store_true", help="export and evaluate the last checkpoint, no training")
    p.add_argument("--note", help="how the training was run (recorded), e.g. threads and machine load")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. schedule.total_iters=500")
    a = p.parse_args(argv)

    from bench.demo import build_heldout
    from bench.errors import StudyError
    from sr_training import psnr_init

    try:
        heldout = {}
        if a.set14.is_dir():
            heldout["set14"] = psnr_init.heldout_from_folder(a.set14, a.work / "set14")
        else:
            print(f"Set14 not found at {a.set14}: held-out check on the demo photos only", file=sys.stderr)
        heldout["demo_heldout"] = build_heldout(a.work / "demo_heldout")
        record = psnr_init.build(a.arch, a.data, a.work, a.out, a.val if (a.val / "hr").is_dir() else None, heldout,
                                 a.overrides, train=not a.eval_only, note=a.note)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(psnr_init.summary(record))
    return 0 if record["acceptance"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
