"""Headless Chromium for tests that must see what a browser does with a page (script execution).

No browser found: the test is skipped in one line, or fails when $IQA_STUDY_REQUIRE_BROWSER=1
(CI sets it, like IQA_STUDY_REQUIRE_SHARED for the real-data tests), so CI always runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

REQUIRE_BROWSER = "IQA_STUDY_REQUIRE_BROWSER"
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str:
    for name in NAMES:
        exe = shutil.which(name)
        if exe:
            return exe
    msg = f"no headless browser found ({', '.join(NAMES)}; Debian: apt-get install chromium)"
    if os.environ.get(REQUIRE_BROWSER) == "1":
        pytest.fail(f"{msg}; {REQUIRE_BROWSER}=1 makes this a failure", pytrace=False)
    pytest.skip(msg)


def dump_dom(page: Path, profile: Path, timeout: float = 90) -> str:
    """The DOM of ``page`` after it loaded (and after any script it ran), as Chromium serialises it."""
    done = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={profile}", "--virtual-time-budget=2000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0 and "<html" in done.stdout, done.stderr[-2000:]
    return done.stdout


class Dom(HTMLParser):
    """Tags, their attributes and the document title of a serialised DOM."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.title, self._in_title = "", False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False if tag == "title" else self._in_title

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def count(self, tag: str) -> int:
        return sum(t == tag for t, _ in self.tags)

    def handlers(self) -> list[str]:
        """Every ``on*`` event-handler attribute in the page."""
        return [f"{t} {k}" for t, a in self.tags for k in a if k.lower().startswith("on")]
