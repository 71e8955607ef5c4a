"""`fkd-inspect <beton> [--read]` (or `python -m fkd_ffcv.commands.inspect_beton`): what a beton
holds, and whether it reads back.

Prints the fields, sample and class counts, the source and write options from the manifest, any
skipped inputs, and for crop records: records per image, label type, teacher(s), bytes per
record, the teacher's top-1 agreement with the hard labels, and (with `--epochs`) whether a run
would reuse records; for a copy (a labelled beton), the beton it was made from and whether that
file is still the same. `--read` streams every image through an FFCV loader, checks the labels
against the stored ones and reports images/s (timed on a second pass when the first is one
batch, which pays for numba's compilation).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fkd_ffcv.defaults import CLASSES_FIELD, IMAGE_FIELD, IMAGENET_CROP, LABEL_FIELD

if TYPE_CHECKING:
    from fkd_ffcv.data.beton import Beton
    from fkd_ffcv.data.manifest import Origin, Records
# ffcv, torch and the rest are imported where they are used: `--help` and a missing file answer
# in a fraction of a second.


def describe_soft_labels(beton: Beton, info: Records, epochs: int) -> list:
    from ffcv.types import ALLOC_TABLE_TYPE
    from fkd_ffcv.data.fields import RECORD_FIELDS
    from fkd_ffcv.records.soft_labels import top1_agreement
    n = info.num_records
    held = [name for name in RECORD_FIELDS if name in beton.fields]
    per_image = sum(beton.fields[name].element_size for name in held)
    # each per-image field also costs a metadata pointer and an allocation-table row
    overhead = len(held) * (8 + ALLOC_TABLE_TYPE.itemsize)
    agreement, looked_at = top1_agreement(beton)
    lines = [f"  crop records: {n} per image, {info.label_type} of {info.num_classes} "
             f"classes, {per_image / n:.1f} B per record ({(per_image + overhead) / n:.1f} B "
             f"with per-image overhead)"]
    if info.source == 'teacher':
        t = info.teacher
        lines.append(f"  teacher: {' + '.join(t['specs'])} at {t['input_size']} px "
                     f"({info.crop_resize or t['interpolation']}), "
                     f"T = {t['temperature']}")
    else:
        lines.append(f"  imported from FKD files under {info.root} (crops resized with "
                     f"{info.crop_resize or 'antialias'})")
    lines.append(f"  teacher top-1 = hard label for {agreement:.1%} of the records "
                 f"({looked_at} images looked at)")
    if epochs > n:
        lines.append(f"  warning: {epochs} epochs draw {epochs} crops per image but there are "
                     f"{n} records: each is reused about {epochs / n:.1f} times")
    return lines


def describe_origin(origin: Origin, copy: Path) -> str:
    """Which beton a copy was made from, and whether that file is still the one it was."""
    from fkd_ffcv.data.beton import Beton
    path = origin.beton
    made = (f"  made from {path} ({origin.num_samples} samples, fingerprint "
            f"{origin.fingerprint[:12]}")
    made += f", written {origin.written_at})" if origin.written_at else ")"
    try:
        now = ('this copy, which replaced it' if Path(path).resolve() == copy.resolve() else
               'unchanged' if Beton(path).fingerprint() == origin.fingerprint else
               'replaced since (another fingerprint)')
    except FileNotFoundError:
        now = 'no longer there'
    except (OSError, ValueError, KeyError) as e:
        now = f'unreadable now ({e})'
    return f"{made}; that file: {now}"


def describe(beton: Beton, epochs: int = 0) -> str:
    lines = [f"{beton.path}: {beton.num_samples} samples, "
             f"{beton.path.stat().st_size / 2**20:.1f} MiB, page size {beton.page_size >> 20} MiB"]
    for name in beton.field_names:
        lines.append(f"  field {name!r}: {type(beton.fields[name]).__name__}")
    from fkd_ffcv.data.manifest import Manifest
    try:
        manifest = beton.manifest
    except FileNotFoundError as e:  # a beton written by plain FFCV, say
        manifest = Manifest()
        lines.append(f"  ({e})")
    classes = manifest.classes or []
    if LABEL_FIELD in beton.fields:
        counts = Counter(beton.field_metadata(LABEL_FIELD).tolist())
        per_class = [counts.get(i, 0) for i in range(len(classes))] or list(counts.values())
        names = f" ({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})" \
            if classes else ''
        lines.append(f"  {len(classes) or len(counts)} classes{names}; images per class: "
                     f"min {min(per_class, default=0)}, max {max(per_class, default=0)}")
    if IMAGE_FIELD in beton.fields:
        meta = beton.field_metadata(IMAGE_FIELD)
        from ffcv.fields.rgb_image import IMAGE_MODES
        jpg = int((meta['mode'] == IMAGE_MODES['jpg']).sum())
        lines.append(f"  images: {jpg} JPEG, {len(meta) - jpg} raw; sides "
                     f"{int(meta['height'].min())}-{int(meta['height'].max())} x "
                     f"{int(meta['width'].min())}-{int(meta['width'].max())} px")
    if manifest.derived_from:
        lines.append(describe_origin(manifest.derived_from, beton.path))
    if manifest.source is not None:
        lines.append(f"  source: {manifest.source}")
    if manifest.write_options is not None:
        lines.append(f"  write options: {manifest.write_options}")
    if manifest.soft_labels and CLASSES_FIELD in beton.fields:
        lines += describe_soft_labels(beton, manifest.soft_labels, epochs)
    if manifest.embeddings:
        e = manifest.embeddings
        lines.append(f"  crop records: {e.num_records} per image, teacher embeddings of "
                     f"{e.dim} dimensions ({e.bytes_per_record} B per record) by "
                     f"{' + '.join(e.teacher['specs'])} ({e.teacher['embedding']}) at "
                     f"{e.teacher['input_size']} px")
    records = manifest.embeddings or manifest.soft_labels
    if records and records.colour:
        lines.append(f"  colour replayed: {records.colour} (each record's colour augmentation, "
                     f"drawn for {records.colour_side} px crops, applied to the crops it "
                     f"replays)")
    skipped = manifest.skipped or []
    if skipped:
        lines.append(f"  {len(skipped)} input(s) skipped:")
        lines += [f"    {name}: {why}" for name, why in skipped[:20]]
        if len(skipped) > 20:
            lines.append(f"    ... (all in {beton.path}.json)")
    return '\n'.join(lines)


def read_back(beton: Beton, batch_size: int, resolution: int, ratio: float,
              num_workers: int) -> str:
    """Stream every image through the eval loader; check labels; measure images/s."""
    from fkd_ffcv.loading.loaders import eval_loader
    loader = eval_loader(beton.path, batch_size=batch_size, resolution=resolution, ratio=ratio,
                         num_workers=num_workers)
    stored = np.asarray(beton.field_metadata(LABEL_FIELD))
    seen, first_batch_s, first = 0, None, 0
    start = time.perf_counter()
    for images, labels in loader:
        if first_batch_s is None:  # includes numba compiling the pipeline
            first_batch_s = time.perf_counter() - start
            start = time.perf_counter()
            first = len(labels)
        got = labels.numpy()
        if not np.array_equal(got, stored[seen:seen + len(got)]):
            raise RuntimeError(f"{beton.path}: labels read back differ from the stored ones "
                               f"in samples {seen}..{seen + len(got) - 1}")
        seen += len(got)
    if seen != beton.num_samples:
        raise RuntimeError(f"{beton.path}: read {seen} samples, the beton has {beton.num_samples}")
    elapsed, rest = time.perf_counter() - start, seen - first
    if not rest:  # one batch: time a second pass, compiled already
        start = time.perf_counter()
        rest = sum(len(labels) for _, labels in loader)
        elapsed = time.perf_counter() - start
    rate = f"{rest / max(elapsed, 1e-9):,.0f} images/s"
    return (f"read back {seen} images at {resolution} px, labels match: {rate} with "
            f"{loader.num_workers} threads (first batch, including numba compile: "
            f"{first_batch_s:.1f} s)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='fkd-inspect', description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('beton')
    parser.add_argument('--read', action='store_true', help='read every image back')
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--resolution', type=int, default=224)
    parser.add_argument('--ratio', type=float, default=IMAGENET_CROP,
                        help='centre crop side / shorter image side (1 = whole square image)')
    parser.add_argument('--workers', type=int, default=-1, help='loader threads (-1: all cores)')
    parser.add_argument('--epochs', type=int, default=0,
                        help='warn if a run of this many epochs would reuse crop records')
    args = parser.parse_args(argv)
    from fkd_ffcv.errors import os_error_line
    from fkd_ffcv.data.header import check_beton
    try:
        check_beton(args.beton)  # before ffcv loads (seconds)
    except (OSError, ValueError) as e:  # DataError is a ValueError; unreadable: an OSError
        print(f"error: {os_error_line(e) if isinstance(e, OSError) else e}", file=sys.stderr)
        return 1
    from fkd_ffcv.data.beton import Beton
    try:
        beton = Beton(args.beton)
        print(describe(beton, args.epochs))
        if args.read:
            print(read_back(beton, args.batch_size, args.resolution, args.ratio, args.workers))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"error: {os_error_line(e) if isinstance(e, OSError) else e}", file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
