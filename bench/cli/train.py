"""`train`, `train-data`, `demo`."""

from __future__ import annotations

import json
from pathlib import Path

from bench.cli.common import nonneg_int, positive_int


def cmd_train(a) -> None:
    from bench.scoring.options import pick_device
    from sr_training.config import load_config
    from sr_training.trainer import Trainer

    if a.device != "auto":
        pick_device(a.device)  # one line for a device torch does not know or this machine lacks
    overrides = list(a.overrides)
    if a.selection:
        from sr_training.config import selection_overrides

        overrides = [*selection_overrides(a.config, overrides, a.selection), *overrides]
        print(f"--selection {a.selection}: {' '.join(overrides[:len(overrides) - len(a.overrides)])}")
    cfg = load_config(a.config, overrides)
    if cfg.ft is not None:  # FT stage (LoRA + -lambda_Q*Q): sr_training/ft
        from sr_training.ft.trainer import FTTrainer as Trainer
    result = Trainer(cfg, Path(a.out), device=None if a.device == "auto" else a.device).fit(
        auto_resume=a.auto_resume, allow_config_change=a.allow_config_change)
    if int(__import__("os").environ.get("RANK", 0)) == 0:
        print(f"{cfg.name}: done; last losses {json.dumps({k: round(v, 4) for k, v in result['last'].items()})}; "
              f"GT index chosen {result['chosen']}; {result['sec_per_iter']:.3f} s/iter; outputs in {a.out}")


def cmd_train_data(a) -> None:
    from sr_training.data.synthetic import build_synthetic_hggt

    out = build_synthetic_hggt(a.out, groups_per_photo=a.groups_per_photo, size=a.size, seed=a.seed,
                               photos=a.photos, val_photos=a.val_photos)
    origin = f"real photographs of {a.photos}" if a.photos else "scikit-image's bundled photographs"
    print(f"wrote a SYNTHETIC multi-GT set in the HGGT layout to {out} (originals: {origin}; enhanced GTs and "
          f"labels SYNTHETIC)")


def cmd_demo(a) -> None:
    from bench.demo import run_demo

    run_demo(Path(a.out), metrics=a.metrics)


def register(sub) -> None:
    s = sub.add_parser("train", help="train an SR model (sr_training): --config FILE --out DIR [key=value ...]")
    s.add_argument("--config", required=True,
                   help="YAML config file, or the name of a config shipped in the package (e.g. smoke_swinir_upos)")
    s.add_argument("--out", required=True)
    s.add_argument("--auto-resume", action="store_true",
                   help="continue from the newest loadable checkpoint in --out (without it, an existing --out is "
                        "archived to <out>_archived_<time> and training starts afresh)")
    s.add_argument("--allow-config-change", action="store_true",
                   help="resume even though the config differs from the checkpoint's (recorded in provenance.json)")
    s.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK if available, else cpu), cpu, cuda:N")
    s.add_argument("--selection", help="selection.json from `iqa-study select`: the sampling metric (sma/smp/amo) "
                                       "and, for an FT config, the reward (and the guard's metrics) come from it, "
                                       "whatever metric the config pins")
    s.add_argument("overrides", nargs="*", help="config overrides, e.g. data.batch_size=4 sampling.tau=2")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("train-data", help="build the SYNTHETIC multi-GT set (HGGT layout) for demos and tests")
    s.add_argument("kind", choices=["synthetic"], help="what to build (only the SYNTHETIC multi-GT set)")
    s.add_argument("out")
    s.add_argument("--groups-per-photo", type=positive_int, default=4, help="groups cut from each photograph")
    s.add_argument("--size", type=positive_int, default=128, help="side of each square group image in pixels")
    s.add_argument("--seed", type=nonneg_int, default=0)
    s.add_argument("--photos", help="folder of real photographs to cut the originals from (e.g. BSD100 or DIV2K HR); "
                                    "default: scikit-image's bundled ones. The enhanced GTs and labels stay SYNTHETIC")
    s.add_argument("--val-photos", type=positive_int, help="val crops from only the first N photographs (default: all)")
    s.set_defaults(fn=cmd_train_data)

    s = sub.add_parser("demo", help="the main job on the embedded offline sample")
    s.add_argument("--out", default="runs/demo")
    s.add_argument("--metrics", default="piqe,entropy,niqe")
    s.set_defaults(fn=cmd_demo)
