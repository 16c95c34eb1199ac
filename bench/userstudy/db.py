"""STUDY/votes.sqlite: raters, their presentation schedules and their votes.

Durability: WAL journal, ``synchronous=FULL`` on every connection, one ``BEGIN IMMEDIATE``
transaction per vote; the server answers only after the COMMIT has returned, so an acknowledged
vote is on disk (a kill -9 of the server, or of the machine after the fsync, loses nothing
acknowledged). Concurrent raters (threads or several server processes) are serialised by
SQLite's write lock; a vote is one row, unique per (rater, presentation) and per (rater,
idempotency key), so a retried request or a double click is recorded once.

Tokens: ``secrets.token_urlsafe(24)`` (192 random bits), printed once by `invite`; only their
SHA-256 is stored, so the database alone does not let anyone vote. Raters are known to every other
part of the suite by anonymous ids r1, r2, ... (order of invitation).

Tables: ``raters(rater_id, idx, token_sha256, scripted, created_at)``; ``presentations(rater_id,
seq, pres_id, kind, trial_id, left_run, right_run, left_image, right_image, reference, correct,
repeat_of)`` with kind 'main' | 'repeat' | 'attention' (``correct``: the undegraded side of an
attention check); ``votes(rater_id, pres_id, trial_id, kind, left_run, right_run, choice,
chosen_run, rt_ms, idem_key, created_at)``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import sqlite3
from pathlib import Path

from bench.errors import StudyError

DB_NAME = "votes.sqlite"
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
SCHEMA = """
CREATE TABLE IF NOT EXISTS raters (
    rater_id TEXT PRIMARY KEY, idx INTEGER NOT NULL UNIQUE, token_sha256 TEXT NOT NULL UNIQUE,
    scripted INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS presentations (
    rater_id TEXT NOT NULL REFERENCES raters(rater_id), seq INTEGER NOT NULL, pres_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('main', 'repeat', 'attention')), trial_id TEXT NOT NULL,
    left_run TEXT NOT NULL, right_run TEXT NOT NULL, left_image TEXT NOT NULL, right_image TEXT NOT NULL,
    reference TEXT, correct TEXT CHECK (correct IN ('left', 'right')), repeat_of TEXT,
    PRIMARY KEY (rater_id, pres_id), UNIQUE (rater_id, seq));
CREATE TABLE IF NOT EXISTS votes (
    rater_id TEXT NOT NULL, pres_id TEXT NOT NULL, trial_id TEXT NOT NULL, kind TEXT NOT NULL,
    left_run TEXT NOT NULL, right_run TEXT NOT NULL, choice TEXT NOT NULL CHECK (choice IN ('left', 'right')),
    chosen_run TEXT NOT NULL, rt_ms INTEGER NOT NULL, idem_key TEXT NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (rater_id, pres_id), UNIQUE (rater_id, idem_key),
    FOREIGN KEY (rater_id, pres_id) REFERENCES presentations(rater_id, pres_id));
"""


def path(study_dir: str | Path) -> Path:
    return Path(study_dir) / DB_NAME


def connect(study_dir: str | Path, must_exist: bool = True) -> sqlite3.Connection:
    p = path(study_dir)
    if must_exist and not p.is_file():
        raise StudyError(f"{study_dir}: no {DB_NAME} (not a user study folder made by `iqa-study userstudy create`)")
    con = sqlite3.connect(p, timeout=30, isolation_level=None)  # autocommit; transactions are explicit
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("PRAGMA foreign_keys=ON")
    con.execute("PRAGMA busy_timeout=30000")
    return con


def init(study_dir: Path) -> None:
    con = connect(study_dir, must_exist=False)
    try:
        con.executescript(SCHEMA)
    finally:
        con.close()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def invite(study_dir: Path, study: dict, n: int, scripted: bool = False) -> list[tuple[str, str]]:
    """Add ``n`` raters (schedules from bench.userstudy.design.schedule); returns (rater_id, token) each."""
    from bench.userstudy.design import schedule

    if n <= 0:
        raise StudyError(f"--n {n}: expected a positive number of raters")
    con = connect(study_dir)
    out = []
    try:
        con.execute("BEGIN IMMEDIATE")
        start = con.execute("SELECT coalesce(max(idx) + 1, 0) FROM raters").fetchone()[0]
        for idx in range(start, start + n):
            token = secrets.token_urlsafe(24)
            rater = f"r{idx + 1}"
            con.execute("INSERT INTO raters VALUES (?, ?, ?, ?, ?)", (rater, idx, token_hash(token), int(scripted), now()))
            con.executemany(
                "INSERT INTO presentations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(rater, p["seq"], p["pres_id"], p["kind"], p["trial_id"], p["left_run"], p["right_run"],
                  p["left_image"], p["right_image"], p["reference"], p["correct"], p["repeat_of"])
                 for p in schedule(study, idx)])
            out.append((rater, token))
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    finally:
        con.close()
    return out


def rater_of(con: sqlite3.Connection, token: str) -> str | None:
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        return None
    row = con.execute("SELECT rater_id FROM raters WHERE token_sha256 = ?", (token_hash(token),)).fetchone()
    return row[0] if row else None


def _progress(con: sqlite3.Connection, rater: str) -> tuple[int, int, sqlite3.Row | None]:
    total = con.execute("SELECT count(*) FROM presentations WHERE rater_id = ?", (rater,)).fetchone()[0]
    done = con.execute("SELECT count(*) FROM votes WHERE rater_id = ?", (rater,)).fetchone()[0]
    nxt = con.execute("""SELECT p.* FROM presentations p LEFT JOIN votes v USING (rater_id, pres_id)
                         WHERE p.rater_id = ? AND v.pres_id IS NULL ORDER BY p.seq LIMIT 1""", (rater,)).fetchone()
    return done, total, nxt


def state(con: sqlite3.Connection, rater: str, images: dict) -> dict:
    """What the page needs: progress and the next presentation (None when finished). Never names a run."""
    done, total, nxt = _progress(con, rater)
    trial = None
    if nxt is not None:
        meta = images[nxt["left_image"]]
        trial = {"id": nxt["pres_id"], "seq": nxt["seq"], "left": nxt["left_image"], "right": nxt["right_image"],
                 "reference": nxt["reference"], "width": meta["width"], "height": meta["height"]}
    return {"done": done, "total": total, "trial": trial}


class VoteRejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def record_vote(con: sqlite3.Connection, rater: str, pres_id: str, choice: str, rt_ms: int, key: str) -> bool:
    """Store one vote durably; True when new, False for a repeat of an acknowledged one (same key).

    VoteRejected(404) for a presentation the rater does not have, (409) for one already answered
    with another key, one that is not the rater's next, or a key reused for another vote."""
    con.execute("BEGIN IMMEDIATE")
    try:
        same = con.execute("SELECT pres_id, choice FROM votes WHERE rater_id = ? AND idem_key = ?",
                           (rater, key)).fetchone()
        if same is not None:
            if (same["pres_id"], same["choice"]) != (pres_id, choice):
                raise VoteRejected(409, f"idempotency key already used for another vote ({same['pres_id']})")
            con.execute("COMMIT")
            return False
        pres = con.execute("SELECT * FROM presentations WHERE rater_id = ? AND pres_id = ?", (rater, pres_id)).fetchone()
        if pres is None:
            raise VoteRejected(404, f"unknown trial {pres_id!r} for this rater")
        if con.execute("SELECT 1 FROM votes WHERE rater_id = ? AND pres_id = ?", (rater, pres_id)).fetchone():
            raise VoteRejected(409, f"trial {pres_id} is already answered")
        _, _, nxt = _progress(con, rater)
        if nxt["pres_id"] != pres_id:
            raise VoteRejected(409, f"trial {pres_id} is not the next one (expected {nxt['pres_id']})")
        chosen = pres["left_run"] if choice == "left" else pres["right_run"]
        con.execute("INSERT INTO votes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (rater, pres_id, pres["trial_id"], pres["kind"], pres["left_run"], pres["right_run"], choice,
                     chosen, int(rt_ms), key, now()))
        con.execute("COMMIT")  # returns after the WAL is fsynced (synchronous=FULL)
        return True
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise


def votes_frame(study_dir: Path):
    """Every vote joined with its presentation (pandas), rater info included; empty frame when none."""
    import pandas as pd

    con = connect(study_dir)
    try:
        votes = pd.read_sql_query("""
            SELECT v.*, p.seq, p.correct, p.repeat_of, r.scripted, r.idx AS rater_idx
            FROM votes v JOIN presentations p USING (rater_id, pres_id) JOIN raters r USING (rater_id)
            ORDER BY r.idx, p.seq""", con)
        raters = pd.read_sql_query("""
            SELECT r.rater_id, r.idx, r.scripted, r.created_at,
                   (SELECT count(*) FROM presentations p WHERE p.rater_id = r.rater_id) AS total,
                   (SELECT count(*) FROM votes v WHERE v.rater_id = r.rater_id) AS done,
                   (SELECT max(created_at) FROM votes v WHERE v.rater_id = r.rater_id) AS last_vote
            FROM raters r ORDER BY r.idx""", con)
    finally:
        con.close()
    return votes, raters
