"""The demo's data steps as functions that experiments reuse (benchmarks/accuracy.py and
epochs_table.py extend the demo's runs through these).

The demo's own recipes are `fkd_ffcv/small_configs/fashion_mnist_*.yaml`, installed with the
package (fkd_ffcv.training.options.recipe reads them). Every step reuses what an earlier run
finished: a beton with its manifest, a labelled beton, a run folder with summary.json; a run
folder with only a checkpoint resumes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from fkd_ffcv.training.options import recipe

# How the demo labels its crops (with the plain recipe's crop scale, so that with seed 0 the
# FKD student's record r is the crop the plain student draws in pass r).
DEMO_LABEL_TYPE = 'marginal_smoothing_k3'


def fashion_mnist_betons(out: Path, train_images: int, val_images: int) -> tuple:
    """(train, val) betons of even spreads of Fashion-MNIST at 32 px in `out`, stored raw."""
    from fkd_ffcv.data.beton import Beton
    from fkd_ffcv.data.fields import image_fields
    from fkd_ffcv.data.sources import FashionMNISTSource
    from fkd_ffcv.data.manifest import Manifest
    from fkd_ffcv.data.writer import write_beton
    paths = []
    for split, n in (('train', train_images), ('val', val_images)):
        path = Path(out) / f'fashion_mnist_{split}.beton'
        if not (path.exists() and Beton(path).manifest):
            source = FashionMNISTSource(split, 32, subset=n)
            write_beton(path, image_fields('raw'), source, manifest=Manifest(
                classes=source.classes,
                source={'name': 'fashion-mnist', 'split': split, 'subset': n}))
        paths.append(path)
    return tuple(paths)


def run_or_reuse(opts: dict) -> dict:
    """Run, resume or reuse the run in opts' logging folder; returns its summary."""
    from fkd_ffcv.training.loop import Trainer
    folder = Path(opts['logging']['folder'])
    if (folder / 'summary.json').exists():
        print(f"  reusing {folder} (delete it to train again)")
        return json.loads((folder / 'summary.json').read_text())
    opts['training']['resume'] = (folder / 'checkpoint.pt').exists()
    return Trainer(opts).run()


def label_as_demo(train_beton: Path, teacher_files, out: Path, records: int,
                  name: str = 'fashion_mnist_train_fkd.beton', embedding: str = '',
                  interpolation: Optional[str] = None, colour: str = 'none') -> Path:
    """`records` crops per image labelled as the demo labels them, by a teacher's export or by
    the ensemble of several (a list of exports: their probabilities averaged), into out/<name>;
    with `embedding` (teachers.Teacher), the one teacher's embeddings instead of soft labels;
    `interpolation` resizes the teacher's crops otherwise than its export says; `colour`
    draws a colour augmentation per record (LabelingSettings.colour), replayed by the loader.
    The time it took goes to out/labelling.json (out/<name stem>.labelling.json for another
    name)."""
    from fkd_ffcv.labeling.label import LabelingSettings, label_beton
    from fkd_ffcv.labeling.teachers import Teacher
    labelled = Path(out) / name
    if labelled.exists():
        print(f"  reusing {labelled}")
        return labelled
    files = teacher_files if isinstance(teacher_files, (list, tuple)) else [teacher_files]
    data = recipe('plain')['data']
    settings = LabelingSettings(num_records=records,
                                label_type='' if embedding else DEMO_LABEL_TYPE,
                                scale=(data['crop_scale_min'], data['crop_scale_max']),
                                batch_size=512, colour=colour)
    tag = '' if name == 'fashion_mnist_train_fkd.beton' else f'{labelled.stem}.'
    started = time.perf_counter()
    label_beton(train_beton, labelled, Teacher([f'checkpoint:{f}' for f in files],
                                               embedding=embedding, interpolation=interpolation),
                settings,
                Path(out) / f'{tag}labelling.work')
    (Path(out) / f'{tag}labelling.json').write_text(json.dumps(
        {'seconds': time.perf_counter() - started, 'records': records,
         'teachers': len(files)}))
    return labelled
