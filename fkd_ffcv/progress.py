"""Progress bars that show in a terminal and stay out of logs."""
from __future__ import annotations

from tqdm import tqdm


def bar(enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar, shown when `enabled` and stderr is a terminal: a redirected log gets no
    '\\r' frames (per-epoch lines and summaries are printed either way)."""
    return tqdm(disable=None if enabled else True, **kwargs)
