"""Progress for long work: tqdm's bar (rate, ETA) on a terminal; one plain line per interval elsewhere.

tqdm writes ``\\r``-separated frames even when its stream is a file or a pipe, so ``make demo > log`` got
single lines of many KB. :func:`progress` keeps tqdm's bar for a TTY and, for anything else, the same text
(count, rate, ETA) as one ``\\n``-terminated line at most every ``interval`` seconds, plus the final one.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between lines in a log


class _LineBar(tqdm):
    """tqdm that prints whole lines (no carriage returns, no cursor moves)."""

    def display(self, msg=None, pos=None):
        text = (self.__str__() if msg is None else msg).strip()
        if text:
            self.fp.write(text + "\n")
            self.fp.flush()
        return True


def progress_bar(iterable=None, *, interval: float = LOG_INTERVAL, **kwargs):
    """``tqdm(iterable, **kwargs)`` on a terminal, else a line-per-``interval`` bar with the same fields."""
    fp = kwargs.get("file") or sys.stderr
    if kwargs.get("disable") or getattr(fp, "isatty", lambda: False)():
        return tqdm(iterable, **kwargs)
    for k in ("dynamic_ncols", "position"):
        kwargs.pop(k, None)
    return _LineBar(iterable, mininterval=interval, maxinterval=interval, ascii=True, **kwargs)
