"""What replacing the hand-written ViT with timm's changed: the same DeiT-Tiny shape (192 wide,
12 blocks, 3 heads; 4 px patches at 32 px, so 64 patches and a class token), the same recipe,
trained once by the package of a git revision that still had the hand-written ViT and once by
this checkout's package with timm's.

    python -m benchmarks.vit_switch [--base c7dc0c5] [--epochs 12] [--out FILE.md]

Data: 2,000 Fashion-MNIST training images (an even spread), 2,000 validation images, 32 px.
Recipe: plain mode (label smoothing 0.1, so no teacher enters the comparison), DeiT's
optimiser: AdamW, weight decay 0.05 (not on norms, biases, position and class tokens),
1 warm-up epoch then cosine, peak lr 1e-3 at 128 crops per step, stochastic depth 0.1,
bf16 autocast where the CPU computes it. Each run is a subprocess of `train_imagenet.py`;
the base revision's `fkd_ffcv` and script are extracted with `git archive`. Prints and writes
top-1, training time and crops/s per run, with the machine line.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, extract_revision, report, versions
from fkd_ffcv.reporting import machine
from fkd_ffcv.commands.demo_steps import fashion_mnist_betons

SHAPE = {'model.patch_size': 4, 'model.image_size': 32, 'model.drop_path': 0.1}
ARCHS = {  # the same DeiT-Tiny shape, written as each version takes it
    'hand-written ViT (base revision)': {'model.arch': 'vit', 'model.width': 192,
                                         'model.depth': 12, 'model.heads': 3, **SHAPE},
    'timm deit_tiny_patch16_224': {'model.arch': 'timm:deit_tiny_patch16_224', **SHAPE},
}


def recipe(train, val, epochs, folder) -> dict:
    return {'data.train_dataset': train, 'data.val_dataset': val, 'data.crop_scale_min': 0.35,
            'training.mode': 'plain', 'training.epochs': epochs, 'training.batch_size': 128,
            'training.optimizer': 'adamw', 'training.weight_decay': 0.05,
            'training.label_smoothing': 0.1, 'training.precision': 'auto',
            'lr.lr': 1e-3, 'lr.schedule': 'cosine', 'lr.warmup_epochs': 1.0,
            'resolution.min_res': 32, 'resolution.max_res': 32, 'resolution.round_to': 4,
            'validation.resolution': 32, 'validation.ratio': 1.0,
            'validation.every_passes': max(1, epochs // 3), 'model.blurpool': False,
            'logging.folder': folder, 'logging.progress': False}


def train(root: Path, options: dict) -> dict:
    """Run train_imagenet.py of `root` with `options`; its summary.json."""
    command = [sys.executable, 'train_imagenet.py'] + [f'--{k}={v}' for k, v in options.items()]
    env = {**os.environ, 'PYTHONPATH': str(root)}
    found = subprocess.run([sys.executable, '-c', 'import fkd_ffcv; print(fkd_ffcv.__file__)'],
                           cwd=root, env=env, capture_output=True, text=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(root.resolve()):
        sys.exit(f"{root}: fkd_ffcv would be imported from {found}, not from there")
    started = time.perf_counter()
    try:  # the limit: at most 10 minutes per run
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                              timeout=600)
    except subprocess.TimeoutExpired:
        sys.exit(f"{root}: the run took over 10 minutes; lower --epochs")
    if done.returncode:
        sys.exit(f"{root}: train_imagenet.py failed:\n{done.stderr[-3000:]}")
    summary = json.loads((Path(options['logging.folder']) / 'summary.json').read_text())
    return {**summary, 'wall_seconds': time.perf_counter() - started}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--base', default='c7dc0c5', help='a revision with the hand-written ViT')
    parser.add_argument('--epochs', type=int, default=12)
    parser.add_argument('--work', type=Path, default=REPO / 'build' / 'vit_switch')
    parser.add_argument('--out', type=Path, default=None, help='also write the table here')
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    train_beton, val_beton = fashion_mnist_betons(args.work, 2000, 2000)
    rows = []
    with tempfile.TemporaryDirectory() as base:
        roots = [extract_revision(args.base, ['fkd_ffcv', 'train_imagenet.py'], Path(base)),
                 REPO]
        for (name, arch), root in zip(ARCHS.items(), roots):
            folder = args.work / name.split()[0]
            shutil.rmtree(folder, ignore_errors=True)  # a fresh measurement every time
            options = {**recipe(train_beton, val_beton, args.epochs, folder), **arch}
            print(f"training {name} ({args.epochs} epochs) ...", flush=True)
            summary = train(root, options)
            rows.append(f"| {name} | {summary['top1']:.2%} | {summary['train_seconds']:.0f} | "
                        f"{summary['crops_per_s']:.1f} | {summary['precision']} |")
            print(rows[-1], flush=True)
    table = '\n'.join([
        f"ViT switch: DeiT-Tiny shape at 32 px (4 px patches), 2,000 Fashion-MNIST training "
        f"images, {args.epochs} epochs, plain mode, DeiT's optimiser; base {args.base}",
        f"Machine: {machine()}; {versions('torch', 'timm')}", '',
        '| student | top-1 | training s | crops/s | precision |', '|---|---|---|---|---|',
        *rows])
    report(table, args.out)


if __name__ == '__main__':
    main()
