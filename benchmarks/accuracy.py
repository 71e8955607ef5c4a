"""Accuracy evidence on Fashion-MNIST, several seeds: FKD vs online KD vs plain students.

    python benchmarks/accuracy.py [--seeds 3] [--out docs/tables/accuracy_cpu.md]

Uses the demo's data and teacher (`make demo` first: build/demo). Two experiments, each student
with the demo's recipe (small_configs/fashion_mnist_*.yaml) and only the seed changed:

1. the demo's setting: the 10,000 training images the teacher was trained on, 4 epochs;
2. a student that sees fewer images than its teacher did: 2,000 (an even spread of the 60,000,
   labelled by the same teacher with 8 records per image), 12 epochs. Distillation is known to
   help most where the teacher knows more than the student's data shows.

The second experiment adds two diagnostics: FKD with K = 1, and plain without label smoothing.
Prints and writes mean and spread (min-max) of the final top-1 per student over the seeds.
Training seconds here are only indicative (other jobs may share the machine; the timing table
is the measurement of speed).
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from fkd_ffcv import demo  # noqa: E402

# (row name, recipe, overrides): the three students, and two diagnostics of the FKD-vs-plain
# gap: FKD with one crop per decoded image, plain without label smoothing
STUDENTS = (('fkd', 'fkd', {}), ('online_kd', 'online_kd', {}), ('plain', 'plain', {}))
DIAGNOSTICS = (('fkd, K=1', 'fkd', {'fkd.num_crops': 1}),
               ('plain, no label smoothing', 'plain', {'training.label_smoothing': 0.0}))


def experiment(name, out, train, labelled, val, teacher_file, epochs, seeds, students):
    results = {row: [] for row, _, _ in students}
    for seed in range(seeds):
        for row, student, overrides in students:
            tag = row.replace(', ', '_').replace(' ', '_').replace('=', '')
            folder = out / 'runs' / f'{name}_{tag}_seed{seed}'
            summary = demo.train(student, demo.recipe(student, {
                'data.train_dataset': str(labelled if student == 'fkd' else train),
                'data.val_dataset': str(val), 'training.epochs': epochs,
                'training.seed': seed, 'fkd.teacher': f'checkpoint:{teacher_file}',
                'validation.every_passes': 0, 'logging.progress': False,
                'logging.folder': str(folder), **overrides}))
            results[row].append(summary)
    return results


def rows(title, results):
    lines = [f'**{title}**', '', '| student | top-1 mean | min - max | training s (mean) |',
             '|---|---|---|---|']
    for student, summaries in results.items():
        top1 = [s['top1'] for s in summaries]
        lines.append(f"| {student} | {statistics.mean(top1):.2%} | {min(top1):.2%} - "
                     f"{max(top1):.2%} | {statistics.mean(s['train_seconds'] for s in summaries):.0f} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--demo', default=str(REPO / 'build' / 'demo'))
    parser.add_argument('--out', default='')
    args = parser.parse_args()
    work = Path(args.demo)
    teacher_file = work / 'runs' / 'teacher' / 'final_weights.pt'
    if not teacher_file.exists():
        sys.exit(f"{teacher_file} is missing: run `make demo` first")
    teacher = json.loads((work / 'runs' / 'teacher' / 'summary.json').read_text())
    train, val = work / 'fashion_mnist_train.beton', work / 'fashion_mnist_val.beton'
    labelled = work / 'fashion_mnist_train_fkd.beton'

    small = work / 'subset2k'
    small.mkdir(exist_ok=True)
    small_train = demo.write_data(small, {'train': 2000, 'val': 10})[0]
    small_labelled = demo.label(small_train, teacher_file, small, 8)

    started = time.perf_counter()
    same = experiment('same', work, train, labelled, val, teacher_file, 4, args.seeds,
                      STUDENTS)
    fewer = experiment('fewer', work, small_train, small_labelled, val, teacher_file, 12,
                       args.seeds, STUDENTS + DIAGNOSTICS)
    lines = [f"Teacher: ResNet-20 trained on the demo's 10,000 images, top-1 "
             f"{teacher['top1']:.2%} on the 5,000 validation images. Students: small_resnet "
             f"width 16 depth 1, {args.seeds} seeds each; "
             f"{time.strftime('%Y-%m-%d')}, {time.perf_counter() - started:.0f} s.", '']
    lines += rows("Same 10,000 images as the teacher, 4 epochs (FKD K=2, 4 records per image)",
                  same)
    lines += [''] + rows("2,000 images, 12 epochs (FKD K=2, 8 records per image)", fewer)
    text = '\n'.join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + '\n')


if __name__ == '__main__':
    main()
