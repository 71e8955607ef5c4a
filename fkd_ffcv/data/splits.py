"""fkd-write's data work, as its `data` and `write` option sections describe it: one split of a
data set written to a beton (`write_split`), and a copy of a beton without its crop records, to
label it again (`drop_records`). Each prints what it wrote, as the command reports it.
"""
from __future__ import annotations

import sys
from pathlib import Path

from fkd_ffcv.defaults import FASHION_MNIST_DIR


def write_split(data: dict, write: dict, split: str, out: Path) -> None:
    """Write `split` of the data set `data` names to the beton `out`, stored as `write` says,
    with its manifest (classes, source, write options); unusable inputs are listed."""
    # Imported here so that the command's option errors and --help answer without ffcv.
    from fkd_ffcv.data.fields import image_fields
    from fkd_ffcv.data.sources import FashionMNISTSource, ImageFolderSource
    from fkd_ffcv.data.manifest import Manifest
    from fkd_ffcv.data.writer import write_beton
    root = data['root'] or FASHION_MNIST_DIR  # a folder names its root (checked)
    fields = image_fields(write['write_mode'], write['max_resolution'] or None,
                          write['jpeg_quality'], write['compress_probability'],
                          write['smart_threshold'])
    if data['source'] == 'fashion-mnist':
        source = FashionMNISTSource(split, data['image_size'], root, data['subset'])
    else:
        source = ImageFolderSource(root, split, write['max_resolution'] or None,
                                   write['max_pixels'], data['subset'])
        for empty in source.empty_classes:
            print(f"warning: class {empty!r} has no images in {split}", file=sys.stderr)
    manifest = Manifest(classes=list(source.classes),
                        source={**data, 'root': str(root), 'split': split},
                        write_options={k: v for k, v in write.items() if k != 'overwrite'})
    try:
        report = write_beton(out, fields, source, num_workers=write['num_workers'],
                             chunk_size=write['chunk_size'], page_size=write['page_size'],
                             on_error=write['on_error'], manifest=manifest)
    except KeyboardInterrupt:
        kept = (f"the earlier {out} is kept as it was" if out.exists() else
                f"no {out} was written")
        raise KeyboardInterrupt(f"writing {out} stopped: {kept}, and nothing half-written "
                                f"is left (betons written before it are complete); the same "
                                f"command writes it again (with --overwrite where a beton "
                                f"of its names exists)") from None
    print(f"wrote {report.path}: {report.num_samples} images in {report.seconds:.1f} s "
          f"({report.num_samples / report.seconds:,.0f} images/s)")
    if report.skipped:
        print(f"skipped {len(report.skipped)} unusable input(s) (listed in {out}.json):")
        for path, why in report.skipped[:20]:
            print(f"  {path}: {why}")


def drop_records(beton: Path, out: Path, writer_settings: dict) -> None:
    """Write `out`: `beton` without its crop record fields (to label it again), written with
    `writer_settings` (num_workers, chunk_size, page_size)."""
    from fkd_ffcv.data.beton import Beton
    from fkd_ffcv.data.fields import RECORD_FIELDS
    from fkd_ffcv.data.copying import copy_beton
    names = Beton(beton).field_names
    if not set(RECORD_FIELDS) & set(names):
        raise ValueError(f"{beton} holds no crop records (fields: {', '.join(names)}); give "
                         f"--labels.teacher or --labels.import_root to label it")
    keep = [name for name in names if name not in RECORD_FIELDS]
    report = copy_beton(beton, out, keep=keep, **writer_settings)
    print(f"wrote {report.path}: {report.num_samples} images without crop records (fields: "
          f"{', '.join(keep)}); label it with --labels.beton={report.path} --labels.teacher=...")
