"""Writing betons safely: fail fast, skip bad input on request, never leave half a file.

The file layout is FFCV's own (header, field descriptors, one metadata row per sample, data
pages, allocation table), written with FFCV's page allocator so any FFCV `Loader` reads it. What
this module changes is the control around it: FFCV's `DatasetWriter` polls forever when a worker
dies, and writes straight to the final name. Here a worker's failure stops the write within a
second or so with the failing sample's name, the workers die with the main process, and the
output is renamed into place only once the beton and its manifest are complete.

A source is any object with `len(source)`, `source[i] -> tuple` (one value per field, in field
order) and optionally `source.describe(i) -> str` naming sample i in messages (a file path).
Raising `BadSample` (data/sources.py) from `source[i]` marks input that cannot be used (a
corrupt file, say): the write fails on it, or skips it and reports it, as `on_error` says. Any
other exception fails. The worker processes are data/write_workers.py's; the partial file, the
signals and the renames data/safe_write.py's; copies data/copying.py's.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import List, Mapping, Optional, Tuple

import numpy as np
from ffcv.fields import Field, FloatField, IntField, NDArrayField, RGBImageField
from ffcv.types import ALLOC_TABLE_TYPE, CURRENT_VERSION, FieldDescType, HeaderType
from ffcv.utils import align_to_page
from ffcv.writer import MIN_PAGE_SIZE

from fkd_ffcv.data.beton import Beton
from fkd_ffcv.data.fields import CUSTOM_TYPE_ID, VerbatimField, check_field_names, descriptor_of
from fkd_ffcv.data.manifest import Manifest
from fkd_ffcv.data.safe_write import WriteError, partial_output, publish
from fkd_ffcv.data.write_workers import describe, run_workers
from fkd_ffcv.defaults import ON_ERROR, PAGE_SIZE

# Linux writes at most 2 GiB - 4 KiB per write() and FFCV's allocator ignores short writes.
MAX_PAGE = 2 ** 30


@dataclass
class WriteReport:
    path: Path
    num_samples: int                      # samples in the written beton
    skipped: List[Tuple[str, str]] = dataclass_field(default_factory=list)  # (name, reason)
    seconds: float = 0.0


def write_beton(path, fields: Mapping[str, Field], source, *, num_workers: int = -1,
                chunk_size: int = 100, page_size: int = 0,
                on_error: str = 'fail', manifest: Optional[Manifest] = None,
                progress: bool = True) -> WriteReport:
    """Write every sample of `source` to the beton `path` (see the module docstring).

    `manifest` holds the facts for the sidecar the writer cannot know (class names, source,
    options, records); the writer adds the file's own. `page_size`
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

    started = time.perf_counter()
    with partial_output(path) as tmp:
        layout = _Layout.create(tmp, fields, num_samples, page_size)
        allocations, skipped, pages = run_workers(tmp, layout, fields, source, num_workers,
                                                  chunk_size, on_error, progress, path.name)
        try:
            kept = layout.finish(tmp, allocations, [ix for ix, _ in skipped], pages)
            if kept:
                report = WriteReport(path, kept, [(describe(source, ix), why)
                                                  for ix, why in skipped])
                _publish(tmp, path, fields, report, manifest or Manifest())
        except (OSError, ValueError) as e:
            raise WriteError(f"{path}: {e}") from e
        if kept == 0:
            raise WriteError(f"{path}: every one of the {num_samples} samples was skipped;"
                             f" first: {describe(source, skipped[0][0])}: {skipped[0][1]}")
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


def _publish(tmp: Path, path: Path, fields, report: WriteReport, given: Manifest) -> None:
    """Check the finished file reads back, write its manifest, then rename both into place."""
    custom = {name: type(getattr(f, 'source_field', f)) for name, f in fields.items()
              if descriptor_of(f).type_id == CUSTOM_TYPE_ID}
    beton = Beton(tmp, custom_fields=custom)
    dataclasses.replace(
        given, beton=path.name, fingerprint=beton.fingerprint(), num_samples=beton.num_samples,
        fields={name: f'{type(f).__module__}.{type(f).__qualname__}'
                for name, f in beton.fields.items()},
        skipped=list(report.skipped), written_at=time.strftime('%Y-%m-%dT%H:%M:%S%z'),
    ).write(tmp)
    publish(tmp, path)
