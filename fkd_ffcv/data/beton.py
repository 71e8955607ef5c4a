"""Read side of a beton: header, fields, per-sample records and raw bytes.

FFCV's `Loader` reads a beton for training; this module answers the questions around it (how
many samples, which fields, which source file each sample came from) and gives the writer the
stored bytes of each sample so copies never re-encode. Its manifest (class names, source,
records) is data/manifest.py's; `Beton.manifest` hands it the fingerprint to check it against.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import numpy as np
from ffcv.fields import Field
from ffcv.fields.rgb_image import IMAGE_MODES
from ffcv.libffcv import imdecode
from ffcv.reader import Reader

from fkd_ffcv.data.fields import IMAGE_FIELD, PATH_FIELD, Descriptor, VerbatimValue, pointer_columns
from fkd_ffcv.data.header import check_beton
from fkd_ffcv.data.manifest import Manifest


class Beton:
    """A read-only view of one `.beton` file.

    `custom_fields` maps field names to Field classes for fields FFCV stores as custom type
    (as `ffcv.loader.Loader(custom_fields=...)` does).
    """

    def __init__(self, path, custom_fields: Optional[Mapping[str, type]] = None):
        self.path = Path(path)
        check_beton(self.path)  # not a beton, or truncated: one line, not FFCV's traceback
        try:
            reader = Reader(str(self.path), custom_handlers=dict(custom_fields or {}))
        except AssertionError as e:  # FFCV signals a format version mismatch this way
            raise ValueError(f"{self.path}: not a readable beton ({e})") from None
        except ValueError as e:
            raise ValueError(f"{self.path}: {e}") from None
        self._reader = reader
        self.num_samples = int(reader.num_samples)
        self.page_size = int(reader.page_size)
        self.field_names: List[str] = list(reader.field_names)
        self.fields: Dict[str, Field] = dict(reader.handlers)
        self.descriptors = {
            name: Descriptor(int(d['type_id']), np.array(d['arguments'], dtype='<u1'))
            for name, d in zip(reader.field_names, reader.field_descriptors)}
        self.metadata = reader.metadata
        self.alloc_table = reader.alloc_table
        order = np.argsort(self.alloc_table['ptr'])
        self._ptrs = self.alloc_table['ptr'][order]
        self._sizes = self.alloc_table['size'][order]
        self._data = np.memmap(self.path, dtype='<u1', mode='r')

    def __len__(self) -> int:
        return self.num_samples

    def field_metadata(self, name: str) -> np.ndarray:
        """Per-sample metadata of one field (a view, one row per sample)."""
        if name not in self.fields:
            raise KeyError(f"{self.path}: no field {name!r} (fields: "
                           f"{', '.join(self.field_names)})")
        return self.metadata[f'f{self.field_names.index(name)}']

    def read(self, ptr: int) -> np.ndarray:
        """The bytes allocated at file offset `ptr` (a read-only view)."""
        at = np.searchsorted(self._ptrs, ptr)
        if at == len(self._ptrs) or self._ptrs[at] != ptr:
            raise ValueError(f"{self.path}: no allocation at offset {ptr}")
        return self._data[ptr:ptr + int(self._sizes[at])]

    def verbatim(self, name: str, index: int) -> VerbatimValue:
        """Sample `index` of field `name` as stored, for copying into another beton."""
        record = self.field_metadata(name)[index:index + 1].copy()
        blobs = {}
        for column in pointer_columns(self.fields[name]):
            ptr = record[0] if column is None else record[column][0]
            blobs[column] = self.read(int(ptr))
        return VerbatimValue(record, blobs)

    def array(self, name: str, index: int) -> np.ndarray:
        """Sample `index` of an NDArrayField, as stored (a read-only view)."""
        field = self.fields[name]
        return self.read(int(self.field_metadata(name)[index])).view(field.dtype).reshape(
            field.shape)

    def image(self, index: int, name: str = IMAGE_FIELD) -> np.ndarray:
        """Sample `index`'s stored image as uint8 (H, W, 3), decoded by FFCV's own JPEG
        decoder (libjpeg-turbo), so it equals what FFCV's loaders decode."""
        meta = self.field_metadata(name)[index]
        height, width = int(meta['height']), int(meta['width'])
        data = self.read(int(meta['data_ptr']))
        if meta['mode'] == IMAGE_MODES['raw']:
            return np.array(data).reshape(height, width, 3)
        pixels = np.empty((height, width, 3), np.uint8)
        imdecode(data, pixels, height, width, height, width, 0, 0, 1, 1, False, False)
        return pixels

    def paths(self) -> List[str]:
        """Each sample's source path (relative to the data set root), in sample order."""
        meta = self.field_metadata(PATH_FIELD)
        return [os.fsdecode(self.read(int(ptr)).tobytes()) for ptr in meta['ptr']]

    def fingerprint(self) -> str:
        """A hash of everything that locates and describes the samples (not the pixel bytes)."""
        h = hashlib.blake2b(digest_size=16)
        for part in (self._reader.header, self._reader.field_descriptors, self.metadata,
                     self.alloc_table):
            h.update(np.ascontiguousarray(part).tobytes())
        return h.hexdigest()

    @property
    def manifest(self) -> Manifest:
        """The sidecar manifest, checked to belong to this very file."""
        return Manifest.read(self.path, self.fingerprint())

    @property
    def classes(self) -> List[str]:
        classes = self.manifest.classes
        if classes is None:
            raise ValueError(f"{self.path}.json names no classes (write the beton with "
                             f"fkd-write)")
        return list(classes)
