"""Names from data are only ever text (issue 19): in every HTML page (escaped, with a CSP; checked
in headless Chromium), and in figures (no mathtext). Figures are written atomically; `report` on
an empty store or one with a damaged runs part, and `compare` without a UPos run, say so plainly."""

from __future__ import annotations

import html
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.manifests.schema import file_hash
from bench.report import figures, html_page
from bench.report.compare import load_per_image, pick_baseline, write_compare
from bench.store import Store
from bench.store.images import register_images
from tests.browser import Dom, dump_dom
from tests.cli import cli
from tests.test_compare import _row
from tests.test_report import make_study_data

XSS_ATTR = "\"><img src=x onerror=document.title='pwned'>"
XSS_TAG = "<script>document.title='pwned'</script>"
MATH = "$\\alpha$ \\x $\\x$"  # mathtext would render an alpha and stop at the unknown symbol \\x
NAME = f"{XSS_ATTR}{XSS_TAG} {MATH}"


def _cli(*args: str) -> tuple[int, str]:
    done = cli(*args, check=False)
    return done.returncode, done.stdout


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path]:
    """(store, report dir) of a small study whose dataset is named NAME (built like the issue's probe)."""
    tmp = tmp_path_factory.mktemp("xss_study")
    data = tmp / "data"
    data.mkdir()
    votes = make_study_data(data, n_groups=4, size=64)
    manifest, store = str(tmp / "manifest.parquet"), str(tmp / "store")
    assert _cli("manifest", "build", "pairs-csv", str(votes), "--root", str(data), "--dataset", NAME,
                "-o", manifest)[0] == 0
    assert _cli("phase1", "--manifest", manifest, "--store", store, "--workers", "0", "--n-boot", "50",
                "--metrics", "entropy,piqe", "--n-pairs", "12", "--top-k", "1")[0] == 0
    assert _cli("report", "--store", store, "-o", str(tmp / "report"))[0] == 0
    return Path(store), tmp / "report"


@pytest.fixture(scope="module")
def compare_out(tmp_path_factory) -> Path:
    """compare.html of two evaluated runs, one named (`evaluate --name`) and one test set called NAME-like."""
    tmp = tmp_path_factory.mktemp("xss_compare")
    st, ts = Store(tmp / "store"), f"{XSS_ATTR} {MATH}"  # a test set name is a file name part: no '/'
    rng = np.random.default_rng(0)
    images, scores = [], []
    for i in range(2):
        gt = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
        p = tmp / f"gt{i}.png"
        Image.fromarray(gt).save(p)
        images.append({"image_id": f"g{i}p", "path": str(p), "role": "gt", "test_set": ts, "item": f"g{i}",
                       "group": f"g{i}", "gt_index": 1, "label": "Positive"})
        for run, sampling in ((f"{XSS_TAG}{MATH}", "amo"), ("plain_upos", "upos")):
            q = tmp / f"{sampling}{i}.png"
            Image.fromarray(np.clip(gt + rng.normal(0, 10, gt.shape), 0, 255).astype(np.uint8)).save(q)
            images.append({"image_id": f"g{i}{sampling}", "path": str(q), "role": "sr_output", "test_set": ts,
                           "item": f"g{i}", "group": f"g{i}", "run_name": run, "arch": "swinir-tiny",
                           "sampling": sampling, "iteration": 20, "checkpoint_sha256": sampling[0] * 64,
                           "weights": "ema"})
            scores += [_row(f"g{i}{sampling}", None, "entropy", 5.0 + i),
                       _row(f"g{i}{sampling}", f"g{i}p", "psnr", 20.0 + i),
                       _row(f"g{i}{sampling}", f"g{i}p", "stlpips", 0.1 * i, lower_better=True)]
    # image ids are content hashes, as evaluation registers them: the crop grid checks them (a changed file is left out)
    ids = {img["image_id"]: file_hash(Path(img["path"])) for img in images}
    for row in images + scores:
        for col in ("image_id", "ref_id"):
            if row.get(col):
                row[col] = ids[row[col]]
    register_images(st, images)
    st.write_scores(scores, "fixture", 0, 0)
    out = tmp / "cmp"
    write_compare(st, out, n_boot=50)
    return out


def _assert_inert(page: Path, dom: Dom, n_img: int) -> None:
    assert dom.count("script") == 0 and dom.handlers() == [], (dom.handlers(), page)
    assert dom.count("img") == n_img
    assert "pwned" not in dom.title


def test_report_page_escapes_every_name_and_has_a_csp(study):
    _, report = study
    text = (report / "report.html").read_text()
    dom = Dom(text)
    _assert_inert(report / "report.html", dom, len(list(report.glob("*.png"))))
    assert dom.title == "iqa-study: metric selection report"
    assert NAME in html.unescape(text)  # shown, as text
    csp = [a["content"] for t, a in dom.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "script-src 'none'" in csp[0] and "img-src 'self' data:" in csp[0]
    figure = next(a for t, a in dom.tags if t == "figure" and "agreement_" in a.get("id", ""))
    assert figure["id"] == f"agreement_{NAME}_all".replace("/", "_")  # the attribute holds the whole name


def test_compare_and_demo_pages_escape_every_name(compare_out, tmp_path):
    from bench.demo import _index_page

    dom = Dom((compare_out / "compare.html").read_text())
    _assert_inert(compare_out / "compare.html", dom, 2)  # P-D plot and crop grid
    assert f"{XSS_TAG}{MATH}" in _texts(compare_out / "compare.html")  # the run name, as one text node
    page = _index_page(tmp_path, XSS_TAG, [(XSS_ATTR, [(XSS_TAG, XSS_ATTR + ".html")])], [XSS_ATTR])
    dom = Dom(page.read_text())
    _assert_inert(page, dom, 0)
    links = [a["href"] for t, a in dom.tags if t == "a"]
    assert links == [html_page.href(XSS_ATTR + ".html")] and ":" not in links[0] and '"' not in links[0]


def _texts(page: Path) -> list[str]:
    out: list[str] = []

    class P(Dom):
        def handle_data(self, data):
            out.append(data)

    P(page.read_text())
    return out


def test_no_script_runs_in_chromium(study, compare_out, tmp_path):
    _, report = study
    # control: the same payload in an unescaped attribute does run here, so the check below can see it
    raw = tmp_path / "raw.html"
    raw.write_text(f'<!DOCTYPE html><html><head><title>t</title></head><body><img alt="{XSS_ATTR}"></body></html>')
    assert Dom(dump_dom(raw, tmp_path / "profile")).title == "pwned"
    for page, n_img in ((report / "report.html", len(list(report.glob("*.png")))),
                        (compare_out / "compare.html", 2)):
        dom = Dom(dump_dom(page, tmp_path / "profile"))
        _assert_inert(page, dom, n_img)
    # and the CSP alone stops script that got through: the raw payload inside one of our pages
    leaky = tmp_path / "leaky.html"
    leaky.write_text(html_page.render("t", [("p", "x")], "body{}").replace("<p>x</p>", f'<img alt="{XSS_ATTR}">'
                                                                            + XSS_TAG))
    assert Dom(dump_dom(leaky, tmp_path / "profile")).title == "t"


def test_dollar_and_backslash_in_labels_are_plain_text(study, compare_out, tmp_path):
    _, report = study
    pngs = list(report.glob(f"agreement_*{MATH}*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 1000
    assert (compare_out / f"pd_{XSS_ATTR} {MATH}.png").stat().st_size > 1000
    df = pd.DataFrame({"metric": [MATH, "b"], "acc": [0.6, 0.7], "lo": [0.5, 0.6], "hi": [0.7, 0.8]})
    figures.save(figures.accuracy_bars(df, "acc", "lo", "hi", f"title {MATH}"), df, tmp_path, "bars")
    assert (tmp_path / "bars.pdf").read_bytes()[:5] == b"%PDF-"


def test_a_failing_figure_save_leaves_no_partial_file(tmp_path, monkeypatch):
    df = pd.DataFrame({"metric": ["a"], "acc": [0.5], "lo": [0.4], "hi": [0.6]})
    figures.save(figures.accuracy_bars(df, "acc", "lo", "hi", "t"), df, tmp_path, "f")
    before = (tmp_path / "f.pdf").read_bytes()
    fig = figures.accuracy_bars(df, "acc", "lo", "hi", "t2")

    def killed_midway(path, format=None, **kwargs):  # the process dies after half a PDF
        Path(path).write_bytes(b"%PDF-1.4 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(fig, "savefig", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        figures.save(fig, df, tmp_path, "f")
    assert (tmp_path / "f.pdf").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.csv", "f.pdf", "f.png"]


def test_report_on_an_empty_store_is_one_line(tmp_path):
    Store(tmp_path / "empty")
    done = cli("report", "--store", tmp_path / "empty", "-o", tmp_path / "r", check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    # the report follows one chain of study results (bench/report/chain.py): none yet says which command makes one
    assert str(tmp_path / "empty") in lines[0] and "no phase1/phase2 results; run `iqa-study phase1`" in lines[0]


def test_report_with_a_damaged_runs_part_still_reports(study, tmp_path):
    store, _ = study
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    for part in (copy / "runs").glob("*.parquet"):
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    rc, out = _cli("report", "--store", str(copy), "-o", str(tmp_path / "r"))
    assert rc == 0, out
    assert "no readable run records in this store" in (tmp_path / "r" / "report.md").read_text()


def test_compare_without_a_upos_run_names_no_baseline(compare_out, tmp_path):
    st = Store(tmp_path / "s")
    images, scores = [], []
    for run, sampling, ft in (("a_amo", "amo", None), ("a_amo_ft", "amo", "ft1")):
        p = tmp_path / f"{run}.png"
        Image.new("RGB", (32, 32), (10, 20, 30)).save(p)
        images.append({"image_id": run, "path": str(p), "role": "sr_output", "test_set": "t", "item": "g0",
                       "group": "g0", "run_name": run, "arch": "swinir-tiny", "sampling": sampling, "ft_variant": ft,
                       "iteration": 20, "checkpoint_sha256": run[-1] * 64, "weights": "ema"})
        scores.append(_row(run, None, "entropy", 5.0))
    register_images(st, images)
    st.write_scores(scores, "fixture", 0, 0)
    base, why = pick_baseline(load_per_image(st)[1], None)
    assert base is None and "no UPos run" in why
    write_compare(st, tmp_path / "cmp", n_boot=20)
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "no baseline for Δ (no UPos run without FT" in md and "baseline for Δ =" not in md and "ΔEntropy" not in md
