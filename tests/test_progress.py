"""Progress in logs: whole lines at most once per interval (tqdm alone writes \\r frames into files)."""

import io
import time

from bench.progress import progress_bar


def test_non_tty_progress_is_whole_lines_at_most_once_per_interval():
    out = io.StringIO()
    with progress_bar(total=200, desc="score", unit="img", file=out, interval=0.25) as bar:
        t0 = time.perf_counter()
        for _ in range(200):
            time.sleep(0.005)
            bar.update(1)
        elapsed = time.perf_counter() - t0
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines[-1].startswith("score: 100%") and "200/200" in lines[-1]
    assert 2 <= len(lines) <= 2 + elapsed / 0.25 + 1  # first, one per interval, final
    assert all(len(ln) < 200 for ln in lines)


def test_disabled_progress_writes_nothing():
    out = io.StringIO()
    with progress_bar(total=5, file=out, disable=True) as bar:
        bar.update(5)
    assert out.getvalue() == ""
