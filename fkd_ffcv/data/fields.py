"""FFCV fields as this project stores them: names, header descriptors, pointer columns.

FFCV identifies a field in the file header by a type id (its class in `ffcv.types`, or 255 for
any other class) plus a 1024-byte argument blob, and cuts names to 16 ASCII characters without a
word. Copying a sample from one beton to another needs one more fact FFCV keeps implicit: which
metadata columns hold file offsets, since those must be re-pointed at the copied bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
from ffcv.fields import (BytesField, Field, FloatField, IntField, JSONField, NDArrayField,
                         RGBImageField, TorchTensorField)
from ffcv.fields.base import ARG_TYPE
from ffcv.types import TYPE_ID_HANDLER

# The names are defined in defaults.py, where the option checks and header.py read them
# without loading ffcv.
from fkd_ffcv.defaults import (BOXES_FIELD, CLASSES_FIELD, CODES_FIELD, COLOUR_BYTES,
                               COLOUR_FIELD, EMBEDDING_FIELD, FLAGS_FIELD, IMAGE_FIELD,
                               LABEL_FIELD, PATH_FIELD, RECORD_FIELDS, SMART_THRESHOLD,
                               SOFT_LABEL_FIELDS, WRITE_MODES)
__all__ = ['IMAGE_FIELD', 'LABEL_FIELD', 'PATH_FIELD', 'BOXES_FIELD', 'FLAGS_FIELD',
           'CLASSES_FIELD', 'CODES_FIELD', 'EMBEDDING_FIELD', 'COLOUR_FIELD', 'SOFT_LABEL_FIELDS',
           'RECORD_FIELDS', 'MAX_NAME_LENGTH', 'MAX_SIDE', 'CUSTOM_TYPE_ID', 'image_fields',
           'soft_label_fields', 'embedding_fields', 'colour_fields', 'bytes_per_record',
           'check_field_names', 'pointer_columns', 'Descriptor', 'descriptor_of',
           'VerbatimValue', 'VerbatimField']
MAX_NAME_LENGTH = 16  # FieldDescType['name'] is 16 bytes
MAX_SIDE = 65535  # RGBImageField stores an image's sides as uint16
CUSTOM_TYPE_ID = 255

# Metadata columns that hold a file offset, per stock field class. `None` means the whole
# (scalar) metadata value is the offset; an empty tuple means the field stores no bytes outside
# its metadata. Fields of this project declare `pointer_columns` themselves.
_POINTER_COLUMNS = {
    IntField: (),
    FloatField: (),
    RGBImageField: ('data_ptr',),
    BytesField: ('ptr',),
    JSONField: ('ptr',),
    NDArrayField: (None,),
    TorchTensorField: (None,),
}


def image_fields(write_mode: str = 'smart', max_resolution: Optional[int] = None,
                 jpeg_quality: int = 90, compress_probability: float = 0.5,
                 smart_threshold: int = SMART_THRESHOLD) -> Dict[str, Field]:
    """The fields of an image classification beton: pixels, class index, source path."""
    if write_mode not in WRITE_MODES:
        raise ValueError(f"write_mode must be one of {WRITE_MODES}, not {write_mode!r}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in [1, 100], not {jpeg_quality}")
    if not 0 <= compress_probability <= 1:
        raise ValueError(f"compress_probability must be in [0, 1], not {compress_probability}")
    if max_resolution is not None and max_resolution < 1:
        raise ValueError(f"max_resolution must be positive, not {max_resolution}")
    return {
        IMAGE_FIELD: RGBImageField(write_mode=write_mode, max_resolution=max_resolution,
                                   jpeg_quality=jpeg_quality,
                                   compress_probability=compress_probability,
                                   smart_threshold=smart_threshold),
        LABEL_FIELD: IntField(),
        PATH_FIELD: BytesField(),
    }


def soft_label_fields(num_records: int, k: int) -> Dict[str, Field]:
    """N crop records per image: box int16 (N, 4), flags uint8 (N,) (bit 0: flip), top-k class
    indices int16 (N, k), probability codes uint8 (N, k): 9 + 3k bytes per record."""
    return {
        BOXES_FIELD: NDArrayField(np.dtype('<i2'), (num_records, 4)),
        FLAGS_FIELD: NDArrayField(np.dtype('u1'), (num_records,)),
        CLASSES_FIELD: NDArrayField(np.dtype('<i2'), (num_records, k)),
        CODES_FIELD: NDArrayField(np.dtype('u1'), (num_records, k)),
    }


def embedding_fields(num_records: int, dim: int) -> Dict[str, Field]:
    """N crop records per image of an embedding teacher: box int16 (N, 4), flags uint8 (N,),
    the embedding's direction int8 (N, D) (embeddings.encode): 9 + D bytes per record."""
    return {
        BOXES_FIELD: NDArrayField(np.dtype('<i2'), (num_records, 4)),
        FLAGS_FIELD: NDArrayField(np.dtype('u1'), (num_records,)),
        EMBEDDING_FIELD: NDArrayField(np.dtype('i1'), (num_records, dim)),
    }


def colour_fields(num_records: int) -> Dict[str, Field]:
    """The colour augmentation each of N records replays (records/colour.py's code), uint8
    (N, 6): 6 bytes per record more."""
    return {COLOUR_FIELD: NDArrayField(np.dtype('u1'), (num_records, COLOUR_BYTES))}


def bytes_per_record(record_fields: Mapping[str, NDArrayField]) -> int:
    """The bytes one crop record of `record_fields` (soft_label_fields or embedding_fields,
    with or without colour_fields) takes: its box, its flags byte, its label or embedding, and
    its colour code."""
    num_records = record_fields[BOXES_FIELD].shape[0]
    return sum(f.dtype.itemsize * int(np.prod(f.shape))
               for f in record_fields.values()) // num_records


def check_field_names(names) -> None:
    """Refuse names FFCV would store differently from how they were given."""
    for name in names:
        try:
            encoded = name.encode('ascii')
        except UnicodeEncodeError:
            raise ValueError(f"field name {name!r} is not ASCII; FFCV stores ASCII names only")
        if not encoded or len(encoded) > MAX_NAME_LENGTH:
            raise ValueError(f"field name {name!r} must have 1 to {MAX_NAME_LENGTH} characters "
                             f"(FFCV would silently cut it)")
        if '\0' in name:
            raise ValueError(f"field name {name!r} contains a NUL byte")


def pointer_columns(field: Field) -> Tuple[Optional[str], ...]:
    """The metadata columns of `field` that hold file offsets (see module docstring)."""
    declared = getattr(field, 'pointer_columns', None)
    if declared is not None:
        return tuple(declared)
    for cls in type(field).__mro__:
        if cls in _POINTER_COLUMNS:
            return _POINTER_COLUMNS[cls]
    raise TypeError(f"cannot tell which metadata of {type(field).__name__} points into the file; "
                    f"give the class a `pointer_columns` attribute")


@dataclass(frozen=True)
class Descriptor:
    """What the file header says about one field."""
    type_id: int
    arguments: np.ndarray  # 1024 uint8


def descriptor_of(field: Field) -> Descriptor:
    if isinstance(field, VerbatimField):
        return field.descriptor
    type_id = next((k for k, cls in TYPE_ID_HANDLER.items() if cls is type(field)),
                   CUSTOM_TYPE_ID)
    return Descriptor(type_id, np.array(field.to_binary()[0], dtype='<u1'))


@dataclass
class VerbatimValue:
    """One sample's stored form of one field: its metadata record and the bytes it points to."""
    record: np.ndarray                      # shape (1,), the field's metadata dtype
    blobs: Mapping[Optional[str], np.ndarray]  # pointer column -> uint8 bytes


class VerbatimField(Field):
    """Writes a field exactly as another beton stored it (no decode, no re-encode).

    The header descriptor (type id and arguments) is the source's, so the copy reads back with
    the same decoders; only the offsets in the metadata change.
    """

    def __init__(self, source_field: Field, descriptor: Descriptor):
        self.source_field = source_field
        self.descriptor = descriptor
        self.pointer_columns = pointer_columns(source_field)

    @property
    def metadata_type(self) -> np.dtype:
        return self.source_field.metadata_type

    def get_decoder_class(self):
        return self.source_field.get_decoder_class()

    @staticmethod
    def from_binary(binary):
        raise TypeError("VerbatimField exists only while writing")

    def to_binary(self):
        binary = np.zeros(1, dtype=ARG_TYPE)[0]
        binary[0][:] = self.descriptor.arguments
        return binary

    def encode(self, destination, value: VerbatimValue, malloc):
        destination[:] = value.record
        for column in self.pointer_columns:
            blob = value.blobs[column]
            ptr, storage = malloc(blob.nbytes)
            storage[:] = blob
            if column is None:
                destination[0] = ptr
            else:
                destination[column] = ptr
