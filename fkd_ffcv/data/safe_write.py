"""Writing under a final name that only ever holds a complete file: the output is written to a
partial file beside it (named after the host and process), SIGTERM/SIGHUP stop the write as an
exception so that cleanup runs, partials of writers killed on this host are removed, and the
finished file and its manifest are renamed into place, manifest first.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List

from fkd_ffcv.data.manifest import manifest_path

STOP_SIGNALS = {signal.SIGTERM, signal.SIGHUP}


class WriteError(RuntimeError):
    """The write was stopped; the output name holds what it held before (an earlier file, or
    nothing), and no partial file is left."""


@contextmanager
def partial_output(path: Path) -> Iterator[Path]:
    """The partial file to write `path` through. Whatever starts with its name (the partial,
    its manifest, workers' results) is removed on the way out, however the write ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_partials(path)
    tmp = path.with_name(f".{path.name}.partial-{socket.gethostname()}-{os.getpid()}")
    try:
        with _stop_signals_as_error():
            yield tmp
    finally:
        for leftover in _starting_with(path.parent, tmp.name):
            leftover.unlink(missing_ok=True)


def publish(tmp: Path, path: Path) -> None:
    """Rename the finished partial and its manifest into place, durably."""
    # Manifest first: a crash between the two renames leaves a manifest whose fingerprint does
    # not match the old beton, which Beton.manifest reports instead of trusting.
    os.replace(manifest_path(tmp), manifest_path(path))
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def _stop_signals_as_error():
    """Turn SIGTERM/SIGHUP into an exception while writing, so that cleanup runs (workers
    stopped, partial file removed) when the writer is killed politely."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise WriteError(f"stopped by signal {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _remove_abandoned_partials(path: Path) -> None:
    """Delete partial outputs for `path` that writers on this host left when killed (their
    process is gone). Partials of other hosts sharing the folder are left alone."""
    prefix = f".{path.name}.partial-{socket.gethostname()}-"
    for partial in _starting_with(path.parent, prefix):
        pid = partial.name[len(prefix):].split('.')[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            partial.unlink(missing_ok=True)


def _starting_with(directory: Path, prefix: str) -> List[Path]:
    """Files in `directory` whose names start with `prefix` (no glob: names may hold '[')."""
    return [directory / name for name in os.listdir(directory) if name.startswith(prefix)]
