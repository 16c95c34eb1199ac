"""Issue 18, "tracebacks instead of one line": each malformed input or refused write ends in one
line (``iqa-study: error: ...``, exit status 2), and nothing already stored is lost."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from bench.cli import main
from bench.manifests import schema
from bench.store import Store
from tests.test_issue18_numbers import _images
from tests.test_store import _manifest, _store_with


def _one_line_error(capsys, *args) -> str:
    rc = main(list(args))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("iqa-study: error: ") and "Traceback" not in err, err
    return err


# --- NUL byte in an image path --------------------------------------------------------------------

def test_nul_byte_in_a_csv_image_path_is_one_line(tmp_path, capsys):
    root = _images(tmp_path / "img")
    csv = tmp_path / "v.csv"
    csv.write_text("image_a,image_b,votes_a,votes_b\nA.png,B\0.png,1,2\n")
    err = _one_line_error(capsys, "manifest", "build", "pairs-csv", str(csv), "--root", str(root),
                          "-o", str(tmp_path / "m.parquet"))
    assert "v.csv:2" in err and "NUL" in err


def test_nul_byte_in_a_scored_path_is_one_failed_row():
    from bench.scoring.images import DecodeError, decode

    with pytest.raises(DecodeError) as err:
        decode("/tmp/a\0b.png")
    assert not err.value.transient and "null byte" in str(err.value)


# --- query refusals name the reason ---------------------------------------------------------------

def test_query_refusals_print_the_reason_not_a_traceback(tmp_path, capsys):
    store = _store_with(tmp_path)
    err = _one_line_error(capsys, "query", "--store", str(store.root), "SELECT * FROM read_parquet('iqastore:///etc/passwd')")
    assert "outside the store" in err
    err = _one_line_error(capsys, "query", "--store", str(store.root),
                          f"COPY (SELECT 1 AS x) TO 'iqastore://{store.root}/scores/part-x.parquet'")
    assert "read-only" in err


# --- read-only store and full disk ----------------------------------------------------------------

@pytest.mark.parametrize("code,words", [(errno.EROFS, "store is read-only"), (errno.ENOSPC, "no space left")])
def test_refused_writes_are_one_line(tmp_path, capsys, monkeypatch, code, words):
    from bench.store import layout

    m = _manifest([(3, 0), (0, 3)])
    m.attrs["iqa_study"] = {"dataset": "d", "synthetic": False, "root": str(tmp_path)}
    path = schema.write(m, tmp_path / "m.parquet")
    Store(tmp_path / "s")

    def refuse(table, target):
        raise OSError(code, "refused by the test", str(target))

    monkeypatch.setattr(layout, "atomic_write_table", refuse)
    err = _one_line_error(capsys, "store", "register", str(path), "--store", str(tmp_path / "s"))
    assert words in err and "nothing already stored was lost" in err


def test_pyarrow_disk_full_and_a_file_size_limit_are_one_line(tmp_path):
    import pyarrow as pa

    from bench.cli import storage_error

    assert "no space left" in storage_error(pa.ArrowIOError("IOError: No space left on device. Detail: [errno 28]"))
    assert storage_error(OSError(errno.ENOENT, "No such file")) is None
    m = _manifest([(3, 0)] * 40)
    m["note"] = "x" * 200
    m.attrs["iqa_study"] = {"dataset": "d", "synthetic": False, "root": str(tmp_path)}
    path = schema.write(m, tmp_path / "m.parquet")
    Store(tmp_path / "s")
    command = f"ulimit -f 2; exec {sys.executable} -m bench.cli store register {path} --store {tmp_path / 's'}"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "no space left" in done.stderr and "Traceback" not in done.stderr
    assert not list((tmp_path / "s" / "pairs").glob("*.parquet"))  # nothing half-written


# --- a foreign Parquet part is named, skipped and quarantinable ---------------------------------

def test_a_part_with_a_foreign_schema_is_skipped_named_and_quarantined(tmp_path, capsys, caplog):
    import json
    import logging

    import pyarrow as pa

    from bench.atomic import atomic_write_table
    from tests.test_store import _rows, _scores_for

    store = _store_with(tmp_path)
    rows = _rows(_scores_for(4, [False] * 4))
    foreign = pa.Table.from_pylist([{**r, "score": str(r["score"]), "written_at": str(r["written_at"])} for r in rows])
    atomic_write_table(foreign, store.root / "scores" / "part-foreign-r000-000000.parquet")
    with caplog.at_level(logging.WARNING, logger="bench.store"):
        assert main(["agree", "--store", str(store.root), "--json"]) == 0
    rows_out = json.loads(capsys.readouterr().out)
    assert rows_out[0]["n_pairs"] == 4 and rows_out[0]["strict_acc"] == 0.75  # the foreign part left out
    assert any("part-foreign" in r.getMessage() and "column 'score' is string" in r.getMessage()
               for r in caplog.records)
    assert main(["query", "--store", str(store.root), "--json", "SELECT 1 AS one"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"one": 1}]
    assert main(["store", "check", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "scores/part-foreign-r000-000000.parquet: foreign schema: column 'score' is string" in out
    assert main(["store", "check", "--store", str(store.root), "--repair"]) == 0
    assert (store.root / "quarantine" / "scores" / "part-foreign-r000-000000.parquet").is_file()
    assert not (store.root / "scores" / "part-foreign-r000-000000.parquet").exists()


def test_parts_remembered_before_kinds_were_are_still_checked(tmp_path):
    import json

    store = _store_with(tmp_path)
    assert store.score_parts().good
    memo = store.root / "cache" / "parts.json"
    old = {k: v[:4] for k, v in json.loads(memo.read_text()).items()}
    memo.write_text(json.dumps(old))
    parts = Store(store.root).score_parts()
    assert parts.good and all(p.kinds for p in parts.good)


# --- malformed (but safe) checkpoints: merge and evaluate -------------------------------------------

_FT = {"base": {"init": "/nonexistent/base.pth", "init_sha256": "0" * 64}, "adapter_sha256": "0" * 64,
       "reward": "{}", "lora": {}}


@pytest.mark.parametrize("state,words", [
    ({"ft": {}}, "field 'ft.base' missing"),
    ({"ft": "x"}, "field 'ft' is str"),
    ({"ft": {**_FT, "base": {"init": "/b.pth"}}}, "field 'ft.base.init_sha256' missing"),
    ({"ft": _FT, "config": "{not json"}, "field 'config' is not JSON"),
    ({"ft": _FT, "config": "{}"}, "field 'config.name': Field required"),
])
def test_merge_of_a_malformed_ft_checkpoint_is_one_line(tmp_path, capsys, state, words):
    import torch

    path = tmp_path / "iter_00000003.pt"
    torch.save({"iteration": 3, "adapter": {}, "config": "{}", **state}, path)
    err = _one_line_error(capsys, "merge", "--checkpoint", str(path), "-o", str(tmp_path / "m.pth"))
    assert words in err and str(path) in err
    assert not (tmp_path / "m.pth").exists()


@pytest.mark.parametrize("case,words", [
    ("unknown", "field 'config.arch.bogus': Extra inputs are not permitted"),
    ("archstr", "field 'config.arch' is str"),
    ("emalist", "field 'ema' is list"),
    ("iterabc", "field 'iteration' = 'abc'"),
    ("scale0", "field 'config.arch.scale': Input should be greater than 0"),  # the schema's range (issue 19)
])
def test_evaluate_of_a_malformed_suite_checkpoint_is_one_line_and_leaves_no_store(tmp_path, capsys, case, words):
    import json

    import torch

    arch = {"type": "swinir", "size": "tiny"}
    cases = {"unknown": {"config": json.dumps({"arch": {**arch, "bogus": 1}})},
             "archstr": {"config": json.dumps({"arch": "swinir"})},
             "emalist": {"config": json.dumps({"arch": arch}), "ema": [1, 2]},
             "iterabc": {"config": json.dumps({"arch": arch}), "iteration": "abc"},
             "scale0": {"config": json.dumps({"arch": {**arch, "scale": 0}})}}
    path = tmp_path / f"{case}.pt"
    torch.save({"iteration": 1, "ema": {}, **cases[case]}, path)
    test = _images(tmp_path / "test" / "lr", names=("x.png",)).parent
    err = _one_line_error(capsys, "evaluate", "--checkpoint", str(path), "--test", str(test),
                          "--store", str(tmp_path / "store"), "--device", "cpu")
    assert words in err
    assert not (tmp_path / "store").exists()  # a refused evaluate leaves no empty store skeleton


def test_a_pickled_global_is_named_without_torchs_allow_list_hint(tmp_path):
    import torch

    from sr_training.checkpoint import UnsafeCheckpoint, read_weights

    path = tmp_path / "evil.pt"
    torch.save({"x": exec}, path)
    with pytest.raises(UnsafeCheckpoint) as err:
        read_weights(path)
    msg = str(err.value)
    assert "the global exec" in msg and "add_safe_globals" not in msg and "safe_globals" not in msg and "\n" not in msg
