"""Writing betons safely: fail fast, skip bad input on request, never leave half a file.

The file layout is FFCV's own (header, field descriptors, one metadata row per sample, data
pages, allocation table), written with FFCV's page allocator so any FFCV `Loader` reads it. What
this module changes is the control around it: FFCV's `DatasetWriter` polls forever when a worker
dies, and writes straight to the final name. Here a worker's failure stops the write within a
second or so with the failing sample's name, the workers die with the main process, and the
output is renamed into place only once the beton and its manifest are complete.

A source is any object with `len(source)`, `source[i] -> tuple` (one value per field, in field
order) and optionally `source.describe(i) -> str` naming sample i in messages (a file path).
Raising `BadSample` from `source[i]` marks input that cannot be used (a corrupt file, say): the
write fails on it, or skips it and reports it, as `on_error` says. Any other exception fails.
"""
from __future__ import annotations

import ctypes
import json
import multiprocessing as mp
import os
import pickle
import queue
import signal
import socket
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import List, Mapping, Optional, Tuple

import numpy as np
import torch
from ffcv.fields import (BytesField, Field, FloatField, IntField, JSONField, NDArrayField,
                         RGBImageField, TorchTensorField)
from ffcv.memory_allocator import MemoryAllocator
from ffcv.types import ALLOC_TABLE_TYPE, CURRENT_VERSION, FieldDescType, HeaderType
from ffcv.utils import align_to_page
from ffcv.writer import MIN_PAGE_SIZE

from fkd_ffcv.data.beton import MANIFEST_FORMAT, Beton, manifest_path
from fkd_ffcv.defaults import ON_ERROR, PAGE_SIZE
from fkd_ffcv.data.fields import (CUSTOM_TYPE_ID, PATH_FIELD, RECORD_FIELDS, VerbatimField,
                     check_field_names, descriptor_of)
from fkd_ffcv.progress import bar as progress_bar

# Linux writes at most 2 GiB - 4 KiB per write() and FFCV's allocator ignores short writes.
MAX_PAGE = 2 ** 30
STOP_SIGNALS = {signal.SIGTERM, signal.SIGHUP}


class BadSample(Exception):
    """Raised by a source for an input sample that cannot be used (the message says why)."""


class WriteError(RuntimeError):
    """The write was stopped; the output name holds what it held before (an earlier file, or
    nothing), and no partial file is left."""


@dataclass
class WriteReport:
    path: Path
    num_samples: int                      # samples in the written beton
    skipped: List[Tuple[str, str]] = dataclass_field(default_factory=list)  # (name, reason)
    seconds: float = 0.0


def describe(source, index: int) -> str:
    fn = getattr(source, 'describe', None)
    return fn(index) if fn is not None else f"sample {index}"


def write_beton(path, fields: Mapping[str, Field], source, *, num_workers: int = -1,
                chunk_size: int = 100, page_size: int = 0,
                on_error: str = 'fail', manifest: Optional[dict] = None,
                progress: bool = True) -> WriteReport:
    """Write every sample of `source` to the beton `path` (see the module docstring).

    `manifest` holds extra facts for the sidecar (class names, source, options); `page_size`
    0 chooses it from the fields (auto_page_size). Returns a report; raises WriteError
    (leaving any earlier file at `path` untouched) on failure.
    """
    path = Path(path)
    fields = dict(fields)
    check_field_names(fields)
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    if page_size == 0:
        page_size = auto_page_size(sample_bound(fields), len(source))
    if page_size & (page_size - 1) or not MIN_PAGE_SIZE <= page_size <= MAX_PAGE:
        raise ValueError(f"page_size must be a power of two in [{MIN_PAGE_SIZE}, {MAX_PAGE}], "
                         f"not {page_size}")
    if path.is_dir():
        raise WriteError(f"{path} is a directory")
    num_samples = len(source)
    if num_samples == 0:
        raise WriteError(f"{path}: the source has no samples to write")
    if num_workers < 1:
        num_workers = len(os.sched_getaffinity(0))
    num_workers = min(num_workers, -(-num_samples // chunk_size))

    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_partials(path)
    tmp = path.with_name(f".{path.name}.partial-{socket.gethostname()}-{os.getpid()}")
    started = time.perf_counter()
    try:
        with _terminate_as_exception():
            layout = _Layout.create(tmp, fields, num_samples, page_size)
            allocations, skipped, pages = _run_workers(tmp, layout, fields, source,
                                                       num_workers, chunk_size, on_error,
                                                       progress, path.name)
            try:
                kept = layout.finish(tmp, allocations, [ix for ix, _ in skipped], pages)
                if kept:
                    report = WriteReport(path, kept, [(describe(source, ix), why)
                                                      for ix, why in skipped])
                    _publish(tmp, path, fields, report, manifest or {})
            except (OSError, ValueError) as e:
                raise WriteError(f"{path}: {e}") from e
            if kept == 0:
                raise WriteError(f"{path}: every one of the {num_samples} samples was skipped;"
                                 f" first: {describe(source, skipped[0][0])}: {skipped[0][1]}")
    finally:
        for leftover in _starting_with(path.parent, tmp.name):  # partial, manifest, results
            leftover.unlink(missing_ok=True)
    report.seconds = time.perf_counter() - started
    return report


# Bytes a stored value of unbounded size (a path, JSON) is allowed in a sample's bound.
SMALL_VALUE = 64 * 1024


def sample_bound(fields: Mapping[str, Field]) -> Optional[int]:
    """An upper bound of the bytes one sample of `fields` stores, or None when a field has
    none (an image without max_resolution, a verbatim copy). An image is bounded by twice its
    raw pixels, more than JPEG ever takes."""
    total = 0
    for fld in fields.values():
        if isinstance(fld, VerbatimField):
            return None
        if isinstance(fld, RGBImageField):
            if fld.max_resolution is None:
                return None
            total += 2 * 3 * fld.max_resolution ** 2
        elif isinstance(fld, NDArrayField):  # TorchTensorField too
            total += fld.dtype.itemsize * int(np.prod(fld.shape))
        elif not isinstance(fld, (IntField, FloatField)):  # stored in the metadata row
            total += SMALL_VALUE
    return total


def auto_page_size(per_sample: Optional[int], num_samples: int) -> int:
    """The page size when none is given: the smallest power of two from FFCV's minimum
    (2 MiB) that holds a sample's upper bound, so that small data sets stay small (a beton is
    at least two pages: the header's and one of data per worker); FFCV's default (8 MiB) for
    data sets whose bound exceeds 64 such pages (less space lost at the end of each page), and
    when a sample has no bound."""
    if per_sample is None:
        return PAGE_SIZE
    page = MIN_PAGE_SIZE
    while page < per_sample:
        page *= 2
    if per_sample * num_samples > 64 * PAGE_SIZE:
        page = max(page, PAGE_SIZE)
    if page > MAX_PAGE:
        raise ValueError(f"a sample may take {per_sample} B, more than the largest page "
                         f"({MAX_PAGE} B)")
    return page


@contextmanager
def _terminate_as_exception():
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


@dataclass
class _Layout:
    """Where the header, metadata and data pages of the file being written lie."""
    header: np.ndarray
    metadata_dtype: np.dtype
    metadata_start: int
    data_start: int
    num_samples: int
    page_size: int

    @classmethod
    def create(cls, tmp: Path, fields, num_samples: int, page_size: int) -> '_Layout':
        header = np.zeros(1, dtype=HeaderType)
        header['version'] = CURRENT_VERSION
        header['num_samples'] = num_samples
        header['num_fields'] = len(fields)
        header['page_size'] = page_size
        descriptors = np.zeros(len(fields), dtype=FieldDescType)
        for i, (name, fld) in enumerate(fields.items()):
            d = descriptor_of(fld)
            descriptors[i]['type_id'] = d.type_id
            encoded = np.frombuffer(name.encode('ascii'), dtype='<u1')
            descriptors[i]['name'][:len(encoded)] = encoded
            descriptors[i]['arguments'][:] = d.arguments
        # Same aligned layout FFCV's Reader derives from the descriptors.
        metadata_dtype = np.dtype([('', f.metadata_type) for f in fields.values()], align=True)
        metadata_start = HeaderType.itemsize + descriptors.nbytes
        data_start = metadata_start + metadata_dtype.itemsize * num_samples
        with open(tmp, 'wb') as f:
            f.write(header.tobytes())
            f.write(descriptors.tobytes())
            f.truncate(data_start)  # zero-filled metadata rows, filled in by the workers
        return cls(header, metadata_dtype, metadata_start, data_start, num_samples, page_size)

    def metadata(self, tmp: Path) -> np.memmap:
        return np.memmap(tmp, dtype=self.metadata_dtype, mode='r+', offset=self.metadata_start,
                         shape=(self.num_samples,))

    def finish(self, tmp: Path, allocations, skipped: List[int], pages: int) -> int:
        """Drop skipped samples, append the allocation table, write the header. Returns kept."""
        expected = (align_to_page(self.data_start, self.page_size) + pages * self.page_size
                    if pages else self.data_start)
        if tmp.stat().st_size != expected:
            raise WriteError(f"{tmp}: {tmp.stat().st_size} B written where {pages} pages make "
                             f"{expected} B (a short write: disk full?)")
        table = np.array(allocations, dtype=ALLOC_TABLE_TYPE).reshape(-1)
        metadata = np.array(self.metadata(tmp))
        keep = np.ones(self.num_samples, dtype=bool)
        keep[skipped] = False
        if skipped:
            # Rows of skipped samples go; the bytes they allocated stay unreferenced in the pages.
            new_id = np.cumsum(keep) - 1
            table = table[keep[table['sample_id']]]
            table['sample_id'] = new_id[table['sample_id']]
            metadata = metadata[keep]
        kept = int(keep.sum())
        header = self.header.copy()
        header['num_samples'] = kept
        with open(tmp, 'r+b') as f:
            f.seek(self.metadata_start)
            f.write(metadata.tobytes())
            header['alloc_table_ptr'] = f.seek(0, os.SEEK_END)
            f.write(table.tobytes())
            f.seek(0)
            f.write(header.tobytes())
            f.flush()
            os.fsync(f.fileno())
        return kept


def _publish(tmp: Path, path: Path, fields, report: WriteReport, extra: dict) -> None:
    """Check the finished file reads back, write its manifest, then rename both into place."""
    custom = {name: type(getattr(f, 'source_field', f)) for name, f in fields.items()
              if descriptor_of(f).type_id == CUSTOM_TYPE_ID}
    beton = Beton(tmp, custom_fields=custom)
    manifest = {
        'format': MANIFEST_FORMAT,
        'beton': path.name,
        'fingerprint': beton.fingerprint(),
        'num_samples': beton.num_samples,
        'fields': {name: f'{type(f).__module__}.{type(f).__qualname__}'
                   for name, f in beton.fields.items()},
        **extra,
        'skipped': [{'path': name, 'reason': why} for name, why in report.skipped],
        'written_at': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
    }
    tmp_manifest = manifest_path(tmp)
    with open(tmp_manifest, 'w') as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    # Manifest first: a crash between the two renames leaves a manifest whose fingerprint does
    # not match the old beton, which Beton.manifest reports instead of trusting.
    os.replace(tmp_manifest, manifest_path(path))
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --------------------------------------------------------------------------------------------
# Worker processes


def _run_workers(tmp, layout, fields, source, num_workers, chunk_size, on_error, progress,
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
        if fld.max_resolution is None and max(value.shape[:2]) > 65535:
            raise WriteError(f"field {name!r}: FFCV stores sides up to 65535 px, got "
                             f"{value.shape[1]}x{value.shape[0]}; set max_resolution")
    elif isinstance(fld, IntField):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise WriteError(f"field {name!r} expects an int, got {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# Copying


class _CopySource:
    """Samples of an existing beton, as stored, followed by the values of new fields."""

    def __init__(self, beton: Beton, keep: List[str], extra):
        self.beton, self.keep, self.extra = beton, keep, extra
        self._paths = beton.paths() if PATH_FIELD in beton.fields else None

    def __len__(self):
        return len(self.beton)

    def __getitem__(self, index):
        stored = tuple(self.beton.verbatim(name, index) for name in self.keep)
        if self.extra is None:
            return stored
        added = self.extra[index]
        if not isinstance(added, tuple):
            raise WriteError(f"new field values must come as a tuple, got {type(added).__name__}")
        return stored + added

    def describe(self, index):
        where = f"{self.beton.path.name}[{index}]"
        return f"{where} ({self._paths[index]})" if self._paths else where


def copy_beton(src, dst, add_fields: Optional[Mapping[str, Field]] = None, values=None, *,
               keep: Optional[List[str]] = None, custom_fields=None,
               manifest_updates: Optional[dict] = None, **write_options) -> WriteReport:
    """Write `dst` with the fields `keep` (default: all) of `src` copied byte for byte, plus
    `add_fields`, whose values for sample i are `values[i]` (a tuple in `add_fields` order).

    Images are never decoded or re-encoded. The manifest of `src` carries over, updated with
    `manifest_updates` and the copy's lineage. `dst` may be `src`: the old file stays readable
    until the new one replaces it.
    """
    beton = Beton(src, custom_fields=custom_fields)
    add_fields = dict(add_fields or {})
    if bool(add_fields) != (values is not None):
        raise ValueError("give both add_fields and values, or neither")
    if values is not None and len(values) != len(beton):
        raise ValueError(f"{len(values)} values for {len(beton)} samples of {beton.path}")
    keep = list(beton.field_names if keep is None else keep)
    for name in keep:
        beton.field_metadata(name)  # raises a clear KeyError for unknown names
    clash = set(keep) & set(add_fields)
    if clash:
        raise ValueError(f"{beton.path} already has field(s) {sorted(clash)}; drop them from "
                         f"`keep` to replace them")
    fields = {name: VerbatimField(beton.fields[name], beton.descriptors[name]) for name in keep}
    fields.update(add_fields)
    try:
        manifest = beton.manifest
    except FileNotFoundError:
        manifest = {}
    extra = {k: v for k, v in manifest.items()
             if k not in ('format', 'beton', 'fingerprint', 'num_samples', 'fields', 'skipped',
                          'written_at')}
    if not set(RECORD_FIELDS) & set(beton.field_names) <= set(keep):
        extra.pop('soft_labels', None)  # describe record fields this copy leaves out
        extra.pop('embeddings', None)
    extra.update(manifest_updates or {})
    # absolute: the copy may be read from another working directory than it was made in
    extra['derived_from'] = {'beton': os.path.abspath(src), 'fingerprint': beton.fingerprint(),
                             'num_samples': len(beton), 'bytes': beton.path.stat().st_size,
                             'written_at': manifest.get('written_at'),
                             'added_fields': list(add_fields)}
    if not write_options.get('page_size'):  # exact: the largest sample stored, plus the new
        stored = np.bincount(beton.alloc_table['sample_id'].astype(np.int64),
                             weights=beton.alloc_table['size'], minlength=len(beton))
        added = sample_bound(add_fields)
        write_options['page_size'] = auto_page_size(
            None if added is None else int(stored.max(initial=0)) + added, len(beton))
    return write_beton(dst, fields, _CopySource(beton, keep, values), manifest=extra,
                       **write_options)
