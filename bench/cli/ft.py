"""`merge`: an FT run's LoRA adapter merged into its base -> a plain model file for inference.

(`iqa-study train --config ft_*.yaml` runs FT itself: a config with an ``ft:`` section.)
"""

from __future__ import annotations

import json


def cmd_merge(a) -> None:
    from sr_training.ft.merge import merge, resolve_ft_checkpoint

    ckpt = resolve_ft_checkpoint(a.run, a.checkpoint, best=a.guard_best)
    record = merge(ckpt, a.output, base=a.base)
    print(f"merged {ckpt} (iteration {record['iteration']}, adapter sha256 {record['adapter_sha256'][:16]}) into "
          f"{record['output']}; record in {record['output']}.json")
    if a.json:
        print(json.dumps(record, indent=1))


def register(sub) -> None:
    s = sub.add_parser("merge", help="merge an FT run's LoRA adapter into its base: a plain model for inference")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="FT run folder (its newest checkpoints/iter_*.pt)")
    src.add_argument("--checkpoint", help="one FT checkpoint file")
    s.add_argument("-o", "--out", "--output", dest="output", required=True, help="output .pth (plain state dict; a .json record beside it)")
    s.add_argument("--guard-best", action="store_true",
                   help="with --run: merge checkpoints/guard_best.pt (kept by the reward-hacking guard)")
    s.add_argument("--base", help="the base file, when it moved since training (its sha256 must match)")
    s.add_argument("--json", action="store_true", help="also print the record as JSON")
    s.set_defaults(fn=cmd_merge)
