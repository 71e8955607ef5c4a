"""Training time per epoch: plain training, online KD and FKD with K = 1, 2, 4, 8, through the
trainer (fkd_ffcv.training.Trainer), on one data set in one run; FKD's speed table, here.

    python benchmarks/timing_table.py [--preset cpu|gpu] [--images N] [--out docs/tables/x.md]

Presets:
- cpu (default): the Fashion-MNIST subset at 32 px, student small_resnet width 16 depth 1,
  teacher small_resnet width 32 depth 3 (about 14x the student's parameters; random weights:
  speed does not depend on them), 256 crops per step, fp32 (this CPU has no bf16).
- gpu: ImageNet-shaped data made on the spot (photo-like JPEGs of about 500 x 375 px, 1000
  classes; the lent GPU machine has no data sets), student ResNet-50 with BlurPool at 176 px
  (the middle of ffcv-imagenet's 160-192 ramp), bf16, channels-last, 512 crops per step;
  crop records labelled by a random ResNet-50, online-KD teacher a random ResNet-101.
The last row feeds the same trainer step from FKD's own data path (as in train_FKD.py, written
again here): a torch DataLoader whose worker processes open each image's JPEG file with PIL,
torch.load its soft-label file and cut K = 4 of its recorded crops with torchvision
(resized_crop, bilinear, flip); the files are exported from the labelled beton.
Each row trains two passes and reports the second (the first includes numba's and torch's
warm-up): seconds per epoch, crops/s and the share of time spent waiting for data. The crop
records are written once (8 per image); that one-off cost is reported separately.
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
from original_fkd import OriginalFKDData, export_original_files  # noqa: E402
from fkd_ffcv.training import IMAGENET_MEAN, IMAGENET_STD, Trainer, options  # noqa: E402
from fkd_ffcv.writer import write_beton  # noqa: E402

PRESETS = {
    'cpu': dict(data='fashion-mnist', images=5000, val=1000, side=32, val_ratio=1.0,
                batch=256, write_mode='raw',
                student={'model.arch': 'small_resnet', 'model.width': 16, 'model.depth': 1,
                         'model.blurpool': False},
                describe='Fashion-MNIST images at 32 px, student small_resnet (width 16, '
                         'depth 1), online-KD teacher small_resnet (width 32, depth 3)'),
    'gpu': dict(data='synthetic', images=20000, val=1000, side=176, val_ratio=224 / 256,
                batch=512, write_mode='jpg',
                student={'model.arch': 'resnet50', 'model.blurpool': True},
                label_teacher='torchvision:resnet50', online_teacher='torchvision:resnet101',
                describe='synthetic photo-like images (about 500 x 375 px, JPEG 90, 1000 '
                         'classes) at 176 px, student ResNet-50 with BlurPool, online-KD '
                         'teacher ResNet-101 (random weights)'),
}
SMALL_TEACHER = dict(arch='small_resnet', width=32, depth=3)


class SyntheticPhotos:
    """Photo-like images (smooth colour fields with texture) of ImageNet's typical size,
    drawn from the sample index; a source for write_beton."""
    classes = [f'class{c:04d}' for c in range(1000)]

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        import numpy as np
        rng = np.random.default_rng([self.seed, i])
        h, w = (375, 500) if rng.random() < 0.7 else (500, 375)
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        planes = [127 + 90 * np.sin(rng.uniform(0.005, 0.05) * y + rng.uniform(0.005, 0.05) * x
                                    + rng.uniform(0, 6.3)) for _ in range(3)]
        pixels = np.stack(planes, axis=2) + rng.normal(0, 12, (h, w, 1))
        path = np.frombuffer(f'synthetic/{i}.jpg'.encode(), dtype=np.uint8)
        return np.clip(pixels, 0, 255).astype(np.uint8), i % 1000, path


def prepare(work: Path, preset: dict, images: int, records: int):
    """Betons (train with crop records, val) and the teacher specs; reused if present."""
    work.mkdir(parents=True, exist_ok=True)
    betons = {}
    for split, n in (('train', images), ('val', preset['val'])):
        path = work / f'{split}.beton'
        if not path.exists():
            source = (FashionMNISTSource(split, 32, subset=n) if preset['data'] == 'fashion-mnist'
                      else SyntheticPhotos(n, seed=0 if split == 'train' else 1))
            write_beton(path, image_fields(preset['write_mode'], max_resolution=500), source,
                        manifest={'classes': list(source.classes)}, progress=True)
        betons[split] = path
    if 'label_teacher' in preset:
        label_spec, online_spec = preset['label_teacher'], preset['online_teacher']
    else:
        teacher_file = work / 'teacher.pt'
        if not teacher_file.exists():
            torch.manual_seed(0)
            save_weights(teacher_file, build_model(num_classes=10, **SMALL_TEACHER),
                         SMALL_TEACHER, FashionMNISTSource.classes,
                         {'input_size': 32, 'interpolation': 'area',
                          'mean': list(IMAGENET_MEAN), 'std': list(IMAGENET_STD)})
        label_spec = online_spec = f'checkpoint:{teacher_file}'
    labelled, label_seconds = work / 'train_fkd.beton', None
    if not labelled.exists():
        started = time.perf_counter()
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
        label_beton(betons['train'], labelled, Teacher(label_spec, device=device),
                    LabelingSettings(num_records=records, label_type='marginal_smoothing_k5'),
                    work / 'labelling', progress=True)
        label_seconds = time.perf_counter() - started
    return betons, labelled, online_spec, label_seconds


class OriginalFKDPath:
    """FKD's data path with FKDLoader's interface (what the trainer iterates): batches of B
    images x K recorded crops, their top-k soft labels and hard labels."""

    def __init__(self, files, label_files, labels, k, batch_images, side, workers):
        self.data = OriginalFKDData(files, label_files, labels, k, side)
        self.loader = torch.utils.data.DataLoader(
            self.data, batch_size=batch_images, shuffle=True, drop_last=True,
            num_workers=workers)  # workers start anew each pass, as in train_FKD.py

    def __len__(self):
        return len(self.loader)

    def set_resolution(self, side):
        self.data.side = side  # read by the workers when the next pass starts them

    def start_at(self, pass_index):
        pass

    def __iter__(self):
        for crops, classes, probs, hard in self.loader:
            b, k = crops.shape[:2]
            yield (crops.flatten(0, 1).contiguous(memory_format=torch.channels_last),
                   classes.flatten(0, 1), probs.flatten(0, 1), hard.repeat_interleave(k))


class OriginalPathTrainer(Trainer):
    """The trainer with its FKD loader swapped for FKD's own data path (same steps)."""
    files = None

    def create_loaders(self):
        super().create_loaders()
        files, label_files, labels = self.files
        self.train_loader = OriginalFKDPath(files, label_files, labels, self.num_crops,
                                            self.o['training']['batch_size'] // self.num_crops,
                                            self.resolution_at(0), self.threads)


def timed_run(name, work, train, val, overrides, preset, trainer_class=Trainer):
    """Two passes; returns the second pass's seconds per epoch, crops/s, data wait."""
    folder = work / 'runs' / name
    shutil.rmtree(folder, ignore_errors=True)
    k = overrides.get('fkd.num_crops', 1) if overrides['training.mode'] == 'fkd' else 1
    side = preset['side']
    opts = options({**preset['student'], 'data.train_dataset': str(train),
                    'data.val_dataset': str(val), 'training.epochs': 2 * k,
                    'training.batch_size': preset['batch'], 'training.precision': 'auto',
                    'lr.lr': 0.2, 'lr.peak_epoch': 1.0, 'resolution.min_res': side,
                    'resolution.max_res': side,
                    'resolution.round_to': 16, 'validation.resolution': side,
                    'validation.ratio': preset['val_ratio'],
                    'logging.folder': str(folder), 'logging.progress': False, **overrides})
    trainer = trainer_class(opts)
    trainer.run()
    second = trainer.history[k:]
    seconds = sum(line['seconds'] for line in second)
    crops = sum(line['crops_per_s'] * line['seconds'] for line in second)
    wait = sum(line['data_wait'] * line['seconds'] for line in second)
    return {'name': name, 'k': k, 'seconds_per_epoch': seconds / len(second),
            'crops_per_s': crops / seconds, 'data_wait': wait / seconds,
            'precision': trainer.precision, 'device': str(trainer.device)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--preset', choices=sorted(PRESETS), default='cpu')
    parser.add_argument('--images', type=int, default=0, help='training images (0: preset)')
    parser.add_argument('--batch', type=int, default=0, help='crops per step (0: preset)')
    parser.add_argument('--side', type=int, default=0, help='crop side (0: preset)')
    parser.add_argument('--work', default='', help='default build/timing-<preset>')
    parser.add_argument('--out', default='', help='also write the markdown table here')
    args = parser.parse_args()
    preset = dict(PRESETS[args.preset])
    preset.update({k: v for k, v in (('images', args.images), ('batch', args.batch),
                                     ('side', args.side)) if v})
    work = Path(args.work or REPO / 'build' / f'timing-{args.preset}')
    betons, labelled, online_spec, label_seconds = prepare(work, preset, preset['images'], 8)
    run = lambda name, train, overrides, cls=Trainer: timed_run(
        name, work, train, betons['val'], overrides, preset, cls)
    rows = [run('plain', betons['train'], {'training.mode': 'plain'}),
            run('online KD', betons['train'], {'training.mode': 'online_kd',
                                               'fkd.teacher': online_spec})]
    for k in (1, 2, 4, 8):
        rows.append(run(f'FKD, K={k}', labelled, {'training.mode': 'fkd', 'fkd.num_crops': k}))
    OriginalPathTrainer.files = export_original_files(labelled, work / 'original_files')
    rows.append(run("FKD, K=4, FKD's original data path (PIL, label files, DataLoader)",
                    labelled, {'training.mode': 'fkd', 'fkd.num_crops': 4}, OriginalPathTrainer))
    plain = rows[0]['seconds_per_epoch']
    hardware = f"{len(os.sched_getaffinity(0))} cores"
    try:
        cpu = next(line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo')
                   if line.startswith('model name'))
        hardware = f"{cpu}, {hardware}"
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        hardware = f"{torch.cuda.get_device_name()}; {hardware}"
    lines = [f"{preset['images']} {preset['describe']}; {preset['batch']} crops per step, "
             f"{rows[0]['precision']}, {rows[0]['device']}; second of two passes. {hardware}; "
             f"Python {platform.python_version()}, torch {torch.__version__}, ffcv "
             f"{version('ffcv')}, numba {version('numba')}; {time.strftime('%Y-%m-%d')}.",
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
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + '\n')
        plot(rows, out.with_suffix('.png'), lines[0].split(';')[0])


def plot(rows, path: Path, title: str) -> None:
    """Seconds per epoch as horizontal bars, plain at the top."""
    import textwrap
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    names = [r['name'].replace(" (PIL, label files, DataLoader)", '') for r in rows][::-1]
    ax.barh(names, [r['seconds_per_epoch'] for r in rows][::-1], color='tab:blue')
    ax.set_xlabel('seconds per epoch (lower is better)')
    fig.suptitle(textwrap.fill(title, 110), fontsize=8)  # centred on the figure, not the bars
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    main()
