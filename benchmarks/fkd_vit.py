"""FKD's ViT students on the CPU demo data: SReT-LT (small input) against the DeiT-Tiny-shaped
timm ViT of similar size, and FKD's single-crop phases on and off, several seeds.

    python -m benchmarks.fkd_vit [--demo build/demo] [--seeds 3] [--epochs 8] [--out FILE.md]

Uses the demo's teacher (`make demo` first). Students see 2,000 Fashion-MNIST training images
(an even spread) at 32 px, 8 crop records per image labelled by that teacher as the demo
labels; top-1 on 2,000 validation images. One recipe for every row: FKD, K = 4, 128 crops per
step, AdamW lr 1e-3, weight decay 0.05, one warm-up epoch then cosine, stochastic depth 0.1.
Rows:

- `sret_lt` (small input: 16 x 16 tokens in stage 1) and `timm:deit_tiny_patch16_224` with
  4 px patches (64 tokens and a class token), both about 5 M parameters;
- `sret_lt` with `fkd.single_crop_phases` (its warm-up epoch and the epochs K leaves over
  with one crop per image: 8 epochs are passes of 1, 4, 1, 1, 1 crops) against without
  (2 passes of 4). Half of these 8 epochs run with one crop, against 8 of FKD's 300: this
  measures the phases where they weigh most.

Runs are kept under <demo>/fkd_vit and reused by a later invocation (delete to rerun).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import report, versions
from fkd_ffcv.reporting import machine, precision_of
from fkd_ffcv.commands.demo_steps import fashion_mnist_betons, label_as_demo, run_or_reuse
from fkd_ffcv.training.options import recipe

RECIPE = {'training.optimizer': 'adamw', 'training.weight_decay': 0.05, 'lr.lr': 1e-3,
          'lr.schedule': 'cosine', 'lr.warmup_epochs': 1.0, 'lr.end_factor': 0.0,
          'training.batch_size': 128, 'fkd.num_crops': 4, 'model.drop_path': 0.1,
          'model.blurpool': False, 'training.mixup_alpha': 0.0, 'training.cutmix_alpha': 0.0,
          'training.ema_epochs': 0.0, 'validation.every_passes': 0,
          'resolution.round_to': 4, 'logging.progress': False}
ROWS = {  # the first two: K = 4 throughout (2 passes), as measured before phases were default
    'sret_lt (small input)': {'model.arch': 'sret_lt', 'model.small_input': True,
                              'fkd.single_crop_phases': False},
    'timm deit_tiny, 4 px patches': {'model.arch': 'timm:deit_tiny_patch16_224',
                                     'model.patch_size': 4, 'model.image_size': 32,
                                     'fkd.single_crop_phases': False},
    'sret_lt (small input), single-crop phases': {'model.arch': 'sret_lt',
                                                  'model.small_input': True,
                                                  'fkd.single_crop_phases': True},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--demo', type=Path, default=Path('build/demo'))
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--epochs', type=int, default=8)
    parser.add_argument('--out', type=Path, default=None)
    args = parser.parse_args()
    teacher = args.demo / 'runs' / 'teacher' / 'final_weights.pt'
    if not teacher.exists():
        sys.exit(f"{teacher} is missing: run `make demo` first (or give --demo)")
    work = args.demo / 'fkd_vit'
    work.mkdir(exist_ok=True)
    train, val = fashion_mnist_betons(work, 2000, 2000)
    labelled = label_as_demo(train, teacher, work, 8)
    started, results = time.perf_counter(), {row: [] for row in ROWS}
    for seed in range(args.seeds):
        for row, overrides in ROWS.items():
            folder = work / 'runs' / f"{overrides['model.arch'].replace(':', '_')}" \
                f"{'_phases' if overrides.get('fkd.single_crop_phases') else ''}" \
                f"_e{args.epochs}_seed{seed}"  # reused only for the same epochs
            print(f"{row}, seed {seed} ...", flush=True)
            results[row].append(run_or_reuse(recipe('fkd', {
                **RECIPE, **overrides, 'data.train_dataset': str(labelled),
                'data.val_dataset': str(val), 'training.epochs': args.epochs,
                'training.seed': seed, 'logging.folder': str(folder)})))
    precision = precision_of([s for summaries in results.values() for s in summaries])
    lines = [f"FKD students on 2,000 Fashion-MNIST images at 32 px, {args.epochs} epochs, K = 4, "
             f"{args.seeds} seeds, the demo's teacher (8 records per image); top-1 on 2,000 "
             f"validation images; {precision}. {machine()}; {versions('torch', 'timm')}; "
             f"{time.strftime('%Y-%m-%d')}, {time.perf_counter() - started:.0f} s.", '',
             '| student | top-1 mean | min - max | training s (mean) | crops/s |',
             '|---|---|---|---|---|']
    for row, summaries in results.items():
        top1 = [s['top1'] for s in summaries]
        lines.append(f"| {row} | {statistics.mean(top1):.2%} | {min(top1):.2%} - "
                     f"{max(top1):.2%} | {statistics.mean(s['train_seconds'] for s in summaries):.0f}"
                     f" | {statistics.mean(s['crops_per_s'] for s in summaries):.0f} |")
    report('\n'.join(lines), args.out)


if __name__ == '__main__':
    main()
