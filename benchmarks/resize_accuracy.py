"""What the crop resize filter does to training: the demo's FKD and plain students, and a short
fine-tuning run on ImageNet-shaped photos, once per filter, several seeds.

    python -m benchmarks.resize_accuracy [--demo build/demo] [--seeds 3] [--photo-seeds 2]
                                         [--out FILE.md]

1. The demo (`make demo` first): its teacher labels the 10,000 training images once per filter
   (4 records per image, the teacher's crops resized with that filter), and the demo's FKD and
   plain students train 4 epochs with the same filter in their loaders and validation. The
   demo's images are 32 px (Fashion-MNIST's 28 px resized with OpenCV's bicubic) and its crops
   cover 0.7-1 of them, so every crop is resized up or kept: this measures the filters where
   they differ least.
2. Photos: the `imagenet` photo set of benchmarks/common.py (4:3 and 3:4 regions of the
   endless-sky landscapes at 500 px), one class per scene with 7 or more photos, every 4th
   photo of a scene (its four variants together) for validation, stored as the loader
   benchmark stores them (JPEG 90). The README's fine-tuning recipe
   (own_data_configs/teacher_finetune.yaml: EfficientNet-Lite0 with ImageNet weights, a new
   head, 3 epochs at 160 px, crop scale 0.35-1): crops are 1.4-2.7x downscales, where the
   filters differ, and the pretrained network has seen ImageNet through an antialiased resize.
   --photo-seeds seeds (a run takes about 3 minutes on 2 cores).

Prints mean and range of the final top-1 per filter, with the machine. Runs live under
<demo>/resize and are reused by a later invocation (delete them to rerun).
"""
import argparse
import sys
import time
from pathlib import Path

from benchmarks.common import REPO, photo_betons, report, seed_table, versions
from fkd_ffcv.defaults import RESIZE_FILTERS
from fkd_ffcv.reporting import machine, precision_of
from fkd_ffcv.commands.demo_steps import label_as_demo, run_or_reuse
from fkd_ffcv.training.options import recipe

FINE_TUNE = REPO / 'own_data_configs' / 'teacher_finetune.yaml'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--demo', type=Path, default=Path('build/demo'))
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--photo-seeds', type=int, default=2)
    parser.add_argument('--out', default='')
    args = parser.parse_args()
    teacher = args.demo / 'runs' / 'teacher' / 'final_weights.pt'
    if not teacher.exists():
        sys.exit(f"{teacher} is missing: run `make demo` first (or give --demo)")
    work = args.demo / 'resize'
    work.mkdir(exist_ok=True)
    train, val = args.demo / 'fashion_mnist_train.beton', args.demo / 'fashion_mnist_val.beton'
    started = time.perf_counter()

    demo = {f'{mode}, {name}': [] for mode in ('fkd', 'plain') for name in RESIZE_FILTERS}
    photos = {name: [] for name in RESIZE_FILTERS}
    photo_train, photo_val = photo_betons(work)
    for name in RESIZE_FILTERS:
        labelled = label_as_demo(train, teacher, work, 4, name=f'train_fkd_{name}.beton',
                                 interpolation=name)
        for seed in range(args.seeds):
            for mode in ('fkd', 'plain'):
                demo[f'{mode}, {name}'].append(run_or_reuse(recipe(mode, {
                    'data.train_dataset': str(labelled if mode == 'fkd' else train),
                    'data.val_dataset': str(val), 'data.resize': name,
                    'training.seed': seed, 'validation.every_passes': 0,
                    'logging.progress': False,
                    'logging.folder': str(work / 'runs' / f'demo_{mode}_{name}_seed{seed}')})))
        for seed in range(args.photo_seeds):
            photos[name].append(run_or_reuse(recipe(FINE_TUNE, {
                # the recipe's schedule when docs/results.md's table was measured (2026-12-03)
                'training.epochs': 3, 'training.batch_size': 32, 'lr.lr': 0.02,
                'data.train_dataset': str(photo_train), 'data.val_dataset': str(photo_val),
                'data.resize': name, 'training.seed': seed, 'validation.every_passes': 0,
                'logging.progress': False,
                'logging.folder': str(work / 'runs' / f'photos_lite0_{name}_seed{seed}')})))
    summaries = [s for group in (demo, photos) for runs in group.values() for s in runs]
    from fkd_ffcv.data.beton import Beton
    lines = [f"Students: the demo's small_resnet (width 16, depth 1), {args.seeds} seeds per "
             f"row; {precision_of(summaries)}. {machine()}; {versions('torch', 'ffcv')}; "
             f"{time.strftime('%Y-%m-%d')}, {time.perf_counter() - started:.0f} s.", '']
    lines += seed_table("1. The demo: Fashion-MNIST at 32 px, 4 epochs; FKD on 4 records per "
                        "image labelled with the same filter (top-1 on 5,000 images)", demo,
                        'student, filter')
    lines += [''] + seed_table(
        f"2. ImageNet-shaped photos ({len(Beton(photo_train)):,} training, "
        f"{len(Beton(photo_val)):,} validation images, {len(Beton(photo_train).classes)} "
        f"scenes): EfficientNet-Lite0 fine-tuned, 3 epochs at 160 px (validation 160 px, "
        f"ratio 0.875), {args.photo_seeds} seeds", photos, 'filter')
    report('\n'.join(lines), args.out)


if __name__ == '__main__':
    main()
