"""`make demo`: the whole FKD life cycle on the Fashion-MNIST default, on a CPU, in minutes.

1. write a subset of the training images and the validation images to betons;
2. train a teacher (a ResNet-20) with hard labels;
3. label R random crops of every training image with it, into the training beton;
4. train three students with the same model, crops and schedule: FKD (soft labels replayed
   from the beton), online KD (the teacher runs on every batch) and plain (hard labels);
5. print a results table (top-1, time, crops/s) and plot accuracy against training time.

The recipes are `small_configs/fashion_mnist_*.yaml`. A finished step is reused when the demo
runs again (a beton with its manifest, a run folder with summary.json); an interrupted
training run resumes from its last pass.

    python -m fkd_ffcv.demo [--smoke] [--out build/demo]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SIZES = {  # images, epochs and records; 'full' fits `make demo` in minutes on two cores
    'full': dict(train=10_000, val=5_000, teacher_epochs=6, records=4, epochs=4),
    'smoke': dict(train=1_000, val=500, teacher_epochs=2, records=2, epochs=2),
}
STUDENTS = ('fkd', 'online_kd', 'plain')


def recipe(name: str, overrides: dict) -> dict:
    """small_configs/fashion_mnist_<name>.yaml as options, with `overrides` on top."""
    from .options import options
    path = REPO / 'small_configs' / f'fashion_mnist_{name}.yaml'
    flat = {f'{section}.{key}': value
            for section, values in yaml.safe_load(path.read_text()).items()
            for key, value in values.items()}
    return options({**flat, **overrides})


def write_data(out: Path, size: dict) -> tuple:
    from .beton import Beton
    from .fields import image_fields
    from .sources import FashionMNISTSource
    from .writer import write_beton
    paths = []
    for split in ('train', 'val'):
        path = out / f'fashion_mnist_{split}.beton'
        if not (path.exists() and Beton(path).manifest):
            source = FashionMNISTSource(split, 32, subset=size[split])
            write_beton(path, image_fields('raw'), source, manifest={
                'classes': source.classes, 'source': {'name': 'fashion-mnist', 'split': split,
                                                      'subset': size[split]}})
        paths.append(path)
    return tuple(paths)


def train(name: str, opts: dict) -> dict:
    """Run (or reuse, or resume) one training run; returns its summary."""
    from .training import Trainer
    folder = Path(opts['logging']['folder'])
    if (folder / 'summary.json').exists():
        print(f"  reusing {folder} (delete it to train again)")
        return json.loads((folder / 'summary.json').read_text())
    opts['training']['resume'] = (folder / 'checkpoint.pt').exists()
    return Trainer(opts).run()


def label(train_beton: Path, teacher_file: Path, out: Path, records: int) -> Path:
    """Label `records` crops per image with the plain recipe's crop scale, so the FKD student's
    record r is the crop the plain student draws in pass r (same seed)."""
    from .labeling import LabelingSettings, label_beton
    from .teachers import Teacher
    labelled = out / 'fashion_mnist_train_fkd.beton'
    if labelled.exists():
        print(f"  reusing {labelled}")
        return labelled
    data = recipe('plain', {})['data']
    settings = LabelingSettings(num_records=records, label_type='marginal_smoothing_k3',
                                scale=(data['crop_scale_min'], data['crop_scale_max']),
                                batch_size=512)
    started = time.perf_counter()
    label_beton(train_beton, labelled, Teacher(f'checkpoint:{teacher_file}'), settings,
                out / 'labelling.work')
    (out / 'labelling.json').write_text(json.dumps(
        {'seconds': time.perf_counter() - started, 'records': records}))
    return labelled


def curve(folder: Path) -> tuple:
    """(cumulative training seconds, top-1) at each validation of a run."""
    seconds, points = 0.0, []
    for line in (folder / 'log.jsonl').read_text().splitlines():
        line = json.loads(line)
        seconds += line['seconds']
        if 'top1' in line:
            points.append((seconds, line['top1']))
    return tuple(zip(*points))


def report(out: Path, summaries: dict, folders: dict) -> str:
    labelling = json.loads((out / 'labelling.json').read_text()) \
        if (out / 'labelling.json').exists() else None
    names = {'teacher': 'teacher (ResNet-20, hard labels)',
             'fkd': 'FKD student (soft labels from the beton)',
             'online_kd': 'online-KD student (teacher on every batch)',
             'plain': 'plain student (hard labels)'}
    lines = ['| run | top-1 | top-5 | training s | wall s | crops/s |', '|---|---|---|---|---|---|']
    for key, s in summaries.items():
        lines.append(f"| {names[key]} | {s['top1']:.2%} | {s['top5']:.2%} | "
                     f"{s['train_seconds']:.0f} | {s['wall_seconds']:.0f} | "
                     f"{s['crops_per_s']:,.0f} |")
    if labelling:
        lines.append(f"| labelling {labelling['records']} crop records per image (once) | | | "
                     f"| {labelling['seconds']:.0f} | |")
    table = '\n'.join(lines)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in STUDENTS:
        x, y = curve(folders[key])
        ax.plot(x, [100 * v for v in y], marker='o', label=names[key].split(' (')[0])
    ax.set_xlabel('training time (s, excluding validation)')
    ax.set_ylabel('validation top-1 (%)')
    ax.set_title('Fashion-MNIST subset, small ResNet, same crops')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / 'results.png', dpi=120)
    (out / 'results.md').write_text(table + '\n')
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--smoke', action='store_true', help='the small CI version')
    parser.add_argument('--out', default='', help='work folder (default build/demo[-smoke])')
    args = parser.parse_args(argv)
    size = SIZES['smoke' if args.smoke else 'full']
    out = Path(args.out or REPO / 'build' / ('demo-smoke' if args.smoke else 'demo'))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    print(f"[1/5] writing {size['train']:,} training and {size['val']:,} validation images")
    train_beton, val_beton = write_data(out, size)
    common = {'data.val_dataset': str(val_beton), 'logging.progress': True}

    print(f"[2/5] training the teacher ({size['teacher_epochs']} epochs)")
    folders = {name: out / 'runs' / name for name in ('teacher',) + STUDENTS}
    summaries = {'teacher': train('teacher', recipe('teacher', {
        **common, 'data.train_dataset': str(train_beton),
        'training.epochs': size['teacher_epochs'],
        'logging.folder': str(folders['teacher'])}))}
    teacher_file = folders['teacher'] / 'final_weights.pt'

    print(f"[3/5] labelling {size['records']} crops of every training image with the teacher")
    labelled = label(train_beton, teacher_file, out, size['records'])

    print(f"[4/5] training three students on the same crops ({size['epochs']} epochs each)")
    for name in STUDENTS:
        print(f"  {name}")
        summaries[name] = train(name, recipe(name, {
            **common, 'training.epochs': size['epochs'],
            'data.train_dataset': str(labelled if name == 'fkd' else train_beton),
            'fkd.teacher': f'checkpoint:{teacher_file}',
            'logging.folder': str(folders[name])}))

    print("[5/5] results" + (" (smoke size: a few dozen steps, near chance; it checks the path,"
                             " not accuracy)" if args.smoke else ""))
    print(report(out, summaries, folders))
    print(f"\nplot: {out / 'results.png'}; table: {out / 'results.md'}; "
          f"demo time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == '__main__':
    from .errors import TrainingError
    try:
        raise SystemExit(main())
    except TrainingError as e:
        raise SystemExit(f"error: {e}") from None
