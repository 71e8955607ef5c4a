"""Writing a file so that its final name only ever holds a complete file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, IO


def atomic_write(path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(f)` on a partial file next to `path`, flush it to disk, rename it to `path`.
    A crash leaves the previous `path` (or none) and at most a dot-file named after it."""
    path = Path(path)
    partial = path.with_name(f'.{path.name}.partial-{os.getpid()}')
    try:
        with open(partial, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        folder = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    finally:
        partial.unlink(missing_ok=True)
    return path
