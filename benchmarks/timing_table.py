"""Training time per epoch: plain training, online KD and FKD with K = 1, 2, 4, 8, through the
trainer (fkd_ffcv.training.Trainer), on one data set in one run; FKD's speed table, here.

    python benchmarks/timing_table.py [--images 5000] [--out docs/tables/timing_cpu.md]

Default (CPU): the Fashion-MNIST subset at 32 px, student small_resnet width 16 depth 1,
teacher small_resnet width 32 depth 3 (about 14x the student's parameters; random weights:
speed does not depend on them), 256 crops per step, fp32 (this CPU has no bf16). Each row
trains two passes and reports the second (the first includes numba's and torch's warm-up):
seconds per epoch, crops/s and the share of time spent waiting for data. The crop records are
written once (8 per image) by the same teacher; that one-off cost is reported separately.
"""
import argparse
import json
import os
import platform
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from fkd_ffcv.fields import image_fields  # noqa: E402
from fkd_ffcv.labeling import LabelingSettings, label_beton  # noqa: E402
from fkd_ffcv.models import build_model, save_weights  # noqa: E402
from fkd_ffcv.sources import FashionMNISTSource  # noqa: E402
from fkd_ffcv.teachers import Teacher  # noqa: E402
from fkd_ffcv.training import IMAGENET_MEAN, IMAGENET_STD, Trainer, options  # noqa: E402
from fkd_ffcv.writer import write_beton  # noqa: E402

STUDENT = {'model.arch': 'small_resnet', 'model.width': 16, 'model.depth': 1,
           'model.blurpool': False}
TEACHER = dict(arch='small_resnet', width=32, depth=3)
SIDE = 32


def prepare(work: Path, images: int, records: int):
    """Betons (train subset with crop records, val) and the teacher file; reused if present."""
    work.mkdir(parents=True, exist_ok=True)
    betons = {}
    for split, n in (('train', images), ('val', 1000)):
        path = work / f'{split}.beton'
        if not path.exists():
            source = FashionMNISTSource(split, SIDE, subset=n)
            write_beton(path, image_fields('raw'), source,
                        manifest={'classes': source.classes}, progress=False)
        betons[split] = path
    teacher_file = work / 'teacher.pt'
    if not teacher_file.exists():
        torch.manual_seed(0)
        save_weights(teacher_file, build_model(num_classes=10, **TEACHER), TEACHER,
                     FashionMNISTSource.classes,
                     {'input_size': SIDE, 'interpolation': 'area', 'mean': list(IMAGENET_MEAN),
                      'std': list(IMAGENET_STD)})
    labelled, label_seconds = work / 'train_fkd.beton', None
    if not labelled.exists():
        started = time.perf_counter()
        label_beton(betons['train'], labelled, Teacher(f'checkpoint:{teacher_file}'),
                    LabelingSettings(num_records=records, label_type='marginal_smoothing_k5'),
                    work / 'labelling', progress=True)
        label_seconds = time.perf_counter() - started
    return betons, labelled, teacher_file, label_seconds


def timed_run(name, work, train, val, overrides, batch):
    """Two passes; returns the second pass's seconds per epoch, crops/s, data wait."""
    folder = work / 'runs' / name
    shutil.rmtree(folder, ignore_errors=True)
    k = overrides.get('fkd.num_crops', 1) if overrides['training.mode'] == 'fkd' else 1
    opts = options({**STUDENT, 'data.train_dataset': str(train), 'data.val_dataset': str(val),
                    'training.epochs': 2 * k, 'training.batch_size': batch,
                    'training.precision': 'auto', 'lr.lr': 0.2,
                    'resolution.min_res': SIDE, 'resolution.max_res': SIDE,
                    'validation.resolution': SIDE, 'validation.ratio': 1.0,
                    'logging.folder': str(folder), 'logging.progress': False, **overrides})
    trainer = Trainer(opts)
    trainer.run()
    second = trainer.history[k:]
    seconds = sum(line['seconds'] for line in second)
    crops = sum(line['crops_per_s'] * line['seconds'] for line in second)
    wait = sum(line['data_wait'] * line['seconds'] for line in second)
    return {'name': name, 'k': k, 'seconds_per_epoch': seconds / len(second),
            'crops_per_s': crops / seconds, 'data_wait': wait / seconds,
            'precision': trainer.precision}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=5000)
    parser.add_argument('--batch', type=int, default=256)
    parser.add_argument('--work', default=str(REPO / 'build' / 'timing'))
    parser.add_argument('--out', default='', help='also write the markdown table here')
    args = parser.parse_args()
    work = Path(args.work)
    betons, labelled, teacher_file, label_seconds = prepare(work, args.images, 8)
    rows = [timed_run('plain', work, betons['train'], betons['val'],
                      {'training.mode': 'plain'}, args.batch),
            timed_run('online KD', work, betons['train'], betons['val'],
                      {'training.mode': 'online_kd',
                       'fkd.teacher': f'checkpoint:{teacher_file}'}, args.batch)]
    for k in (1, 2, 4, 8):
        rows.append(timed_run(f'FKD, K={k}', work, labelled, betons['val'],
                              {'training.mode': 'fkd', 'fkd.num_crops': k}, args.batch))
    plain = rows[0]['seconds_per_epoch']
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo')
                   if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    lines = [f"{args.images} Fashion-MNIST images at {SIDE} px, student small_resnet (width 16, "
             f"depth 1), online-KD teacher small_resnet (width 32, depth 3), {args.batch} crops "
             f"per step, {rows[0]['precision']}; second of two passes. "
             f"{cpu}, {len(os.sched_getaffinity(0))} cores; Python "
             f"{platform.python_version()}, torch {torch.__version__}, ffcv {version('ffcv')}, "
             f"numba {version('numba')}; {time.strftime('%Y-%m-%d')}.",
             '', '| training | s / epoch | vs plain | crops/s | waiting for data |',
             '|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['name']} | {r['seconds_per_epoch']:.2f} | "
                     f"{r['seconds_per_epoch'] / plain:.2f}x | {r['crops_per_s']:,.0f} | "
                     f"{r['data_wait']:.0%} |")
    if label_seconds is not None:
        lines += ['', f"One-off labelling of the crop records (8 per image, by the teacher): "
                      f"{label_seconds:.0f} s."]
    text = '\n'.join(lines)
    print(text)
    (work / 'timing.json').write_text(json.dumps(rows, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + '\n')


if __name__ == '__main__':
    main()
