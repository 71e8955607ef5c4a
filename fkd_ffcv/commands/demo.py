"""`make demo`: the whole FKD life cycle on the Fashion-MNIST default, on a CPU, in minutes.

1. write a subset of the training images and the validation images to betons;
2. train a teacher (a ResNet-20) with hard labels;
3. label R random crops of every training image with it, into the training beton;
4. train three students with the same model, crops and schedule: FKD (soft labels replayed
   from the beton), online KD (the teacher runs on every batch) and plain (hard labels);
5. print a results table (top-1, time, crops/s) and plot accuracy and loss against training
   time (plot.py, as `fkd-plot` draws runs).

The recipes are `fkd_ffcv/small_configs/fashion_mnist_*.yaml` (installed with the package);
the steps are fkd_ffcv/commands/demo_steps.py's. A finished step is reused when the demo runs
again (a beton with its manifest, a run folder with summary.json); an interrupted training run
resumes from its last pass. Files go under the current directory (build/demo by default).

    fkd-demo [--smoke] [--out build/demo]        (or: python -m fkd_ffcv.commands.demo)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fkd_ffcv.commands.demo_steps import fashion_mnist_betons, label_as_demo, run_or_reuse
from fkd_ffcv.training.options import recipe

SIZES = {  # images, epochs and records; 'full' fits `make demo` in minutes on two cores
    'full': dict(train=10_000, val=5_000, teacher_epochs=6, records=4, epochs=4),
    'smoke': dict(train=1_000, val=500, teacher_epochs=2, records=2, epochs=2),
}
STUDENTS = ('fkd', 'online_kd', 'plain')


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
    from fkd_ffcv.reporting import machine, precision_of
    table = '\n'.join(lines + ['', f"{machine()}; precision {precision_of(summaries.values())}."])
    from fkd_ffcv.commands.plot import plot_runs, read_log
    plot_runs({names[key].split(' (')[0]: read_log(folders[key]) for key in STUDENTS},
              out / 'results.png', 'Fashion-MNIST subset, small ResNet, same crops')
    (out / 'results.md').write_text(table + '\n')
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--smoke', action='store_true', help='the small CI version')
    parser.add_argument('--out', default='', help='work folder (default build/demo[-smoke])')
    args = parser.parse_args(argv)
    size = SIZES['smoke' if args.smoke else 'full']
    out = Path(args.out or Path('build') / ('demo-smoke' if args.smoke else 'demo'))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    print(f"[1/5] writing {size['train']:,} training and {size['val']:,} validation images")
    train_beton, val_beton = fashion_mnist_betons(out, size['train'], size['val'])
    common = {'data.val_dataset': str(val_beton), 'logging.progress': True}

    print(f"[2/5] training the teacher ({size['teacher_epochs']} epochs)")
    folders = {name: out / 'runs' / name for name in ('teacher',) + STUDENTS}
    summaries = {'teacher': run_or_reuse(recipe('teacher', {
        **common, 'data.train_dataset': str(train_beton),
        'training.epochs': size['teacher_epochs'],
        'logging.folder': str(folders['teacher'])}))}
    teacher_file = folders['teacher'] / 'final_weights.pt'

    print(f"[3/5] labelling {size['records']} crops of every training image with the teacher")
    labelled = label_as_demo(train_beton, teacher_file, out, size['records'])

    print(f"[4/5] training three students on the same crops ({size['epochs']} epochs each)")
    for name in STUDENTS:
        print(f"  {name}")
        summaries[name] = run_or_reuse(recipe(name, {
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


def command(argv=None) -> int:
    """fkd-demo: main() with a failed step reported in one line (exit status 1)."""
    from fkd_ffcv.errors import TrainingError
    try:
        return main(argv)
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(command())
