"""Training time per epoch: plain training, online KD and FKD with K = 1, 2, 4, 8, and MEAL V2
online against Fast MEAL V2, through the trainer (fkd_ffcv.training.loop.Trainer), on one data set
in one run; FKD's speed table, here.

    python -m benchmarks.timing_table [--preset cpu|gpu] [--images N] [--batch B] [--side S]
                                      [--work DIR] [--out DIR] [--rows ROW,...]
                                      [--time-limit SECONDS]

(from the repository root; `python benchmarks/timing_table.py ...` also works where the
repository root is on PYTHONPATH, as tools/gpu_check.sh sets it.)

Presets:
- cpu (default): the Fashion-MNIST subset at 32 px, student small_resnet width 16 depth 1,
  teacher small_resnet width 32 depth 3 (about 14x the student's parameters; random weights:
  speed does not depend on them), 256 crops per step, precision auto (bf16 where torch computes
  it on the CPU, else fp32).
- gpu: ImageNet-shaped data made on the spot (sources.SyntheticPhotoSource: about 500 x 375
  px JPEGs, 1000 classes; a lent GPU machine has no data sets), student ResNet-50 with BlurPool
  at 176 px (the middle of ffcv-imagenet's 160-192 ramp), bf16, channels-last, 512 crops per
  step; crop records labelled by a random ResNet-50, online-KD teacher a random ResNet-101.
MEAL V2 rows: the student starts from an export of itself (random weights), with MEAL V2's
discriminator; online MEAL V2 runs two teachers on every batch (cpu: the online-KD teacher and
one of its shape with other weights; gpu: random ResNet-152 and ResNet-101, standing in for
MEAL V2's SENet-154 and ResNet-152-v1s), Fast MEAL V2 replays the crop records (K = 4; one
teacher's labels, which replay at the same cost as an ensemble's).
The last row feeds the same trainer step from FKD's own data path (as in train_FKD.py, written
again in benchmarks/common.py): a torch DataLoader whose worker processes open each image's
JPEG file with PIL, torch.load its soft-label file and cut K = 4 of its recorded crops with
torchvision (resized_crop, bilinear, flip); the files are exported from the labelled beton.
Each row trains two passes and reports the second (the first includes numba's and torch's
warm-up): seconds per epoch, crops/s and the share of time spent waiting for data. The crop
records are written once (8 per image); that one-off cost is reported separately.

Each row is printed as it finishes and the table is rewritten under --out DIR
(`timing_<preset>.md`, `.json`, and a `.png` where matplotlib is installed), so a run stopped
by a time limit keeps what it measured. --time-limit skips the rows that would not fit; rows
run in order of importance (plain, online KD, FKD K=4, the original path, K=1, 2, 8, then the
MEAL V2 pair) and
are shown in the usual order. The table's first line names the machine: the CPU model and
whether torch computes bf16 on it (and the GPU where there is one).
"""
import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from benchmarks.common import REPO, OriginalFKDPath, export_original_files, versions
from fkd_ffcv.data.beton import Beton
from fkd_ffcv.reporting import machine
from fkd_ffcv.data.fields import image_fields
from fkd_ffcv.labeling.label import LabelingSettings, label_beton
from fkd_ffcv.models.exports import save_weights
from fkd_ffcv.models.students import build_model
from fkd_ffcv.training.options import options
from fkd_ffcv.data.sources import FashionMNISTSource, SyntheticPhotoSource
from fkd_ffcv.labeling.teachers import Teacher
from fkd_ffcv.defaults import IMAGENET_MEAN, IMAGENET_STD
from fkd_ffcv.training.loop import Trainer
from fkd_ffcv.data.manifest import Manifest
from fkd_ffcv.data.writer import write_beton

PRESETS = {
    'cpu': dict(data='fashion-mnist', images=5000, val=1000, side=32, val_ratio=1.0,
                batch=256, write_mode='raw',
                student={'model.arch': 'small_resnet', 'model.width': 16, 'model.depth': 1,
                         'model.blurpool': False},
                describe='Fashion-MNIST images at {side} px, student small_resnet (width 16, '
                         'depth 1), online-KD teacher small_resnet (width 32, depth 3)'),
    'gpu': dict(data='synthetic', images=5000, val=1000, side=176, val_ratio=224 / 256,
                batch=512, write_mode='jpg',
                student={'model.arch': 'resnet50', 'model.blurpool': True},
                label_teacher='torchvision:resnet50', online_teacher='torchvision:resnet101',
                meal_teachers='torchvision:resnet152,torchvision:resnet101',
                describe='synthetic photo-like images (about 500 x 375 px, JPEG 90, 1000 '
                         'classes) at {side} px, student ResNet-50 with BlurPool, online-KD '
                         'teacher ResNet-101 (random weights)'),
}
SMALL_TEACHER = dict(arch='small_resnet', width=32, depth=3)
# key: (name in the table, mode, K); the table's order. RUN_ORDER: the order of measuring.
ROWS = {'plain': ('plain', 'plain', 1), 'online_kd': ('online KD', 'online_kd', 1),
        'fkd1': ('FKD, K=1', 'fkd', 1), 'fkd2': ('FKD, K=2', 'fkd', 2),
        'fkd4': ('FKD, K=4', 'fkd', 4), 'fkd8': ('FKD, K=8', 'fkd', 8),
        'original': ("FKD, K=4, FKD's original data path (PIL, label files, DataLoader)",
                     'fkd', 4),
        'online_meal_v2': ('online MEAL V2 (two teachers)', 'online_meal_v2', 1),
        'meal_v2': ('Fast MEAL V2, K=4', 'meal_v2', 4)}
RUN_ORDER = ['plain', 'online_kd', 'fkd4', 'original', 'fkd1', 'fkd2', 'fkd8', 'online_meal_v2',
             'meal_v2']


def export(path: Path, arch: dict, seed: int, classes=FashionMNISTSource.classes,
           side: int = 32) -> Path:
    """A random model of `arch` saved as an export (a teacher, or a student's starting point)."""
    if not path.exists():
        torch.manual_seed(seed)
        save_weights(path, build_model(num_classes=len(classes), **arch), arch, classes,
                     {'input_size': side, 'interpolation': 'antialias',
                      'mean': list(IMAGENET_MEAN), 'std': list(IMAGENET_STD)})
    return path


def prepare(work: Path, preset: dict, images: int, records: int):
    """Betons (train with crop records, val) and the teacher specs (labels, online KD, online
    MEAL V2); reused if present."""
    work.mkdir(parents=True, exist_ok=True)
    betons = {}
    for split, n in (('train', images), ('val', preset['val'])):
        path = work / f'{split}.beton'
        if not path.exists():
            source = (FashionMNISTSource(split, 32, subset=n) if preset['data'] == 'fashion-mnist'
                      else SyntheticPhotoSource(n, seed=0 if split == 'train' else 1))
            write_beton(path, image_fields(preset['write_mode'], max_resolution=500), source,
                        manifest=Manifest(classes=list(source.classes)), progress=True)
        betons[split] = path
    if 'label_teacher' in preset:
        label_spec, online_spec = preset['label_teacher'], preset['online_teacher']
        meal_specs = preset['meal_teachers']
    else:
        first, second = (export(work / f'teacher{i or ""}.pt', SMALL_TEACHER, i)
                         for i in (0, 1))
        label_spec = online_spec = f'checkpoint:{first}'
        meal_specs = f'{online_spec},checkpoint:{second}'
    labelled, label_seconds = work / 'train_fkd.beton', None
    if not labelled.exists():
        started = time.perf_counter()
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
        label_beton(betons['train'], labelled, Teacher(label_spec, device=device),
                    LabelingSettings(num_records=records, label_type='marginal_smoothing_k5'),
                    work / 'labelling', progress=True)
        label_seconds = time.perf_counter() - started
    specs = {'online_kd': online_spec, 'online_meal_v2': meal_specs}
    return betons, labelled, specs, label_seconds


class OriginalPathTrainer(Trainer):
    """The trainer with its FKD loader swapped for FKD's own data path (same steps)."""
    files = None

    def create_loaders(self):
        super().create_loaders()
        files, label_files, labels = self.files
        self.train_loaders = {self.num_crops: OriginalFKDPath(
            files, label_files, labels, self.num_crops,
            self.opts['training']['batch_size'] // self.num_crops, self.resolution_at(0),
            self.threads, self.device)}


def timed_run(key, work, train, val, overrides, preset, trainer_class=Trainer):
    """Two passes; returns the second pass's seconds per epoch, crops/s, data wait."""
    folder = work / 'runs' / key
    shutil.rmtree(folder, ignore_errors=True)
    k = ROWS[key][2]
    side = preset['side']
    opts = options({**preset['student'], 'data.train_dataset': str(train),
                    'data.val_dataset': str(val), 'training.epochs': 2 * k,
                    'training.batch_size': preset['batch'], 'training.precision': 'auto',
                    'lr.lr': 0.2, 'lr.peak_epoch': 1.0, 'resolution.min_res': side,
                    'resolution.max_res': side,
                    'resolution.round_to': 16, 'validation.resolution': side,
                    'validation.ratio': preset['val_ratio'],
                    'logging.folder': str(folder), 'logging.progress': False, **overrides})
    started = time.perf_counter()
    trainer = trainer_class(opts)
    trainer.run()
    second = trainer.history[k:]
    seconds = sum(line['seconds'] for line in second)
    crops = sum(line['crops_per_s'] * line['seconds'] for line in second)
    wait = sum(line['data_wait'] * line['seconds'] for line in second)
    return {'key': key, 'name': ROWS[key][0], 'k': k, 'seconds_per_epoch': seconds / len(second),
            'crops_per_s': crops / seconds, 'data_wait': wait / seconds,
            'precision': trainer.ctx.precision, 'device': str(trainer.ctx.device),
            'wall_seconds': time.perf_counter() - started}


def table(rows, preset, label_seconds, skipped) -> str:
    """The markdown table of the rows measured so far, in the usual order."""
    done = {r['key']: r for r in rows}
    first = rows[0]
    lines = [f"{preset['images']} {preset['describe'].format(side=preset['side'])}; "
             f"{preset['batch']} crops per step, "
             f"{first['precision']}, {first['device']}; second of two passes. {machine()}; "
             f"{versions('torch', 'ffcv', 'numba')}; {time.strftime('%Y-%m-%d')}.",
             '', '| training | s / epoch | vs plain | crops/s | waiting for data |',
             '|---|---|---|---|---|']
    plain = done['plain']['seconds_per_epoch'] if 'plain' in done else None
    for key in ROWS:
        if key in done:
            r = done[key]
            ratio = f"{r['seconds_per_epoch'] / plain:.2f}x" if plain else 'n/a'
            lines.append(f"| {r['name']} | {r['seconds_per_epoch']:.2f} | {ratio} | "
                         f"{r['crops_per_s']:,.0f} | {r['data_wait']:.0%} |")
    if skipped:
        lines += ['', f"Not measured (time limit): {'; '.join(ROWS[k][0] for k in skipped)}."]
    if label_seconds is not None:
        lines += ['', f"One-off labelling of the crop records (8 per image, by the teacher): "
                      f"{label_seconds:.0f} s."]
    return '\n'.join(lines)


def save(out: Path, stem: str, rows, text: str) -> None:
    """The table, its rows as JSON, and a plot where matplotlib is installed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f'{stem}.md').write_text(text + '\n')
    (out / f'{stem}.json').write_text(json.dumps(rows, indent=1))
    try:
        plot(rows, out / f'{stem}.png', text.splitlines()[0].split(';')[0])
    except ImportError:
        pass  # a lent GPU machine may lack matplotlib; the table is the result


def estimate(key: str, rows: list) -> float:
    """Seconds a row will take, from the rows done: their time per epoch of crops plus a fixed
    start-up (loaders compiled, model built), scaled by the row's epochs."""
    if not rows:
        return 0.0
    per_epoch = max(r['wall_seconds'] / (2 * r['k']) for r in rows)
    factor = 3.0 if key == 'original' else 1.0  # slower per crop, and its files are exported
    return per_epoch * 2 * ROWS[key][2] * factor


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--preset', choices=sorted(PRESETS), default='cpu')
    parser.add_argument('--images', type=int, default=0, help='training images (0: preset)')
    parser.add_argument('--batch', type=int, default=0, help='crops per step (0: preset)')
    parser.add_argument('--side', type=int, default=0, help='crop side (0: preset)')
    parser.add_argument('--work', default='', help='default build/timing-<preset>')
    parser.add_argument('--out', default='', help='write timing_<preset>.md/.json/.png here')
    parser.add_argument('--rows', default='', help=f'comma-separated rows, of {",".join(ROWS)} '
                        '(default: all)')
    parser.add_argument('--time-limit', type=float, default=0,
                        help='seconds; skip rows that would end after it (0: no limit)')
    args = parser.parse_args()
    started = time.perf_counter()
    preset = dict(PRESETS[args.preset])
    preset.update({k: v for k, v in (('images', args.images), ('batch', args.batch),
                                     ('side', args.side)) if v})
    wanted = [r.strip() for r in args.rows.split(',') if r.strip()] or list(ROWS)
    unknown = [r for r in wanted if r not in ROWS]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(ROWS)}")
    wanted = [r for r in RUN_ORDER if r in wanted]
    work = Path(args.work or REPO / 'build' / f'timing-{args.preset}')
    betons, labelled, specs, label_seconds = prepare(work, preset, preset['images'], 8)
    rows, skipped = [], []
    for key in wanted:
        left = args.time_limit - (time.perf_counter() - started)
        if args.time_limit and estimate(key, rows) > left:
            skipped.append(key)
            print(f"skipped {key}: about {estimate(key, rows):.0f} s, {left:.0f} s left",
                  flush=True)
            continue
        name, mode, k = ROWS[key]
        overrides = {'training.mode': mode}
        if mode in ('online_kd', 'online_meal_v2'):
            overrides['fkd.teacher'] = specs[mode]
        if mode in ('fkd', 'meal_v2'):
            overrides['fkd.num_crops'] = k
        if mode in ('meal_v2', 'online_meal_v2'):  # from weights; timing only (the table's lr)
            student = {k.split('.')[1]: v for k, v in preset['student'].items()}
            start = export(work / 'student_start.pt', student, 2,
                           Beton(betons['train']).classes, preset['side'])
            overrides.update({'model.weights': str(start), 'training.weight_decay': 0.0})
        trainer_class = Trainer
        if key == 'original':
            OriginalPathTrainer.files = export_original_files(labelled, work / 'original_files')
            trainer_class = OriginalPathTrainer
        rows.append(timed_run(key, work, labelled if mode in ('fkd', 'meal_v2')
                              else betons['train'],
                              betons['val'], overrides, preset, trainer_class))
        r = rows[-1]
        print(f"row: {name}: {r['seconds_per_epoch']:.2f} s/epoch, {r['crops_per_s']:,.0f} "
              f"crops/s, {r['data_wait']:.0%} waiting for data ({r['wall_seconds']:.0f} s)",
              flush=True)
        if args.out:
            save(Path(args.out), f'timing_{args.preset}', rows,
                 table(rows, preset, label_seconds, skipped))
    if not rows:
        raise SystemExit("timing table: no row fitted in the time limit")
    text = table(rows, preset, label_seconds, skipped)
    print(text)
    (work / 'timing.json').write_text(json.dumps(rows, indent=1))
    if args.out:
        save(Path(args.out), f'timing_{args.preset}', rows, text)


def plot(rows, path: Path, title: str) -> None:
    """Seconds per epoch as horizontal bars, plain at the top."""
    import textwrap
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    done = {r['key']: r for r in rows}
    shown = [done[k] for k in ROWS if k in done][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(shown) + 1.2))
    ax.barh([r['name'].replace(" (PIL, label files, DataLoader)", '') for r in shown],
            [r['seconds_per_epoch'] for r in shown], color='tab:blue')
    ax.set_xlabel('seconds per epoch (lower is better)')
    fig.suptitle(textwrap.fill(title, 110), fontsize=8)  # centred on the figure, not the bars
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == '__main__':
    main()
