"""ffcv-imagenet's epochs-vs-time table on this machine: top-1 and training time for several
epoch budgets, plain training and FKD, one model, resolution and data set.

    python -m benchmarks.epochs_table [--epochs 4 8 16] [--out docs/tables/epochs_cpu.md]

Uses the demo's data and teacher labels (`make demo` first: build/demo): the small_resnet
student (width 16, depth 1) at 32 px on 10,000 Fashion-MNIST images with the demo's recipes
(fkd_ffcv/small_configs/fashion_mnist_{plain,fkd}.yaml), only the epoch budget changed (the cyclic
schedule stretches with it). FKD replays the demo's 4 records per image, so budgets above 4
epochs reuse each record epochs / 4 times. Writes markdown and a PNG; the table names the
machine (CPU model, bf16) and precision, on which its top-1 values depend.
"""
import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.common import versions
from fkd_ffcv.reporting import machine, precision_of
from fkd_ffcv.commands.demo_steps import run_or_reuse
from fkd_ffcv.training.options import recipe


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--epochs', type=int, nargs='+', default=[4, 8, 16])
    parser.add_argument('--demo', default='build/demo', help="the demo's folder")
    parser.add_argument('--out', default='')
    args = parser.parse_args()
    work = Path(args.demo)
    if not (work / 'fashion_mnist_train_fkd.beton').exists():
        sys.exit(f"{work} has no labelled beton: run `make demo` first")
    data = {'plain': work / 'fashion_mnist_train.beton',
            'fkd': work / 'fashion_mnist_train_fkd.beton'}
    results = {}
    for mode, train in data.items():
        for epochs in args.epochs:
            results[mode, epochs] = run_or_reuse(recipe(mode, {
                'data.train_dataset': str(train),
                'data.val_dataset': str(work / 'fashion_mnist_val.beton'),
                'training.epochs': epochs, 'validation.every_passes': 0,
                'logging.progress': False,
                'logging.folder': str(work / 'runs' / f'epochs_{mode}_{epochs}')}))
    k = recipe('fkd', {})['fkd']['num_crops']
    teacher = json.loads((work / 'runs' / 'teacher' / 'summary.json').read_text())['top1']
    lines = [f"small_resnet (width 16, depth 1), 10,000 Fashion-MNIST images at 32 px, 5,000 "
             f"validation images, demo recipes (FKD labels from the demo's teacher, "
             f"{teacher:.2%}); training seconds exclude validation; "
             f"{precision_of(results.values())}. {machine()}; "
             f"{versions('torch', 'ffcv')}; {time.strftime('%Y-%m-%d')}.", '',
             f'| epochs | plain top-1 | plain s | FKD (K={k}) top-1 | FKD s |',
             '|---|---|---|---|---|']
    for epochs in args.epochs:
        p, f = results['plain', epochs], results['fkd', epochs]
        lines.append(f"| {epochs} | {p['top1']:.2%} | {p['train_seconds']:.0f} | "
                     f"{f['top1']:.2%} | {f['train_seconds']:.0f} |")
    text = '\n'.join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.write_text(text + '\n')
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for mode, label in (('plain', 'plain'), ('fkd', f'FKD, K={k}')):
            xs = [results[mode, e]['train_seconds'] for e in args.epochs]
            ys = [100 * results[mode, e]['top1'] for e in args.epochs]
            ax.plot(xs, ys, marker='o', label=label)
            for x, y, e in zip(xs, ys, args.epochs):
                ax.annotate(f'{e} ep', (x, y), textcoords='offset points', xytext=(4, -10),
                            fontsize=8)
        ax.set_xlabel('training time (s)')
        ax.set_ylabel('validation top-1 (%)')
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out.with_suffix('.png'), dpi=120)


if __name__ == '__main__':
    main()
