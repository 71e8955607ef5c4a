"""The demo's recipes and files, for the scripts that extend its experiments (accuracy.py,
epochs_table.py), through the package's public API (options, Trainer, write_beton,
label_beton) rather than fkd_ffcv/demo.py's internals.

The files are the ones `make demo` writes under build/demo (betons `fashion_mnist_{train,
val}.beton`, the labelled `fashion_mnist_train_fkd.beton`, runs under `runs/<name>`), so the
demo's finished work is reused. A run folder with a summary.json is reused, one with only a
checkpoint resumes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from benchmarks.common import REPO

DEMO = REPO / 'build' / 'demo'
# How the demo labels its crops: the plain recipe's crop scale, so that with seed 0 the FKD
# student's record r is the crop the plain student draws in pass r.
LABEL_TYPE = 'marginal_smoothing_k3'


def recipe(name: str, overrides: dict) -> dict:
    """small_configs/fashion_mnist_<name>.yaml as trainer options, `overrides` on top."""
    from fkd_ffcv.options import options
    path = REPO / 'small_configs' / f'fashion_mnist_{name}.yaml'
    flat = {f'{section}.{key}': value
            for section, values in yaml.safe_load(path.read_text()).items()
            for key, value in values.items()}
    return options({**flat, **overrides})


def train(opts: dict) -> dict:
    """Run, resume or reuse the run in opts' logging folder; returns its summary."""
    from fkd_ffcv.training import Trainer
    folder = Path(opts['logging']['folder'])
    if (folder / 'summary.json').exists():
        print(f"  reusing {folder} (delete it to train again)")
        return json.loads((folder / 'summary.json').read_text())
    opts['training']['resume'] = (folder / 'checkpoint.pt').exists()
    return Trainer(opts).run()


def write_fashion_mnist(out: Path, train_images: int, val_images: int) -> tuple:
    """(train, val) betons of even spreads of Fashion-MNIST at 32 px in `out` (reused)."""
    from fkd_ffcv.beton import Beton
    from fkd_ffcv.fields import image_fields
    from fkd_ffcv.sources import FashionMNISTSource
    from fkd_ffcv.writer import write_beton
    paths = []
    for split, n in (('train', train_images), ('val', val_images)):
        path = out / f'fashion_mnist_{split}.beton'
        if not (path.exists() and Beton(path).manifest):
            source = FashionMNISTSource(split, 32, subset=n)
            write_beton(path, image_fields('raw'), source, manifest={
                'classes': source.classes,
                'source': {'name': 'fashion-mnist', 'split': split, 'subset': n}})
        paths.append(path)
    return tuple(paths)


def label(train_beton: Path, teacher_file: Path, out: Path, records: int) -> Path:
    """`records` crops per image labelled by the teacher as the demo labels them, into
    out/fashion_mnist_train_fkd.beton (reused when present)."""
    from fkd_ffcv.labeling import LabelingSettings, label_beton
    from fkd_ffcv.teachers import Teacher
    labelled = out / 'fashion_mnist_train_fkd.beton'
    if labelled.exists():
        print(f"  reusing {labelled}")
        return labelled
    data = recipe('plain', {})['data']
    settings = LabelingSettings(num_records=records, label_type=LABEL_TYPE,
                                scale=(data['crop_scale_min'], data['crop_scale_max']),
                                batch_size=512)
    started = time.perf_counter()
    label_beton(train_beton, labelled, Teacher(f'checkpoint:{teacher_file}'), settings,
                out / 'labelling.work')
    (out / 'labelling.json').write_text(json.dumps(
        {'seconds': time.perf_counter() - started, 'records': records}))
    return labelled


def precision_of(summaries) -> str:
    """The precision the runs trained in ('bf16', 'fp32', or several joined by '/')."""
    found = sorted({s.get('precision', 'not recorded') for s in summaries})
    return '/'.join(found)
