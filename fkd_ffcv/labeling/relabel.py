"""Labelling as fkd-write's `labels` option section asks: crop records from a teacher (or an
ensemble) or imported from FKD's released files, or, with neither, a copy without the records
the beton holds (to label it again). The command names the output (`--labels.out`, else
`<stem>_fkd.beton`) and prints nothing else; this module prints what it wrote.
"""
from __future__ import annotations

import os
from pathlib import Path

from fkd_ffcv.defaults import TEACHER_RECORDS


def label_or_strip(labels: dict, write: dict, beton: Path, out: Path) -> None:
    """Write `out`: `beton` with crop records, from `labels['teacher']` or
    `labels['import_root']`; with neither, `beton` without its crop records. `write` gives the
    writer's settings (workers, chunk and page size, what to do with an unusable file)."""
    writer_settings = dict(num_workers=write['num_workers'], chunk_size=write['chunk_size'],
                           page_size=write['page_size'])
    if not (labels['teacher'] or labels['import_root']):
        from fkd_ffcv.data.splits import drop_records
        return drop_records(beton, out, writer_settings)
    if labels['import_root']:
        return _import(labels, write, beton, out, writer_settings)
    from fkd_ffcv.devices import resolve_device
    from fkd_ffcv.labeling.label import LabelingSettings, label_beton
    from fkd_ffcv.labeling.teachers import Teacher
    rank, world = int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1))
    device = resolve_device(labels['device'], int(os.environ.get('LOCAL_RANK', 0)))
    ranks_here = int(os.environ.get('LOCAL_WORLD_SIZE', 1))  # share the cores on the CPU
    teacher = Teacher(labels['teacher'], device=device, temperature=labels['temperature'],
                      input_size=labels['input_size'] or None,
                      interpolation=labels['interpolation'] or None,
                      cpu_threads=max(1, len(os.sched_getaffinity(0)) // ranks_here),
                      precision=labels['precision'], embedding=labels['embedding'])
    scale = (labels['scale_min'], labels['scale_max']) if labels['scale_max'] else None
    settings = LabelingSettings(num_records=labels['num_records'] or TEACHER_RECORDS,
                                label_type=labels['label_type'],  # '': chosen from the classes
                                scale=scale,
                                seed=labels['seed'], chunk_images=labels['chunk_images'],
                                batch_size=labels['batch_size'],
                                colour=labels.get('colour', 'none'))
    work = labels['work_dir'] or f"{out}.work"
    try:
        report = label_beton(beton, out, teacher, settings, work, rank=rank, world_size=world,
                             **writer_settings)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"labelling {beton} stopped: the chunks labelled so far are kept "
                                f"in {work}, and the same command resumes from them") from None
    if report is not None:
        from fkd_ffcv.data.beton import Beton
        what = (f"{teacher.dim}-d embeddings, {labels['embedding']}" if labels['embedding']
                else Beton(out).manifest.soft_labels.label_type)
        print(f"labelled {out}: {report.num_samples} images x {settings.num_records} crop "
              f"records ({what}) by {labels['teacher']}, from {beton}")


def _import(labels: dict, write: dict, beton: Path, out: Path, writer_settings: dict) -> None:
    """FKD's released label files under `labels['import_root']` as crop records of `out`."""
    from fkd_ffcv.labeling.fkd_import import import_fkd_labels
    report = import_fkd_labels(beton, out, labels['import_root'],
                               label_type=labels['label_type'] or None,
                               num_records=labels['num_records'] or None,
                               on_error=write['on_error'], **writer_settings)
    print(f"imported FKD soft labels into {out}: {report.num_samples} images; top-1 of "
          f"the records agrees with the hard label for {report.top1_agreement:.1%}")
    if report.extra_files:
        print(f"  {len(report.extra_files)} file(s) match no sample, e.g. "
              f"{report.extra_files[0]}")
    for path, why in report.skipped[:20]:
        print(f"  skipped {path}: {why}")
