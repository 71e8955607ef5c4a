"""Accuracy evidence on Fashion-MNIST, several seeds: FKD vs online KD vs plain students.

    python -m benchmarks.accuracy [--seeds 3] [--teacher-epochs 16] [--out FILE.md]

Uses the demo's data (`make demo` first: build/demo). Every student has the demo's recipe
(fkd_ffcv/small_configs/fashion_mnist_*.yaml) with only the seed, data and epochs changed. Two
experiments:

1. the demo's setting: the demo's teacher, the 10,000 training images it was trained on,
   4 epochs. FKD vs online KD with the same teacher and crops;
2. where distillation is known to help: a strong teacher (the demo's teacher recipe trained
   for --teacher-epochs on the same 10,000 images) and students that see only 2,000 of them
   (an even spread of the 60,000, 8 records per image labelled by the strong teacher), 12
   epochs. Two diagnostic rows: FKD with K = 2, and plain without label smoothing.

Prints and writes mean and spread (min-max) of the final top-1 per student over the seeds,
with the machine (CPU model, bf16) and precision: the values repeat exactly only there.
Training seconds are only indicative (other jobs may share the machine; the timing table is
the measurement of speed). Runs reused from an earlier invocation keep the machine they ran on.
"""
import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.common import seed_table, versions
from fkd_ffcv.reporting import machine, precision_of
from fkd_ffcv.commands.demo_steps import fashion_mnist_betons, label_as_demo, run_or_reuse
from fkd_ffcv.training.options import recipe

# (row name, recipe, overrides): the three students, and two diagnostics of the FKD-vs-plain
# gap: FKD with two crops per decoded image, plain without label smoothing
STUDENTS = (('fkd', 'fkd', {}), ('online_kd', 'online_kd', {}), ('plain', 'plain', {}))
DIAGNOSTICS = (('fkd, K=2', 'fkd', {'fkd.num_crops': 2}),
               ('plain, no label smoothing', 'plain', {'training.label_smoothing': 0.0}))


def experiment(name, out, train, labelled, val, teacher_file, epochs, seeds, students):
    results = {row: [] for row, _, _ in students}
    for seed in range(seeds):
        for row, student, overrides in students:
            tag = row.replace(', ', '_').replace(' ', '_').replace('=', '')
            folder = out / 'runs' / f'{name}_{tag}_seed{seed}'
            summary = run_or_reuse(recipe(student, {
                'data.train_dataset': str(labelled if student == 'fkd' else train),
                'data.val_dataset': str(val), 'training.epochs': epochs,
                'training.seed': seed, 'fkd.teacher': f'checkpoint:{teacher_file}',
                'validation.every_passes': 0, 'logging.progress': False,
                'logging.folder': str(folder), **overrides}))
            results[row].append(summary)
    return results


def strong_teacher(work: Path, train: Path, val: Path, epochs: int) -> Path:
    """The demo's teacher recipe, trained for `epochs` (reused when already trained)."""
    folder = work / 'runs' / f'teacher_{epochs}_epochs'
    run_or_reuse(recipe('teacher', {
        'data.train_dataset': str(train), 'data.val_dataset': str(val),
        'training.epochs': epochs, 'validation.every_passes': 0, 'logging.progress': True,
        'logging.folder': str(folder)}))
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--teacher-epochs', type=int, default=16,
                        help="the strong teacher's epochs (experiment 2)")
    parser.add_argument('--demo', default='build/demo', help="the demo's folder")
    parser.add_argument('--out', default='')
    args = parser.parse_args()
    work = Path(args.demo)
    demo_teacher = work / 'runs' / 'teacher'
    if not (demo_teacher / 'final_weights.pt').exists():
        sys.exit(f"{demo_teacher / 'final_weights.pt'} is missing: run `make demo` first")
    train, val = work / 'fashion_mnist_train.beton', work / 'fashion_mnist_val.beton'
    labelled = work / 'fashion_mnist_train_fkd.beton'
    started = time.perf_counter()

    strong = strong_teacher(work, train, val, args.teacher_epochs)
    small = work / f'subset2k_teacher_{args.teacher_epochs}_epochs'
    small.mkdir(exist_ok=True)
    small_train = fashion_mnist_betons(small, 2000, 10)[0]
    small_labelled = label_as_demo(small_train, strong / 'final_weights.pt', small, 8)

    same = experiment('same', work, train, labelled, val, demo_teacher / 'final_weights.pt', 4,
                      args.seeds, STUDENTS)
    fewer = experiment(f'fewer_t{args.teacher_epochs}', work, small_train, small_labelled, val,
                       strong / 'final_weights.pt', 12, args.seeds, STUDENTS + DIAGNOSTICS)
    top1 = {name: json.loads((folder / 'summary.json').read_text())['top1']
            for name, folder in (('demo', demo_teacher), ('strong', strong))}
    precision = precision_of([summary for results in (same, fewer)
                                      for summaries in results.values() for summary in summaries])
    lines = [f"Students: small_resnet width 16 depth 1, {args.seeds} seeds each, FKD with K=1 "
             f"unless named; top-1 on the 5,000 validation images; {precision}. {machine()}; "
             f"{versions('torch', 'ffcv')}; {time.strftime('%Y-%m-%d')}, "
             f"{time.perf_counter() - started:.0f} s.", '']
    lines += seed_table(f"1. Same 10,000 images as the teacher (the demo's, {top1['demo']:.2%}), "
                  f"4 epochs, 4 records per image", same)
    lines += [''] + seed_table(f"2. Strong teacher ({args.teacher_epochs} epochs on the 10,000 images, "
                         f"{top1['strong']:.2%}); students see 2,000 images, 12 epochs, 8 records "
                         f"per image", fewer)
    text = '\n'.join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + '\n')


if __name__ == '__main__':
    main()
