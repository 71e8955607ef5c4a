"""Copying a beton into a new one, byte for byte, with fields left out or added: how crop
records are added to a beton of images (labelling, the import of FKD's files) without decoding
or re-encoding an image. The copy's manifest carries the source's over and records its origin.
"""
from __future__ import annotations

import dataclasses
import os
from typing import List, Mapping, Optional

import numpy as np
from ffcv.fields import Field

from fkd_ffcv.data.beton import Beton
from fkd_ffcv.data.fields import PATH_FIELD, RECORD_FIELDS, VerbatimField
from fkd_ffcv.data.manifest import Manifest, Origin
from fkd_ffcv.data.safe_write import WriteError
from fkd_ffcv.data.writer import WriteReport, auto_page_size, sample_bound, write_beton


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
    `manifest_updates` (Manifest fields: {'soft_labels': Records(...)}) and the copy's lineage.
    `dst` may be `src`: the old file stays readable until the new one replaces it.
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
        manifest = beton.manifest  # the writer replaces what it sets for every file
    except FileNotFoundError:
        manifest = Manifest()
    carried = manifest
    if not set(RECORD_FIELDS) & set(beton.field_names) <= set(keep):
        # describe record fields this copy leaves out
        carried = dataclasses.replace(carried, soft_labels=None, embeddings=None)
    carried = dataclasses.replace(carried, **(manifest_updates or {}), derived_from=Origin(
        # absolute: the copy may be read from another working directory than it was made in
        beton=os.path.abspath(src), fingerprint=beton.fingerprint(), num_samples=len(beton),
        bytes=beton.path.stat().st_size, written_at=manifest.written_at,
        added_fields=list(add_fields)))
    if not write_options.get('page_size'):  # exact: the largest sample stored, plus the new
        stored = np.bincount(beton.alloc_table['sample_id'].astype(np.int64),
                             weights=beton.alloc_table['size'], minlength=len(beton))
        added = sample_bound(add_fields)
        write_options['page_size'] = auto_page_size(
            None if added is None else int(stored.max(initial=0)) + added, len(beton))
    return write_beton(dst, fields, _CopySource(beton, keep, values), manifest=carried,
                       **write_options)
