"""`manifest`, `score`, `query`, `agree`: data in, scores out, agreement."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.cli.common import _print_table, _score_opts, agreement_text, nonneg_int, positive_int
from bench.errors import StudyError


def _importer_parser() -> argparse.ArgumentParser:
    """One sub-parser per importer; ``--help`` shows the importer's docstring (the layout it expects)."""
    import inspect

    from bench.manifests import hggt, sample, sbs180k, votes

    def add(name: str, help: str, *docs) -> argparse.ArgumentParser:
        text = "\n\n".join(inspect.cleandoc(d.__doc__) for d in docs if d.__doc__)
        return sub.add_parser(name, help=help, description=text, formatter_class=argparse.RawDescriptionHelpFormatter)

    p = argparse.ArgumentParser(prog="iqa-study manifest build")
    sub = p.add_subparsers(dest="importer", required=True, metavar="IMPORTER")
    s = add("sr2afc", "SR 2AFC vote folder (votes.csv + sr/)", votes.sr2afc)
    s.add_argument("root", help="folder holding votes.csv and sr/")
    s = add("pairs-csv", "generic CSV image_a,image_b,votes_a,votes_b[,pair_id,split,group,kind,pref]", votes.pairs_csv)
    s.add_argument("file", help="the votes CSV (UTF-8)")
    s.add_argument("--root", required=True, help="folder the image paths in the CSV are relative to")
    s.add_argument("--dataset", help="dataset name (default: the CSV's 'dataset' column, else its file name)")
    s = add("hggt", "HGGT dataset root (Train/, Test/) or a split folder with images/ labels/", hggt, hggt.hggt)
    s.add_argument("root", help="HGGT root (holding Train/ and Test/) or one split folder (images/, labels/)")
    s.add_argument("--split", choices=["train", "test"], default="test", help="split under an HGGT root (default: test)")
    s = add("sbs180k", "SBS180K in the documented expected layout", sbs180k)
    s.add_argument("root", help="folder holding pairs.parquet or pairs.csv and the images")
    s = add("sample", "embedded SYNTHETIC offline sample, images written to OUT", sample)
    s.add_argument("out", help="folder to write the images (and, without -o, manifest.parquet) into")
    s.add_argument("--seed", type=nonneg_int, default=0, help="random seed of the synthetic degradations (default: 0)")
    return p


def build_manifest(importer_args: list[str], config: str | None):
    from bench.manifests.config import IMPORTERS, build_from_config, run_importer

    if config:
        return build_from_config(config)
    if not importer_args:
        raise StudyError(f"manifest build: give --config FILE or an importer ({', '.join(IMPORTERS)})")
    a = _importer_parser().parse_args(importer_args)
    return run_importer(a.importer, getattr(a, "root", None) or a.out, file=getattr(a, "file", None),
                        dataset=getattr(a, "dataset", None), split=getattr(a, "split", "test"),
                        seed=getattr(a, "seed", 0))


def cmd_manifest_build(a) -> None:
    from bench.manifests import schema
    from bench.store import Store

    # -o / --store may also follow the importer's own arguments (`manifest build sr2afc ROOT -o OUT`)
    trailing = argparse.ArgumentParser(add_help=False)
    trailing.add_argument("-o", "--out", "--output", dest="output")
    trailing.add_argument("--store")
    late, importer_args = trailing.parse_known_args(a.importer_args)
    a.output, a.store = a.output or late.output, a.store or late.store
    # check the output before any image is read, so a bad -o never costs a long import
    out = a.output or (Path(importer_args[1]) / "manifest.parquet"
                       if importer_args[:1] == ["sample"] and len(importer_args) > 1 else None)
    if out is None and not any(h in importer_args for h in ("-h", "--help")):
        raise StudyError("manifest build: -o OUT.parquet is required")
    if out is not None and Path(out).is_dir():
        raise StudyError(f"manifest build: -o {out} is a directory; expected a file path such as {Path(out) / 'manifest.parquet'}")
    df = build_manifest(importer_args, a.config)
    schema.write(df, out)
    meta = df.attrs["iqa_study"]
    counts = df["pref"].value_counts().to_dict()
    kinds = df["kind"].value_counts().to_dict() if "kind" in df.columns else {"human": len(df)}
    print(f"{out}: {len(df)} pairs of dataset '{meta['dataset']}'"
          f"{' (SYNTHETIC preferences)' if meta['synthetic'] else ''}; pref {counts}; kind {kinds}; root {meta['root']}")
    if meta.get("merged_rows"):
        print(f"merged {meta['merged_rows']} row(s) naming an image pair already listed into that pair "
              f"(votes summed, orientation-aware): {len(df)} pairs")
    if meta.get("n_unreadable_images"):
        first = next(iter(meta["unreadable_examples"].items()))
        print(f"WARNING: {meta['n_unreadable_images']} image(s) could not be read (kept; scoring records them as "
              f"errors), e.g. {first[0]}: {first[1]}")
    if a.store:
        print(f"registered in {a.store} as manifest {Store(a.store).register_manifest(schema.read(out))}")


# --- scoring / queries -------------------------------------------------------------------


def cmd_score(a) -> None:
    from bench.metrics.table import select
    from bench.scoring.report import summary_lines
    from bench.store import Store

    if a.manifest and a.images:
        raise StudyError("score: give --manifest (pair study) or --images (folder/file), not both")
    if not (a.manifest or a.images):
        raise StudyError("score: give --manifest FILE or --images DIR_OR_FILE")
    if a.ref and not a.images:
        raise StudyError("score: --ref goes with --images (a manifest has no references)")
    if a.root and not a.manifest:
        raise StudyError("score: --root goes with --manifest")
    if not a.metrics.strip(" ,"):
        raise StudyError("score: --metrics is empty; give names (e.g. piqe,niqe) or study | available | all")
    cap = a.pixel_cap
    if cap != "auto":
        try:
            cap = int(cap)
        except ValueError:
            raise StudyError(f"--pixel-cap {cap!r}: expected an integer >= 0 or 'auto'") from None
    # every value resolved and checked once, before any work; the same object is the run's recorded config
    opts = _score_opts(a, pixel_cap=cap, retry_failed=a.retry_failed, retries=a.retries,
                       max_consecutive_errors=a.max_consecutive_errors, flush_rows=a.flush_rows,
                       fr_protocol=a.fr_protocol)["options"]
    metrics = select(a.metrics)
    if not metrics:
        raise StudyError(f"score: --metrics {a.metrics!r} selects no metric")
    if a.images:
        _score_images(a, metrics, opts)
    else:
        from bench.manifests import schema
        from bench.scoring.engine import score_manifest

        if not a.store or a.no_store:
            raise StudyError("score --manifest: give --store DIR (the pairs' scores are what `agree` and the study read)")
        manifest = schema.read(a.manifest, root=a.root)
        run, summaries = score_manifest(manifest, metrics, Store(a.store), options=opts)
        print(f"run {run['run_id']} on {run['device_name']}: {len(manifest)} pairs, store {a.store}")
        print("\n".join(summary_lines(summaries)))
        _failures_line(summaries, a.format)


def _failures_line(summaries, fmt: str) -> None:
    failures = sum(s.error + s.nan for s in summaries)
    if failures and fmt == "table":
        print(f"{failures} image scores failed (rows kept with status/error; transient ones are retried on the "
              f"next run, the rest with --retry-failed)")


def _score_images(a, metrics, opts) -> None:
    """Folder mode, as pyiqa's CLI: no --store needed (a scratch store in the cache keeps scores for
    reruns; --no-store a temporary one); the table ends with a mean row and marks ↑/↓ per metric; a
    requested metric that cannot run here is a non-zero exit unless --allow-missing."""
    import tempfile

    from bench import env
    from bench.scoring.folder import score_folder
    from bench.scoring.report import display_table, summary_lines
    from bench.store import Store

    if a.no_store and a.store:
        raise StudyError("score: --no-store and --store exclude each other")
    with tempfile.TemporaryDirectory(prefix="iqa-study-score-") as tmp:
        store = Path(tmp) if a.no_store else Path(a.store) if a.store else env.cache_dirs().study / "scratch-store"
        run, summaries, table, unmatched = score_folder(a.images, metrics, Store(store), ref_dir=a.ref, options=opts)
    where = "none (--no-store)" if a.no_store else str(store) + ("" if a.store else " (scratch; --store DIR to keep)")
    if a.format == "table":
        print(f"run {run['run_id']} on {run['device_name']}: {len(table)} images, store {where}")
        print("\n".join(summary_lines(summaries)))
        if unmatched:
            print(f"{unmatched} image(s) have no reference in {a.ref} (matched by file name): no FR scores")
        print()
        shown, notes = display_table(table)
        _print_table(shown, False)
        for note in notes:
            print(note)
    elif a.format == "csv":
        table.to_csv(sys.stdout, index=False)
    else:
        _print_table(table, True)
    _failures_line(summaries, a.format)
    missing = [s.metric for s in summaries if s.unavailable]
    if missing and not a.allow_missing and a.metrics.strip() != "available":
        raise StudyError(f"score: {len(missing)} requested metric(s) could not run here and have no column: "
                         f"{', '.join(missing)} (`iqa-study weights status --missing` lists why; "
                         f"--allow-missing exits 0)")

def cmd_query(a) -> None:
    import duckdb

    from bench.store import Store

    # read-only: the SQL can read the store's views and nothing else (no COPY/ATTACH/file access)
    con = Store(a.store, create=False, read_only=True).connect(include_inferred=a.include_inferred)
    try:
        df = con.execute(a.sql).df()
    except duckdb.Error as exc:
        raise StudyError(f"query failed: {duck_reason(exc)}") from None
    _print_table(df, a.json)


def duck_reason(exc: Exception) -> str:
    """The one line that says why DuckDB refused: a refusal raised by the store's confined file system
    reaches DuckDB as a Python traceback text, whose last exception line is the reason."""
    import re

    lines = str(exc).splitlines()
    if lines and lines[0].startswith("Traceback"):
        for line in reversed(lines):
            m = re.match(r"^(\w+(?:Error|Exception)): (.*)$", line)
            if m:
                return m.group(2) if m.group(1) == "PermissionError" else f"{m.group(1)}: {m.group(2)}"
    return lines[0] if lines else type(exc).__name__


def cmd_agree(a) -> None:
    from bench.manifests import schema
    from bench.store import Store
    from bench.store.views import agreement

    store = Store(a.store, create=False)
    manifest_id = None
    if a.manifest:  # that manifest's own pairs and votes, registering it first if it is new
        m = schema.read(a.manifest)
        manifest_id = Store.manifest_id(m)
        if not store.is_registered(manifest_id):
            reg = store.register(m, replace=a.replace)
            if reg.replaced:  # on stderr: stdout stays one table / JSON / CSV document
                print(reg.summary(), file=sys.stderr)
    df = agreement(store, manifest_id=manifest_id, include_inferred=a.include_inferred)
    if a.ci == "bootstrap" and not df.empty:
        if manifest_id:
            raise StudyError("agree --ci bootstrap reads the current registrations; drop --manifest "
                             "(or register that manifest with `iqa-study store register M --replace`)")
        from bench.study.agreement import bootstrap_agreement

        keys = ["dataset", "split", "metric", "config_hash"]
        cis = [c for c in df.columns if c.endswith(("_ci_lo", "_ci_hi"))]
        boot = bootstrap_agreement(store, include_inferred=a.include_inferred)
        df = df.drop(columns=cis).merge(boot[keys + cis + ["n_groups", "ci_method"]], on=keys, how="left")
    if a.json:
        _print_table(df, True)  # an empty store gives []
        return
    if a.csv:
        print(df.to_csv(index=False), end="")
        return
    if df.empty:
        print("no scored pairs yet (run `iqa-study score` first)")
        return
    if df["synthetic"].any():
        print("NOTE: datasets marked * use SYNTHETIC preferences (embedded sample), not human votes.")
    print(agreement_text(df))
    if a.ci == "bootstrap":
        print(f"n = decided pairs. 95% CIs: {df['ci_method'].iloc[0]} (as the study and its report).\n"
              "--json / --csv give every column.")
    else:
        print("n = decided pairs. 95% CIs: Wilson (strict), normal (tie-half), delta method (vote);\n"
              "--ci bootstrap resamples source groups as the study and report do. --json / --csv give every column.")


def register(sub) -> None:
    mb = sub.add_parser("manifest", help="pair manifests").add_subparsers(dest="sub", required=True)
    s = mb.add_parser("build", help="build a manifest: --config FILE, or IMPORTER ARGS (sr2afc ROOT | pairs-csv FILE "
                                    "--root DIR | hggt ROOT [--split] | sbs180k ROOT | sample OUT)",
                      epilog="`iqa-study manifest build IMPORTER --help` describes the folder/CSV layout IMPORTER expects.")
    s.add_argument("--config", help="a manifest config YAML (importer, root, ...; see data_manifests/)")
    s.add_argument("-o", "--out", "--output", dest="output", help="the manifest Parquet file to write")
    s.add_argument("--store", help="also register the pairs in this store")
    s.add_argument("importer_args", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_manifest_build)

    s = sub.add_parser("score", help="score the images of a manifest, or a folder/file (NR; FR with --ref), into a store")
    src = s.add_argument_group("what to score (one of)")
    src.add_argument("--manifest", help="pair manifest (Parquet): every image it cites")
    src.add_argument("--images", help="an image folder or file, no manifest needed; prints a per-image table")
    s.add_argument("--ref", help="with --images: reference folder for full-reference metrics, matched by file name")
    s.add_argument("--metrics", default="available", help="comma-separated names | study | available | all")
    s.add_argument("--store", help="the store folder (required with --manifest; with --images default: a scratch "
                                   "store in the cache, $IQA_STUDY_HOME/scratch-store)")
    s.add_argument("--no-store", action="store_true", help="with --images: score into a temporary store, removed after")
    s.add_argument("--allow-missing", action="store_true",
                   help="with --images: exit 0 although a requested metric could not run (its column is absent)")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="with --images: how the per-image scores are printed (table: with a mean row and ↑/↓)")
    s.add_argument("--root", help="override the manifest's image root (data moved)")
    s.add_argument("--device", default="auto")
    s.add_argument("--batch-size", type=int, help="default: 8 on GPU, 1 on CPU (batching large images is slower on CPU)")
    s.add_argument("--workers", type=int, help="image-decoding worker processes (default: 0 on CPU, up to 4 on GPU)")
    s.add_argument("--shard", help="i/n (default: RANK/WORLD_SIZE from torchrun, else 0/1)")
    s.add_argument("--max-pixels", type=int, help="downscale larger images to this many pixels (recorded in the key)")
    s.add_argument("--pixel-cap", default="auto",
                   help="images above this many pixels become error rows ('auto': 16000000 on CPU, none on GPU; 0: none)")
    s.add_argument("--fr-protocol", choices=["hggt", "pyiqa"], default="hggt",
                   help="full-reference options: hggt = crop border 4, RGB (HGGT evaluation); pyiqa = pyiqa defaults")
    s.add_argument("--retry-failed", action="store_true",
                   help="re-score keys whose stored row failed (transient failures are retried anyway)")
    s.add_argument("--retries", type=int, default=2, help="in-run retries of transient errors (I/O, CUDA OOM)")
    s.add_argument("--max-consecutive-errors", type=int, default=20,
                   help="stop a metric after this many identical errors in a row")
    s.add_argument("--flush-rows", type=positive_int, default=1000, help="rows per Parquet part (work at risk on a kill)")
    s.set_defaults(fn=cmd_score)

    s = sub.add_parser("query", help="read-only SQL over the store (views: scores, scores_raw, pairs, pairs_all, "
                                     "pair_scores, agreement, runs, study_*); the SQL cannot write or read other files")
    s.add_argument("--store", required=True)
    s.add_argument("sql", help="one SQL statement (DuckDB dialect) over the views listed above; read-only")
    s.add_argument("--json", action="store_true")
    s.add_argument("--include-inferred", action="store_true",
                   help="the agreement view also counts HGGT pairs inferred from labels (kind='inferred')")
    s.set_defaults(fn=cmd_query)

    s = sub.add_parser("agree", help="metric/human agreement per dataset, split and metric")
    s.add_argument("--store", required=True)
    s.add_argument("--manifest", help="only this manifest's pairs, with its own votes (registered first if new)")
    s.add_argument("--replace", action="store_true",
                   help="with --manifest: its votes replace conflicting rows of registered manifests")
    s.add_argument("--include-inferred", action="store_true",
                   help="also count HGGT pairs inferred from labels (kind='inferred'; excluded by default)")
    s.add_argument("--ci", choices=["quick", "bootstrap"], default="quick",
                   help="quick: closed-form intervals with pairs as units; bootstrap: percentile bootstrap over "
                        "source groups (pairs share images), as the study and report")
    fmt = s.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="every column as JSON")
    fmt.add_argument("--csv", action="store_true", help="every column as CSV")
    s.set_defaults(fn=cmd_agree)
