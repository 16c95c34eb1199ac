"""`store check`, `store register`: keep a store readable, and register manifests explicitly."""

from __future__ import annotations

import json


def cmd_store_check(a) -> None:
    from bench.store import Store
    from bench.store.parts import check

    store = Store(a.store, create=False)
    found = check(store.root, repair=a.repair)
    if a.json:
        print(json.dumps(found, indent=1))
        return
    if not found:
        print(f"{store.root}: every Parquet file reads completely")
        return
    for f in found:
        print(f"{f['path']}: {f['problem']} -> {f['action']}")
    bad = [f for f in found if f["action"].startswith("moved")]
    print(f"{len(found)} problem(s); {len(bad)} moved to {store.root / 'quarantine'}" if a.repair else
          f"{len(found)} problem(s); bad parts are skipped by every read, `--repair` moves them to quarantine/")


def cmd_store_register(a) -> None:
    from bench.manifests import schema
    from bench.store import Store

    print(Store(a.store).register(schema.read(a.manifest), replace=a.replace).summary())


def register(sub) -> None:
    grp = sub.add_parser("store", help="store maintenance").add_subparsers(dest="sub", required=True)
    s = grp.add_parser("check", help="decode every Parquet file; report unreadable parts and leftover temp files")
    s.add_argument("--store", required=True)
    s.add_argument("--repair", action="store_true", help="move unreadable parts to STORE/quarantine/ (nothing is deleted)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_store_check)

    s = grp.add_parser("register", help="register a manifest's pairs in a store (newest registration wins)")
    s.add_argument("manifest", help="manifest Parquet file (from `iqa-study manifest build`)")
    s.add_argument("--store", required=True)
    s.add_argument("--replace", action="store_true",
                   help="let this manifest's votes replace conflicting rows of registered manifests")
    s.set_defaults(fn=cmd_store_register)
