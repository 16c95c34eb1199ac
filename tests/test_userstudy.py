"""User studies (bench.userstudy): design, the HTTP API, durability under kill -9, a real browser
(headless Chromium), analysis numbers, export into the store and `agree` on the votes.

The store is SYNTHETIC (tests/userstudy_fixture.py: three fake runs, no model is trained)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.errors import StudyError
from bench.manifests.schema import file_hash
from bench.userstudy import analyse, db, design, export, scripted
from tests.conftest import chromium_paths
from tests.userstudy_fixture import ITEMS, RUNS, build_store


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(store, test set) shared by the module: registering and scoring once takes a few seconds."""
    return build_store(tmp_path_factory.mktemp("userstudy"))


def _create(tiny, out: Path, **kw) -> dict:
    store, ts = tiny
    design.create(store, ts, kw.pop("runs", list(RUNS)), out, **kw)
    return design.load(out)


def _prefers(order: tuple[str, ...]):
    """A rater who prefers the run earlier in ``order`` and passes every attention check."""
    rank = {run: i for i, run in enumerate(order)}

    def pick(p) -> str:
        if p["kind"] == "attention":
            return p["correct"]
        return "left" if rank[p["left_run"]] < rank[p["right_run"]] else "right"

    return pick


_rule = _prefers(RUNS)  # sharp > soft > noisy


def _presentations(study_dir: Path, rater: str) -> list[sqlite3.Row]:
    con = db.connect(study_dir)
    try:
        return con.execute("SELECT * FROM presentations WHERE rater_id = ? ORDER BY seq", (rater,)).fetchall()
    finally:
        con.close()


def _votes(study_dir: Path) -> list[tuple]:
    con = sqlite3.connect(db.path(study_dir))
    try:
        return con.execute("SELECT rater_id, pres_id, choice, chosen_run, kind FROM votes ORDER BY rater_id, pres_id"
                           ).fetchall()
    finally:
        con.close()


# --- design -----------------------------------------------------------------------------------------------------------


def test_design_is_balanced_with_swapped_repeats_attention_checks_and_a_saved_seed(tiny, tmp_path):
    study = _create(tiny, tmp_path / "s", trials_per_rater=4, n_attention=2, seed=5)
    assert len(study["trials"]) == 9 and {(t["run_a"], t["run_b"]) for t in study["trials"]} == {
        ("fake_sharp", "fake_soft"), ("fake_sharp", "fake_noisy"), ("fake_soft", "fake_noisy")}
    # full images: the same bytes as the store's SR outputs (same content ids, so stored scores apply)
    store, ts = tiny
    sr_ids = set(design.store_outputs(store, ts)[0]["image_id"])
    assert {t["image_a"] for t in study["trials"]} | {t["image_b"] for t in study["trials"]} <= sr_ids
    for iid, meta in study["images"].items():
        assert file_hash(tmp_path / "s" / meta["file"]) == iid
    db.invite(tmp_path / "s", study, 9)
    assigned = pd.Series([p["trial_id"] for k in range(9) for p in _presentations(tmp_path / "s", f"r{k + 1}")
                          if p["kind"] == "main"]).value_counts()
    assert len(assigned) == 9 and set(assigned) == {4}  # 9 raters x 4 trials over 9 trials: each exactly 4 times
    for k in range(9):
        pres = _presentations(tmp_path / "s", f"r{k + 1}")
        stored = [(p["pres_id"], p["kind"], p["left_image"], p["right_image"]) for p in pres]
        assert stored == [(p["pres_id"], p["kind"], p["left_image"], p["right_image"])
                          for p in design.schedule(study, k)]  # the saved schedule is the seeded one
        mains = [p for p in pres if p["kind"] == "main"]
        assert len(mains) == 4 and len(pres) == 4 + 1 + 2  # 10 % of 4 -> one repeat; two attention checks
        assert sorted(p["left_run"] == t["run_a"] for p in mains for t in study["trials"]
                      if t["trial_id"] == p["trial_id"]) == [False, False, True, True]  # sides balanced
        (rep,) = [p for p in pres if p["kind"] == "repeat"]
        first = next(p for p in pres if p["pres_id"] == rep["repeat_of"])
        assert (rep["left_image"], rep["right_image"]) == (first["right_image"], first["left_image"])
        assert rep["seq"] > first["seq"]
        for p in pres:
            if p["kind"] == "attention":
                bad = p["left_image"] if p["correct"] == "right" else p["right_image"]
                assert study["images"][bad]["role"] == "attention" and p["seq"] > 1
    # the same seed gives the same study; another seed other schedules
    again = _create(tiny, tmp_path / "s2", trials_per_rater=4, n_attention=2, seed=5, name="s")
    assert {k: v for k, v in again.items() if k != "created_at"} == {k: v for k, v in study.items() if k != "created_at"}
    other = _create(tiny, tmp_path / "s3", trials_per_rater=4, n_attention=2, seed=6)
    assert [p["trial_id"] for p in design.schedule(other, 0)] != [p["trial_id"] for p in design.schedule(study, 0)]


def test_crop_reference_and_refusals(tiny, tmp_path):
    from PIL import Image

    study = _create(tiny, tmp_path / "c", crop="64x48+8+4", reference="lr", runs=["fake_sharp", "fake_noisy"],
                    pairs="baseline", baseline="fake_noisy", n_attention=1)
    assert [(t["run_a"], t["run_b"]) for t in study["trials"]] == [("fake_noisy", "fake_sharp")] * 3
    t = study["trials"][0]
    for iid in (t["image_a"], t["image_b"], t["reference"]):
        with Image.open(tmp_path / "c" / "images" / f"{iid}.png") as im:
            assert im.size == (64, 48)
    store, ts = tiny
    src = design.store_outputs(store, ts)[0]
    row = src[(src["item"] == t["item"]) & (src["label"] == "fake_noisy")].iloc[0]
    with Image.open(row["path"]) as im:  # the crop is the stated box of the registered SR output
        expect = np.asarray(im.convert("RGB"))[4:52, 8:72]
    with Image.open(tmp_path / "c" / "images" / f"{t['image_a']}.png") as im:
        assert np.array_equal(np.asarray(im), expect)
    for kw, msg in [({"runs": ["fake_sharp", "nope"]}, "'nope' matches no evaluated run"),
                    ({"runs": ["fake_sharp"]}, "at least two runs"),
                    ({"crop": "500x20"}, "does not fit"), ({"crop": "12y4"}, "expected full, N"),
                    ({"pairs": "baseline"}, "needs --baseline"), ({"repeat_fraction": 2.0}, "fraction in [0, 1]")]:
        with pytest.raises(StudyError, match=msg.replace("[", r"\[").replace("(", r"\(")):
            _create(tiny, tmp_path / "bad", **kw)
        assert not (tmp_path / "bad").exists()  # nothing half-made is left
    with pytest.raises(StudyError, match="not an empty folder"):
        _create(tiny, tmp_path / "c")
    with pytest.raises(StudyError, match="no SR outputs registered for test set 'other'"):
        design.create(store, "other", list(RUNS), tmp_path / "x")


# --- HTTP API ---------------------------------------------------------------------------------------------------------


def test_api_validates_everything_and_stores_nothing_on_bad_input(tiny, tmp_path):
    from starlette.testclient import TestClient

    from bench.userstudy.server import create_app

    study = _create(tiny, tmp_path / "a")
    moved = tmp_path / "moved"  # self-contained: the folder works after a move
    shutil.move(tmp_path / "a", moved)
    (r1, tok), (_r2, tok2) = db.invite(moved, study, 2)
    c = TestClient(create_app(moved))
    first = dict(_presentations(moved, r1)[0])
    good = {"presentation": first["pres_id"], "choice": "left", "rt_ms": 900, "key": "k" * 16}

    def post(body, token=tok, **kw):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return c.post(f"/api/{token}/vote", content=data, headers=kw.pop("headers", {"Content-Type": "application/json"}))

    bad = [
        (post(good, token="x" * 32), 404, "unknown token"),
        (post(good, token="../../etc"), 404, None),
        (post("{not json"), 400, "not JSON"),
        (post("[1, 2]"), 400, "JSON object"),
        (post({**good, "extra": 1}), 400, "field extra"),
        (post({**good, "rt_ms": "900"}), 400, "field rt_ms"),
        (post({**good, "rt_ms": True}), 400, "field rt_ms"),
        (post({**good, "rt_ms": -1}), 400, "field rt_ms"),
        (post({**good, "choice": "both"}), 400, "field choice"),
        (post({**good, "key": "short"}), 400, "field key"),
        (post('{"presentation": "p0001", "choice": "left", "rt_ms": NaN, "key": "kkkkkkkkkk"}'), 400, "not JSON"),
        (post({**good, "presentation": "p9999"}), 404, "unknown trial"),
        (post({**good, "presentation": "p0002"}), 409, "not the next one"),
        (post(json.dumps({**good, "pad": "x" * 2000})), 413, "at most 1024"),
        (post(good, headers={"Content-Type": "text/plain"}), 415, "application/json"),
    ]
    for res, status, text in bad:
        assert res.status_code == status, (res.status_code, res.text)
        if text:
            assert text in res.json()["error"]
    assert _votes(moved) == []  # nothing stored by any of them
    ok = post(good)
    assert ok.status_code == 200 and ok.json()["duplicate"] is False and ok.json()["done"] == 1
    again = post(good)  # a retried request: the same answer, counted once
    assert again.status_code == 200 and again.json()["duplicate"] is True and again.json()["done"] == 1
    assert post({**good, "key": "other-key-1"}).json()["error"] == f"trial {first['pres_id']} is already answered"
    nxt = _presentations(moved, r1)[1]["pres_id"]
    assert "already used" in post({**good, "presentation": nxt}).json()["error"]
    assert _votes(moved) == [(r1, first["pres_id"], "left", first["left_run"], "main")]
    # another rater cannot answer r1's trials with its own token state: its own schedule, own progress
    assert c.get(f"/api/{tok2}/state").json()["done"] == 0

    state = c.get(f"/api/{tok}/state")
    assert state.json()["trial"]["id"] == nxt and not any(r in state.text for r in RUNS)  # runs never revealed
    img = state.json()["trial"]["left"]
    assert c.get(f"/api/{tok}/image/{img}").content == (moved / "images" / f"{img}.png").read_bytes()
    for path in (f"/api/{tok}/image/{'0' * 32}", f"/api/{tok}/image/..%2Fstudy.json", f"/api/{tok}/image/../study.json",
                 f"/api/{'y' * 32}/image/{img}", "/static/", "/static/../study.json", "/static/index.html",
                 "/images/", f"/images/{img}.png", "/study.json", "/votes.sqlite", f"/s/{'z' * 32}"):
        assert c.get(path).status_code == 404, path
    for path in (f"/s/{tok}", "/static/app.js", "/static/index.css", f"/api/{tok}/state", "/nothing"):
        h = c.get(path).headers
        assert "'unsafe-inline'" not in h["content-security-policy"] and "script-src 'self'" in h[
            "content-security-policy"] and h["x-content-type-options"] == "nosniff", path
        assert h["referrer-policy"] == "no-referrer"
    assert c.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    page = c.get(f"/s/{tok}").text
    assert "<script src=\"/static/app.js\"" in page and "<script>" not in page and "style=" not in page


def test_serve_binds_loopback_by_default_and_warns_for_every_interface(tiny, tmp_path, monkeypatch, capsys):
    import uvicorn

    from bench.userstudy import server

    _create(tiny, tmp_path / "w")
    bound = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: bound.append(sockets[0].getsockname()))
    server.serve(tmp_path / "w", port=0)
    assert bound[-1][0] == "127.0.0.1" and "WARNING" not in capsys.readouterr().err
    server.serve(tmp_path / "w", host="0.0.0.0", port=0)
    assert bound[-1][0] == "0.0.0.0" and "WARNING: --host 0.0.0.0 makes the study reachable" in capsys.readouterr().err
    assert main(["userstudy", "serve", str(tmp_path / "w"), "--port", "70000"]) == 2
    assert "expected a port in 0..65535" in capsys.readouterr().err
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        assert main(["userstudy", "serve", str(tmp_path / "w"), "--port", str(busy.getsockname()[1])]) == 2
    assert "cannot listen there" in capsys.readouterr().err


# --- a real server process: concurrency, kill -9 ----------------------------------------------------------------------


def _start(study_dir: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "userstudy", "serve", str(study_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert "serving user study" in line, line + proc.stdout.read()
    return proc, int(line.split("http://127.0.0.1:")[1].split("/")[0])


def _post(port: int, token: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/{token}/vote", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_kill_9_loses_no_acknowledged_vote_and_concurrent_raters_do_not_collide(tiny, tmp_path):
    study = _create(tiny, tmp_path / "k", n_attention=1)
    raters = db.invite(tmp_path / "k", study, 3)
    acked: dict[str, list[str]] = {r: [] for r, _ in raters}
    proc, port = _start(tmp_path / "k")
    try:
        def vote_all(rater, token, limit):
            for p in _presentations(tmp_path / "k", rater)[:limit]:
                body = {"presentation": p["pres_id"], "choice": _rule(p), "rt_ms": 10, "key": f"key-{rater}-{p['seq']}"}
                status, res = _post(port, token, body)
                assert status == 200 and res["duplicate"] is False, res
                acked[rater].append(p["pres_id"])
                assert _post(port, token, body)[1]["duplicate"] is True  # a retry: counted once

        threads = [threading.Thread(target=vote_all, args=(r, t, 4)) for r, t in raters]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(v[:2] for v in _votes(tmp_path / "k")) == sorted((r, p) for r in acked for p in acked[r])
        os.kill(proc.pid, signal.SIGKILL)  # between votes, right after the last acknowledgement
        proc.wait()
        proc, port = _start(tmp_path / "k")  # the same folder again: everything acknowledged is there
        assert sorted(v[:2] for v in _votes(tmp_path / "k")) == sorted((r, p) for r in acked for p in acked[r])
        rater, token = raters[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/{token}/state") as r:
            st = json.loads(r.read())
        assert st["done"] == 4 and st["trial"]["id"] == _presentations(tmp_path / "k", rater)[4]["pres_id"]
        p = _presentations(tmp_path / "k", rater)[4]
        status, res = _post(port, token, {"presentation": p["pres_id"], "choice": _rule(p), "rt_ms": 5, "key": "after-kill"})
        assert status == 200 and res["done"] == 5
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    con = sqlite3.connect(db.path(tmp_path / "k"))
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT count(*) FROM votes").fetchone()[0] == 13


# --- a real browser ---------------------------------------------------------------------------------------------------


def _driver():
    browser, driver = chromium_paths()
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a driver or a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,820",
                "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_two_raters_vote_by_keyboard_in_headless_chromium_then_export_and_agree(tiny, tmp_path, capsys):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    drv = _driver()
    shots = os.environ.get("IQA_STUDY_SHOTS")  # a folder: also save start / trial / end screenshots there
    study_dir = tmp_path / "b"
    study = _create(tiny, study_dir, reference="hr", n_attention=1)
    (ra, ta), (rb, tb) = db.invite(study_dir, study, 2)
    proc, port = _start(study_dir)
    expected: dict[str, list[tuple]] = {ra: [], rb: []}
    wait = WebDriverWait(drv, 20)
    try:
        def shown(name):
            return drv.find_element(By.ID, name).is_displayed()

        def answer(rater, how):
            """Answer the rater's next presentation by the rule; ``how`` = key / 'double-key' / 'double-click'."""
            con = db.connect(study_dir)
            st = db.state(con, rater, study["images"])
            con.close()
            p = next(x for x in _presentations(study_dir, rater) if x["pres_id"] == st["trial"]["id"])
            wait.until(lambda d: drv.find_element(By.ID, "choose-left").is_enabled())
            assert drv.find_element(By.ID, "progress").text == f"{st['done'] + 1} / {st['total']}"
            assert drv.find_element(By.ID, "img-left").get_attribute("src").endswith(p["left_image"])
            assert drv.find_element(By.ID, "img-right").get_attribute("src").endswith(p["right_image"])
            side = _rule(p)
            body = drv.find_element(By.TAG_NAME, "body")
            if how == "double-click":
                ActionChains(drv).double_click(drv.find_element(By.ID, f"choose-{side}")).perform()
            elif how == "double-key":
                body.send_keys(*(2 * [Keys.ARROW_LEFT if side == "left" else Keys.ARROW_RIGHT]))
            else:
                body.send_keys(how[side])
            expected[rater].append((p["pres_id"], side, p["left_run"] if side == "left" else p["right_run"], p["kind"]))
            done = st["done"] + 1
            wait.until(lambda d: shown("end") or d.find_element(By.ID, "progress").text == f"{done + 1} / {st['total']}")
            return st["total"]

        # rater A: arrows and 1/2, reloads mid-way
        drv.get(f"http://127.0.0.1:{port}/s/{ta}")
        wait.until(lambda d: shown("start"))
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            drv.save_screenshot(str(Path(shots) / "start.png"))
        drv.find_element(By.TAG_NAME, "body").send_keys(Keys.ENTER)
        keys = [{"left": Keys.ARROW_LEFT, "right": Keys.ARROW_RIGHT}, {"left": "1", "right": "2"}]
        for i in range(3):
            total = answer(ra, keys[i % 2])
        if shots:
            drv.save_screenshot(str(Path(shots) / "trial.png"))
        drv.refresh()
        wait.until(lambda d: shown("start"))
        assert drv.find_element(By.ID, "resume").text.startswith(f"Welcome back: 3 of {total} answered")
        drv.find_element(By.TAG_NAME, "body").send_keys(Keys.ENTER)
        while not shown("end"):
            answer(ra, keys[len(expected[ra]) % 2])
        assert drv.find_element(By.ID, "n-done").text == str(total)
        if shots:
            drv.save_screenshot(str(Path(shots) / "end.png"))

        # rater B: double key presses, a double click, and one request sent twice (a retry) from the page
        drv.get(f"http://127.0.0.1:{port}/s/{tb}")
        wait.until(lambda d: shown("start"))
        drv.find_element(By.ID, "start-btn").click()
        answer(rb, "double-key")
        answer(rb, "double-click")
        p = _presentations(study_dir, rb)[2]
        retry = json.dumps({"presentation": p["pres_id"], "choice": _rule(p), "rt_ms": 700, "key": "retried-request-1"})
        results = drv.execute_async_script("""
            const [url, body, done] = arguments;
            const opts = {method: "POST", headers: {"Content-Type": "application/json"}, body: body};
            Promise.all([fetch(url, opts), fetch(url, opts)])
              .then(rs => Promise.all(rs.map(r => r.json().then(j => [r.status, j.duplicate]))))
              .then(done);""", f"/api/{tb}/vote", retry)
        assert sorted(results) == [[200, False], [200, True]]
        expected[rb].append((p["pres_id"], _rule(p), p["left_run"] if _rule(p) == "left" else p["right_run"], p["kind"]))
        drv.refresh()
        wait.until(lambda d: shown("start"))
        drv.find_element(By.TAG_NAME, "body").send_keys(Keys.ENTER)
        while not shown("end"):
            answer(rb, keys[len(expected[rb]) % 2])
        logs = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        assert logs == [], logs  # no CSP violation, no failed request
    finally:
        drv.quit()
        proc.kill()
        proc.wait()

    # the stored votes, exactly
    stored = _votes(study_dir)
    assert stored == sorted((r, *e) for r in expected for e in expected[r])
    assert len(stored) == 2 * total
    con = sqlite3.connect(db.path(study_dir))
    rts = [r[0] for r in con.execute("SELECT rt_ms FROM votes WHERE idem_key <> 'retried-request-1'")]
    assert all(0 <= rt < 60_000 for rt in rts)

    # export and agree on them
    path, reg, unscored = export.export(study_dir, tiny[0])
    assert reg.new and unscored == 0  # full images: the store's scores of the SR outputs apply
    m = pd.read_csv(study_dir / "export" / "votes.csv")
    assert len(m) == 9 and set(m["dataset"]) == {"userstudy:b"} and set(m["group"]) == set(ITEMS)
    assert (m["votes_a"] + m["votes_b"] == 2).all()  # two raters, one first presentation each
    assert (m["votes_a"] == 2).all()  # both followed the rule: run_a (earlier in RUNS) always won
    capsys.readouterr()
    assert main(["agree", "--store", str(tiny[0].root), "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["dataset"] == "userstudy:b"]
    assert {r["metric"] for r in rows} == {"entropy"}
    from bench.store.views import connect

    ent = dict(connect(tiny[0]).execute("SELECT image_id, score FROM scores WHERE metric = 'entropy'").fetchall())
    mf = pd.read_parquet(path)
    hits = sum(ent[a] > ent[b] for a, b in zip(mf["image_a_id"], mf["image_b_id"]))  # every pref is 'a'
    assert rows[0]["n_pairs"] == 9 and rows[0]["strict_acc"] == pytest.approx(hits / 9)
    assert rows[0]["synthetic"] is False


# --- analysis ---------------------------------------------------------------------------------------------------------


def _vote_by(study_dir: Path, rater: str, pick) -> None:
    con = db.connect(study_dir)
    for p in _presentations(study_dir, rater):
        db.record_vote(con, rater, p["pres_id"], pick(p), 1000, f"k-{rater}-{p['seq']}")
    con.close()


def test_analyse_rates_cis_bradley_terry_consistency_and_the_exclusion_rule(tiny, tmp_path):
    from statsmodels.stats.proportion import proportion_confint

    sd = tmp_path / "n"
    study = _create(tiny, sd, n_attention=2)
    (r1, _), (r2, _), (r3, _) = db.invite(sd, study, 3)
    _vote_by(sd, r1, _rule)
    _vote_by(sd, r2, _prefers(("fake_sharp", "fake_noisy", "fake_soft")))
    _vote_by(sd, r3, lambda p: "left")  # always left: fails attention checks whose good side is right
    pres3 = _presentations(sd, r3)
    fails3 = sum(p["correct"] == "right" for p in pres3 if p["kind"] == "attention")
    assert fails3 >= 1, "seed 0 must give r3 an attention check on the right"

    res = analyse.analyse(sd, n_boot=300)
    raters = res["raters"].set_index("rater")
    assert raters.loc[r3, "excluded"] and raters.loc[r3, "reason"].startswith(f"failed {fails3} of 2")
    assert not raters.loc[r1, "excluded"] and raters.loc[r1, "consistency"] == 1.0
    assert raters.loc[r3, "consistency"] == 0.0  # always left on a repeat with swapped sides
    # r1: sharp > soft > noisy; r2: sharp > noisy > soft. Over 9 trials each:
    pref = res["preference"].set_index("run")
    assert pref.loc["fake_sharp", ["wins", "comparisons"]].tolist() == [12, 12]
    assert pref.loc["fake_soft", ["wins", "comparisons"]].tolist() == [3, 12]
    assert pref.loc["fake_noisy", ["wins", "comparisons"]].tolist() == [3, 12]
    lo, hi = proportion_confint(3, 12, method="wilson")
    assert pref.loc["fake_soft", ["wilson_lo", "wilson_hi"]].tolist() == pytest.approx([lo, hi])
    assert pref.loc["fake_sharp", ["boot_lo", "boot_hi"]].tolist() == [1.0, 1.0]  # it won on every image
    assert pref.loc["fake_soft", "boot_lo"] <= 0.25 <= pref.loc["fake_soft", "boot_hi"]
    bt = res["bradley_terry"]
    assert bt["run"].iloc[0] == "fake_sharp" and bt["bt_log_strength"].sum() == pytest.approx(0, abs=1e-9)
    soft, noisy = (bt.set_index("run").loc[r, "bt_log_strength"] for r in ("fake_soft", "fake_noisy"))
    assert soft == pytest.approx(noisy, abs=1e-6)  # symmetric data, equal strengths
    pw = res["pairwise"].set_index(["run_a", "run_b"])
    assert pw.loc[("fake_soft", "fake_noisy"), ["n", "wins_a"]].tolist() == [6, 3]
    assert pw.loc[("fake_soft", "fake_noisy"), "p_binomial"] == pytest.approx(1.0)
    record = json.loads((sd / "analysis" / "analysis.json").read_text())
    assert record["excluded"] == {r3: raters.loc[r3, "reason"]} and "more than 0 attention" in record["exclusion_rule"]
    md = (sd / "analysis" / "userstudy.md").read_text()
    assert "| 1 | fake_sharp | 12 | 12 | 1.000 [0.758, 1.000]" in md
    for name in ("userstudy_preference", "userstudy_bradley_terry"):
        assert (sd / "analysis" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (sd / "analysis" / "userstudy.html").read_text()

    # a looser rule keeps r3 (and its always-left votes count); --exclude drops r2 by hand, recorded
    loose = analyse.analyse(sd, max_attention_failures=2, exclude=(r2,), n_boot=50, out=tmp_path / "loose")
    assert set(loose["raters"].loc[loose["raters"]["excluded"], "rater"]) == {r2}
    assert loose["preference"]["comparisons"].sum() == 2 * 2 * 9
    assert json.loads((tmp_path / "loose" / "analysis.json").read_text())["exclude"] == [r2]

    # export applies the same rule: r3's votes are not in the manifest
    _path, _, _ = export.export(sd, tiny[0])
    ov = pd.read_csv(sd / "export" / "votes.csv")["observer_votes"].map(json.loads)
    assert all(set(v) == {r1, r2} for v in ov)
    # more votes later change existing pairs: the store asks for --replace
    (r4, _), = db.invite(sd, study, 1)
    _vote_by(sd, r4, _rule)
    with pytest.raises(StudyError, match="--replace"):
        export.export(sd, tiny[0])
    assert export.export(sd, tiny[0], replace=True)[1].replaced


def test_cli_create_invite_status_and_the_demo_study(tiny, tmp_path, capsys):
    store, ts = tiny
    sd = tmp_path / "cli"
    assert main(["userstudy", "create", "--store", str(store.root), "--test-set", ts, "--runs",
                 "fake_sharp,fake_soft", "-o", str(sd), "--attention", "1", "--name", "cli-study"]) == 0
    assert "study 'cli-study' (dataset userstudy:cli-study): 3 trials on 3 test images" in capsys.readouterr().out
    assert main(["userstudy", "invite", str(sd), "--n", "3", "--base-url", "http://127.0.0.1:9000/"]) == 0
    lines = capsys.readouterr().out.splitlines()
    tokens = [line.split("/s/")[1] for line in lines]
    assert [line.split("\t")[0] for line in lines] == ["r1", "r2", "r3"] and len(set(tokens)) == 3
    assert all(line.split("\t")[1].startswith("http://127.0.0.1:9000/s/") and len(t) == 32 for line, t in
               zip(lines, tokens))
    assert tokens[0] not in (sd / "votes.sqlite").read_bytes().decode("latin-1")  # only hashes are stored
    assert main(["userstudy", "status", str(sd), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert [(r["rater"], r["done"], r["total"]) for r in st] == [("r1", 0, 5), ("r2", 0, 5), ("r3", 0, 5)]
    assert main(["userstudy", "analyse", str(sd)]) == 2
    assert "no votes to analyse (3 rater(s) invited" in capsys.readouterr().err
    assert main(["userstudy", "invite", str(sd), "--n", "0"]) == 2

    # the demo's study: one scripted rater (PSNR against the reference) ranks the PSNR-best run first
    from bench.userstudy import demo_study

    page = demo_study(store, ts, list(RUNS), tmp_path / "demo")
    assert page == tmp_path / "demo" / "analysis" / "userstudy.html" and "SYNTHETIC votes" in page.read_text()
    rec = json.loads((tmp_path / "demo" / "analysis" / "analysis.json").read_text())
    assert rec["excluded"] == {} and rec["scripted_raters"] == ["r1"]
    assert rec["bradley_terry"][0]["run"] == "fake_sharp"
    assert rec["raters"][0]["attention_failed"] == 0 and rec["raters"][0]["consistency"] == 1.0
    assert scripted.RULE.startswith("prefers the image with the higher PSNR")
