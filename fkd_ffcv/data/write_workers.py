"""The writer's worker processes: each takes chunks of sample indices, asks the source for
the samples, checks every value against its field (FFCV's fields store some wrong values
silently) and writes it with FFCV's page allocator. A worker's failure reaches the main process
as one message naming the sample; a worker that dies is noticed within a couple of seconds, and
workers die with the main process.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import pickle
import queue
import signal
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from ffcv.fields import (BytesField, Field, IntField, JSONField, NDArrayField, RGBImageField,
                         TorchTensorField)
from ffcv.memory_allocator import MemoryAllocator
from numba.core.compiler_lock import global_compiler_lock

from fkd_ffcv.data.fields import MAX_SIDE, VerbatimField
from fkd_ffcv.data.safe_write import STOP_SIGNALS, WriteError
from fkd_ffcv.data.sources import BadSample
from fkd_ffcv.progress import bar as progress_bar


def describe(source, index: int) -> str:
    """Sample `index` as the source names it in messages (a file path), else its index."""
    fn = getattr(source, 'describe', None)
    return fn(index) if fn is not None else f"sample {index}"


def run_workers(tmp, layout, fields, source, num_workers, chunk_size, on_error, progress,
                label):
    """Run the worker processes; returns (allocations, skipped, pages written)."""
    ctx = mp.get_context('fork')  # workers inherit the source (open files, memmaps) as is
    results = ctx.Queue()  # small messages only: a worker killed mid-send cannot wedge get()
    next_chunk = ctx.Value(ctypes.c_int64, 0)
    done = ctx.RawArray(ctypes.c_uint64, num_workers)      # one writer per slot: no lock that
    current = ctx.RawArray(ctypes.c_int64, [-1] * num_workers)  # a dying worker could hold
    allocator = MemoryAllocator(str(tmp), layout.data_start, layout.page_size)
    workers = [ctx.Process(target=_worker, daemon=True,
                           args=(wid, os.getpid(), results, tmp, layout, fields, source,
                                 allocator, next_chunk, chunk_size, done, current, on_error))
               for wid in range(num_workers)]
    # Workers start with SIGTERM/SIGHUP blocked and unblock them once their handlers are the
    # default again: a stop signal in between is then neither lost nor run by the main
    # process's handler in the child.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        # A worker is a fork of this process, whose other threads (a loader's, say) may be
        # compiling with numba at that moment: the worker's copy of numba's compiler lock would
        # then be held by a thread it does not have, and the worker would wait for it forever
        # at its first compile. Forking while holding the lock leaves it held by the worker's
        # only thread, which takes it again as often as it likes (the lock is re-entrant).
        with global_compiler_lock:
            for w in workers:
                w.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    allocations, skipped, finished, gone_since = [], [], set(), {}
    bar = progress_bar(progress, total=layout.num_samples, unit='img',
                       desc=f"writing {label}", smoothing=0.1)
    try:
        while len(finished) < num_workers:
            try:
                kind, wid, payload = results.get(timeout=0.05)
            except queue.Empty:
                pass
            else:
                if kind == 'error':
                    index, text, bad_input = payload
                    where = describe(source, index) if index >= 0 else f"writer worker {wid}"
                    hint = ("; the write stops at the first unusable input it meets: "
                            "on_error='skip' (--write.on_error=skip) writes the others and "
                            "lists every unusable one" if bad_input else "")
                    raise WriteError(f"{where}: {text}{hint}")
                with open(_result_file(tmp, wid), 'rb') as f:
                    worker_allocations, worker_skipped = pickle.load(f)
                allocations.extend(worker_allocations)
                skipped.extend(worker_skipped)
                finished.add(wid)
            now = time.monotonic()
            for wid, w in enumerate(workers):
                if wid in finished or w.exitcode is None:
                    continue
                # A worker that exited has sent its message already; allow it time to arrive.
                if now - gone_since.setdefault(wid, now) > 2.0:
                    index = current[wid]
                    where = describe(source, index) if index >= 0 else "outside any sample"
                    raise WriteError(f"writer worker {wid} died (exit code {w.exitcode}) while "
                                     f"writing {where}")
            bar.update(sum(done) - bar.n)
    finally:
        bar.close()
        for w in workers:
            if w.is_alive():
                w.terminate()
        for w in workers:
            w.join(timeout=2)
            if w.is_alive():
                w.kill()
                w.join()
    skipped.sort()
    return allocations, skipped, allocator.next_page_allocated.value


def _result_file(tmp: Path, wid: int) -> Path:
    return tmp.with_name(f"{tmp.name}.worker-{wid}")


def _worker(wid, parent, results, tmp, layout, fields, source, allocator, next_chunk,
            chunk_size, done, current, on_error):
    for sig in STOP_SIGNALS:  # not the main process's handler (forked)
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    _die_with_parent(parent)
    try:
        metadata = layout.metadata(tmp)
        columns = [metadata[name] for name in metadata.dtype.names]
        skipped = []
        with allocator:
            try:
                while True:
                    with next_chunk.get_lock():
                        start = next_chunk.value * chunk_size
                        next_chunk.value += 1
                    if start >= layout.num_samples:
                        break
                    for index in range(start, min(start + chunk_size, layout.num_samples)):
                        current[wid] = index
                        try:
                            _write_sample(index, source, fields, columns, allocator,
                                          layout.page_size)
                        except BadSample as e:
                            if on_error == 'fail':
                                raise
                            skipped.append((index, str(e)))
                        done[wid] += 1
                current[wid] = -1
            except BaseException as e:
                _report_and_exit(results, wid, current[wid], e)  # never flushes its page
        metadata.flush()
        result = _result_file(tmp, wid)
        partial = result.with_name(result.name + '.tmp')
        with open(partial, 'wb') as f:
            pickle.dump((allocator.allocations, skipped), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(partial, result)
        results.put(('ok', wid, None))
        results.close()
        results.join_thread()
    except BaseException as e:
        _report_and_exit(results, wid, current[wid], e)


def _report_and_exit(results, wid, index, error):
    text = str(error) if isinstance(error, (BadSample, WriteError)) else \
        f"{type(error).__name__}: {error}\n{traceback.format_exc()}"  # the error first
    if len(text) > 3000:  # one pipe write of at most PIPE_BUF bytes is atomic
        text = text[:1400] + "\n...\n" + text[-1400:]
    results.put(('error', wid, (int(index), text.rstrip(), isinstance(error, BadSample))))
    results.close()
    results.join_thread()
    os._exit(1)  # skip flushing pages and every other exit handler: the main process cleans up


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this worker if the main process dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def _write_sample(index, source, fields, columns, allocator, page_size):
    sample = source[index]
    if not isinstance(sample, tuple) or len(sample) != len(fields):
        got = f"{len(sample)} values" if isinstance(sample, tuple) else type(sample).__name__
        raise WriteError(f"the source gave {got}; a tuple of {len(fields)} values is expected "
                         f"(fields: {', '.join(fields)})")

    def malloc(size):
        if size > page_size:
            raise WriteError(f"a value needs {size} B, more than the page size ({page_size} B): "
                             f"raise page_size or lower max_resolution")
        return allocator.malloc(size)

    allocator.set_current_sample(index)
    for attempt in range(2):
        try:
            for (name, fld), value, column in zip(fields.items(), sample, columns):
                _check_value(name, fld, value)
                fld.encode(column[index:index + 1], value, malloc)
            return
        except MemoryError:  # the sample did not fit in the page: FFCV's allocator moved on
            if attempt == 1:
                raise WriteError(f"the sample's fields together need more than one page "
                                 f"({page_size} B): raise page_size") from None


def _check_value(name: str, fld: Field, value) -> None:
    """Reject values FFCV's fields would store wrongly or not at all."""
    if isinstance(fld, (VerbatimField, JSONField)):
        return  # JSONField encodes any JSON-serialisable value and says so when it cannot
    if isinstance(fld, TorchTensorField):
        if not torch.is_tensor(value) or value.numpy().dtype != fld.dtype \
                or tuple(value.shape) != tuple(fld.shape):
            raise WriteError(f"field {name!r} expects a {fld.dtype} tensor {tuple(fld.shape)}")
    elif isinstance(fld, NDArrayField):
        if not isinstance(value, np.ndarray) or value.dtype != fld.dtype \
                or value.shape != tuple(fld.shape):
            got = (f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray)
                   else type(value).__name__)
            raise WriteError(f"field {name!r} expects {fld.dtype} {tuple(fld.shape)}, got {got}")
    elif isinstance(fld, BytesField):
        if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 1 \
                or value.size == 0:
            raise WriteError(f"field {name!r} expects a non-empty 1-D uint8 array")
    elif isinstance(fld, RGBImageField):
        if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 3 \
                or value.shape[2] != 3 or min(value.shape[:2]) < 1:
            got = (f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray)
                   else type(value).__name__)
            raise WriteError(f"field {name!r} expects uint8 HxWx3 pixels, got {got}")
        if fld.max_resolution is None and max(value.shape[:2]) > MAX_SIDE:
            raise WriteError(f"field {name!r}: FFCV stores sides up to {MAX_SIDE} px, got "
                             f"{value.shape[1]}x{value.shape[0]}; set max_resolution")
    elif isinstance(fld, IntField):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise WriteError(f"field {name!r} expects an int, got {type(value).__name__}")
