"""Issue 18: compare's crop grid checks each panel's file against its stored image id."""

from __future__ import annotations

from bench.store.views import connect
from tests.test_compare import IDS, store  # noqa: F401  (the compare fixture: content-hash image ids)


def test_compare_crop_grid_leaves_out_a_panel_whose_file_changed(store, tmp_path):  # noqa: F811  (the imported fixture)
    from bench.report.compare import compare_table, crop_grid, load_per_image, pick_baseline

    per, runs, _ = load_per_image(store)
    t = compare_table(per, runs, "t", pick_baseline(runs, None)[0], n_boot=50)
    con = connect(store)
    path = con.execute("SELECT path FROM images WHERE image_id = ?", [IDS["g0amo"]]).fetchone()[0]
    other = con.execute("SELECT path FROM images WHERE image_id = ?", [IDS["g0upos"]]).fetchone()[0]
    from pathlib import Path

    Path(path).write_bytes(Path(other).read_bytes())  # the AMO output replaced by the UPos one
    png, notes = crop_grid(store, per, t, "t", tmp_path / "cmp", item="g0")
    assert png is not None
    assert any("tiny_amo" in n and "changed" in n for n in notes)
    ref = con.execute("SELECT ref_path FROM eval_refs WHERE item = 'g0' ORDER BY gt_index").fetchone()[0]
    Path(ref).write_bytes(b"not the reference")
    png, notes = crop_grid(store, per, t, "t", tmp_path / "cmp2", item="g0")
    assert png is None and "reference changed on disk" in notes[0]
