"""A beton's header checked with numpy alone (no ffcv, no torch), so that the command lines
refuse a file that is not a beton, or a truncated one, in a fraction of a second with one line
instead of FFCV's traceback deep in its reader.

FFCV's layout (ffcv/types.py, reader.py, memory_allocator.py): a header (version, field count,
page size, sample count, offset of the allocation table); one 1041-byte descriptor per field;
one metadata row per sample (the fields' metadata types side by side, aligned); data pages,
the first aligned to the page size; then the allocation table, one (sample, offset, size) row
per stored value, up to the end of the file. The dtypes are FFCV 1.0's, repeated here
(test_header checks them against ffcv's own).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from fkd_ffcv.defaults import RECORD_FIELDS
from fkd_ffcv.errors import DataError

VERSION = 2  # ffcv.types.CURRENT_VERSION
HEADER = np.dtype([('version', '<u2'), ('num_fields', '<u2'), ('page_size', '<u4'),
                   ('num_samples', '<u8'), ('alloc_table_ptr', '<u8')], align=True)
DESCRIPTOR = np.dtype([('type_id', '<u1'), ('name', ('<u1', 16)),
                       ('arguments', ('<u1', (1024,)))], align=True)
ALLOCATION = np.dtype([('sample_id', '<u8'), ('ptr', '<u8'), ('size', '<u8')])
_POINTER = np.dtype([('ptr', '<u8'), ('size', '<u8')])
# Metadata type and stored values per sample of each stock field (ffcv.types.TYPE_ID_HANDLER:
# float, int, RGB image, bytes, ndarray, JSON, torch tensor); 255 is a custom field.
_METADATA = {0: ('<f8', 0), 1: ('<i8', 0),
             2: (np.dtype([('mode', 'u1'), ('width', '<u2'), ('height', '<u2'),
                           ('data_ptr', '<u8')]), 1),
             3: (_POINTER, 1), 4: ('<u8', 1), 5: (_POINTER, 1), 6: ('<u8', 1)}
CUSTOM = 255


@dataclass(frozen=True)
class Header:
    num_samples: int
    num_fields: int
    page_size: int
    size: int  # bytes in the file


def check_beton(path) -> Header:
    """The header of the beton at `path`, once the file is known to be a whole FFCV beton: its
    version, field descriptors and page size valid, and the file as long as its header,
    descriptors, metadata and allocation table say. Raises DataError (one line) otherwise;
    FileNotFoundError when there is no such file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such beton file")
    size = os.path.getsize(path)
    hint = (f"; {path[:-5]} is the beton it describes" if path.endswith('.beton.json') else '')

    def not_a_beton(why: str) -> DataError:
        return DataError(f"{path} is not an FFCV beton ({why}{hint})")

    def truncated(needed: int, exact: bool = True, names=None) -> DataError:
        # the fix as far as the field names (None: cut before them) tell how it was made
        again = ('write (or label) it again' if names is None else
                 'write or label it again' if set(RECORD_FIELDS) & set(names) else
                 'write it again')
        return DataError(f"{path} is truncated: {size:,} bytes of {'' if exact else 'at least '}"
                         f"{needed:,} ({again})")

    if size < HEADER.itemsize:
        raise not_a_beton(f"{size} bytes, shorter than a beton's {HEADER.itemsize}-byte header")
    header = np.fromfile(path, dtype=HEADER, count=1)[0]
    version, num_fields = int(header['version']), int(header['num_fields'])
    page, n, table = int(header['page_size']), int(header['num_samples']), \
        int(header['alloc_table_ptr'])
    if version != VERSION:
        with open(path, 'rb') as f:
            start = f.read(8)
        raise not_a_beton("it is a JSON file" if start.lstrip().startswith(b'{') else
                          f"format version {version} where FFCV writes {VERSION}; it starts "
                          f"{start!r}")
    if num_fields == 0 or page == 0 or page & (page - 1):
        raise not_a_beton(f"{num_fields} fields, page size {page}: not a beton header")
    descriptors_end = HEADER.itemsize + num_fields * DESCRIPTOR.itemsize
    if size < descriptors_end:  # the metadata's size is in the descriptors: a lower bound
        raise truncated(max(descriptors_end, table), exact=False)
    descriptors = np.fromfile(path, dtype=DESCRIPTOR, count=num_fields, offset=HEADER.itemsize)
    type_ids = [int(t) for t in descriptors['type_id']]
    names = [bytes(name).rstrip(b'\0').decode('utf-8', 'replace') for name in descriptors['name']]
    unknown = sorted(set(type_ids) - set(_METADATA) - {CUSTOM})
    if unknown:
        raise not_a_beton(f"field type id(s) {unknown}: not FFCV's")
    if CUSTOM in type_ids:  # its metadata size is the custom class's: check what is known
        data_start, stored = descriptors_end, None
    else:
        row = np.dtype([('', _METADATA[t][0]) for t in type_ids], align=True)
        data_start = descriptors_end + row.itemsize * n
        stored = n * sum(_METADATA[t][1] for t in type_ids)
    if table < data_start:
        raise not_a_beton(f"its allocation table at byte {table:,} lies inside its "
                          f"{n:,} samples' metadata, which end at byte {data_start:,}")
    needed = table + (stored or 0) * ALLOCATION.itemsize
    if size < needed:
        raise truncated(needed, exact=stored is not None, names=names)
    if (size - table) % ALLOCATION.itemsize:
        raise not_a_beton(f"its allocation table, from byte {table:,} to the end, is not whole "
                          f"{ALLOCATION.itemsize}-byte rows")
    return Header(n, num_fields, page, size)
