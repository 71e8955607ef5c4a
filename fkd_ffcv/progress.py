"""Progress bars that show in a terminal and stay out of logs."""
from __future__ import annotations

import os
import sys

from tqdm import tqdm


def _terminal_size(stream) -> tuple:
    """(columns, rows) of the terminal `stream` writes to. A pseudo-terminal that nobody sized
    (`script`, `docker exec -t`, a pty opened by a program) reports 0 x 0, which tqdm reads as
    no room at all and draws nothing; such a terminal gets $COLUMNS x $LINES, else 80 x 24."""
    try:
        columns, rows = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        columns = rows = 0

    def env(name: str, fallback: int) -> int:
        value = os.environ.get(name, '')
        return int(value) if value.isdigit() and int(value) > 0 else fallback

    return columns or env('COLUMNS', 80), rows or env('LINES', 24)


def bar(enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar on stderr, drawn when `enabled` and stderr is a terminal: a redirected log
    gets no '\\r' frames (per-epoch lines and summaries are printed either way). Takes tqdm's
    arguments (`iterable=` wraps a loader)."""
    stream = sys.stderr
    try:
        shown = enabled and stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        shown = False
    if shown:
        columns, rows = _terminal_size(stream)
        kwargs.setdefault('ncols', columns - 1)  # tqdm's own margin: no wrap at the last column
        kwargs.setdefault('nrows', rows)
    return tqdm(disable=not shown, file=stream, **kwargs)
