"""Fast MEAL V2 on the CPU demo data: a plain student's export continued by MEAL V2 with the
labels of a two-teacher ensemble, against continuing plain training and online MEAL V2.

    python -m benchmarks.meal_v2 [--demo build/demo] [--seeds 3] [--epochs 16] [--out FILE.md]

Uses the demo's runs (`make demo` first): its betons (10,000 training and 5,000 validation
Fashion-MNIST images at 32 px), its teacher (ResNet-20: small_resnet width 16, depth 3) and its
plain student's export (small_resnet width 16, depth 1), the starting point of every row. A
second teacher of another shape (small_resnet width 20, depth 2) is trained here with the
teacher's recipe, and the two label 4 crops of every training image as an ensemble (their
probabilities averaged). Every row continues from the same export with the recipe
`fkd_ffcv/small_configs/fashion_mnist_meal_v2.yaml` (SGD, lr 0.01 with x0.1 after 3/4 of the
epochs, no weight decay, 64 crops per step):

- Fast MEAL V2 (meal_v2, K = 2 records per decoded image): as published (the option
  defaults: PyTorch's initialisation, a ReLU after its last layer, the shared gradient, the
  student's learning rate, the student's logits); with the recipe's open start (the last biases
  at 1) and softmax inputs, shared; started
  open without that ReLU (discriminator.py: it closes for good while the discriminator cannot
  tell the two apart), with the shared and with a reversed gradient; and without a
  discriminator;
- plain: hard labels with the plain recipe's label smoothing, the same crops' distribution;
- online MEAL V2: both teachers run on every batch; as published (logits) and started open
  (softmax inputs);
- probes, seed 0 only: MEAL V2's discriminator at 10x the student's rate, and one without its
  last ReLU at 10x the rate, shared and reversed.

Top-1 on the 5,000 validation images (at the start: the export's), training seconds (without
validation), and how many runs' discriminators were dead (BCE ln 2, 50% right, every epoch). Runs are kept under <demo>/meal_v2 and reused by a later invocation (delete them
to rerun).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import report, versions
from fkd_ffcv.reporting import machine, precision_of
from fkd_ffcv.commands.demo_steps import fashion_mnist_betons, label_as_demo, run_or_reuse
from fkd_ffcv.training.options import options, recipe

SECOND_TEACHER = {'model.width': 20, 'model.depth': 2}
SHARED = {'meal.disc_gradient': 'shared'}
# MEAL V2's: the option defaults (the recipe names the project's variants)
PUBLISHED = {'meal.disc_open_start': False, 'meal.disc_softmax': False, **SHARED}
ROWS = {  # name: overrides of the MEAL V2 recipe (which names the project's variants)
    'Fast MEAL V2 as published (PyTorch init, last ReLU, shared gradient)': PUBLISHED,
    'Fast MEAL V2, discriminator started open (last ReLU, shared gradient, lr x1)': SHARED,
    'Fast MEAL V2, discriminator started open, without its last ReLU, shared gradient': {
        'meal.disc_last_relu': False, **SHARED},
    'Fast MEAL V2, discriminator started open, without its last ReLU, reversed gradient': {
        'meal.disc_last_relu': False, 'meal.disc_gradient': 'reversed'},
    'Fast MEAL V2 without discriminator': {'meal.discriminator': False},
    'plain training continued (hard labels, same epochs)': {'training.mode': 'plain'},
    'online MEAL V2 as published (logits, PyTorch init, last ReLU, shared gradient)': {
        'training.mode': 'online_meal_v2', **PUBLISHED},
    'online MEAL V2, discriminator started open (shared gradient)': {
        'training.mode': 'online_meal_v2', **SHARED},
}
# Seed 0 only: the open-start discriminator at 10x the rate, and probes of one that learns (without
# the last ReLU, at 10x the rate).
PROBE_ROWS = {
    'probe: discriminator started open, lr x10, shared gradient': {
        'meal.disc_lr_ratio': 10.0, **SHARED},
    'probe: no last ReLU, discriminator lr x10, shared gradient': {
        'meal.disc_last_relu': False, 'meal.disc_lr_ratio': 10.0, **SHARED},
    'probe: no last ReLU, discriminator lr x10, reversed gradient': {
        'meal.disc_last_relu': False, 'meal.disc_lr_ratio': 10.0,
        'meal.disc_gradient': 'reversed'},
}
PLAIN_ONLY = ('training.label_smoothing',)  # what the plain row takes from the plain recipe


def row_options(overrides, base, plain, teachers, seed, folder):
    mode = overrides.get('training.mode', 'meal_v2')
    opts = dict(base)
    if mode == 'plain':  # no meal options, and the plain recipe's labels
        opts = {k: v for k, v in opts.items() if not k.startswith(('meal.', 'fkd.'))}
        opts.update({k: plain[k] for k in PLAIN_ONLY})
    if mode == 'online_meal_v2':
        opts['fkd.teacher'] = ','.join(f'checkpoint:{t}' for t in teachers)
    return {**opts, **overrides, 'training.seed': seed, 'logging.folder': str(folder)}


def flat(opts: dict) -> dict:
    return {f'{s}.{k}': v for s, values in opts.items() for k, v in values.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--demo', type=Path, default=Path('build/demo'))
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--epochs', type=int, default=16)
    parser.add_argument('--out', type=Path, default=None)
    args = parser.parse_args()
    runs = args.demo / 'runs'
    first, start = runs / 'teacher' / 'final_weights.pt', runs / 'plain' / 'final_weights.pt'
    for needed in (first, start):
        if not needed.exists():
            sys.exit(f"{needed} is missing: run `make demo` first (or give --demo)")
    started = time.perf_counter()
    work = args.demo / 'meal_v2'
    work.mkdir(exist_ok=True)
    train, val = fashion_mnist_betons(args.demo, 10_000, 5_000)  # the demo's own
    common = {'data.val_dataset': str(val), 'logging.progress': False}
    print("second teacher (small_resnet width 20, depth 2, the teacher recipe)", flush=True)
    second_summary = run_or_reuse(recipe('teacher', {
        **common, **SECOND_TEACHER, 'data.train_dataset': str(train),
        'logging.folder': str(work / 'runs' / 'teacher2')}))
    second = work / 'runs' / 'teacher2' / 'final_weights.pt'
    print("ensemble labels: 4 records per image", flush=True)
    labelled = label_as_demo(train, [first, second], work, 4,
                             name='fashion_mnist_train_ensemble.beton')
    base = flat(recipe('meal_v2', {**common, 'data.train_dataset': str(labelled),
                                   'model.weights': str(start),
                                   'training.epochs': args.epochs,
                                   'lr.step_length': 0.75 * args.epochs}))
    base['logging.progress'] = False
    plain = flat(recipe('plain'))
    results = {row: [] for row in {**ROWS, **PROBE_ROWS}}
    planned = [(seed, row, overrides) for seed in range(args.seeds)
               for row, overrides in ROWS.items()]
    for seed, row, overrides in planned + [(0, row, o) for row, o in PROBE_ROWS.items()]:
        mode = overrides.get('training.mode', 'meal_v2')
        if mode != 'meal_v2':
            overrides = {**overrides, 'data.train_dataset': str(train)}
        slug = '_'.join(f"{k.split('.')[-1]}-{v}" for k, v in overrides.items()
                        if k != 'data.train_dataset') or 'meal_v2'
        folder = work / 'runs' / f"{slug}_e{args.epochs}_seed{seed}"
        print(f"{row}, seed {seed} ...", flush=True)
        opts = row_options(overrides, base, plain, (first, second), seed, folder)
        summary = run_or_reuse(options(opts))
        summary['folder'] = str(folder)  # where it is now (a reused run may have moved)
        results[row].append(summary)
    start_top1 = load_start(results)
    report(table(args, results, start_top1, second_summary, labelled, started), args.out)


def load_start(results: dict):
    """The export's top-1 as a MEAL V2 run logged it before its first step (epoch 0)."""
    import json
    for summary in results[next(iter(ROWS))]:
        log = Path(summary['folder']) / 'log.jsonl'
        first = json.loads(log.read_text().splitlines()[0])
        if first['epoch'] == 0:
            return first['top1']
    return None


def table(args, results, start_top1, second_summary, labelled, started) -> str:
    import json
    labelling = json.loads((labelled.parent / f'{labelled.stem}.labelling.json').read_text()) \
        if (labelled.parent / f'{labelled.stem}.labelling.json').exists() else {}
    precision = precision_of([s for summaries in results.values() for s in summaries])
    start = 'n/a' if start_top1 is None else f'{start_top1:.2%}'
    lines = [f"MEAL V2 on the demo data: the demo's plain student (small_resnet width 16, depth "
             f"1; top-1 {start} at the start) continued {args.epochs} epochs, "
             f"{args.seeds} seeds; teachers: the demo's ResNet-20 and a small_resnet width 20 "
             f"depth 2 ({second_summary['top1']:.2%}); 10,000 training images at 32 px, top-1 on "
             f"5,000 validation images; {precision}. {machine()}; "
             f"{versions('torch', 'ffcv')}; {time.strftime('%Y-%m-%d')}, "
             f"{time.perf_counter() - started:.0f} s.", '',
             '| run | seeds | top-1 mean | min - max | training s (mean) | crops/s | '
             'discriminator right (last epoch) | dead discriminators |',
             '|---|---|---|---|---|---|---|---|']
    for row, summaries in results.items():
        top1 = [s['top1'] for s in summaries]
        right = [last_line(s).get('disc_right') for s in summaries]
        right = '' if None in right else f"{statistics.mean(right):.0%}"
        dead = '' if right == '' else f"{sum(map(was_dead, summaries))} of {len(summaries)}"
        seconds = statistics.mean(s['train_seconds'] for s in summaries)
        lines.append(f"| {row} | {len(top1)} | {statistics.mean(top1):.2%} | {min(top1):.2%} - "
                     f"{max(top1):.2%} | {seconds:.0f} | "
                     f"{statistics.mean(s['crops_per_s'] for s in summaries):,.0f} | {right} | "
                     f"{dead} |")
    if labelling:
        lines += ['', f"One-off ensemble labelling ({labelling['records']} records per image, "
                      f"{labelling.get('teachers', 2)} teachers): {labelling['seconds']:.0f} s."]
    return '\n'.join(lines)


def was_dead(summary: dict) -> bool:
    """Whether the run's discriminator never learnt: its BCE ln 2 (to 5 decimals) and its
    share right 50% in every epoch (both last ReLUs closed: no gradient reaches it)."""
    import json
    import math
    log = [json.loads(line) for line in
           (Path(summary['folder']) / 'log.jsonl').read_text().splitlines()]
    lines = [line for line in log if 'disc_loss' in line]
    return bool(lines) and all(abs(line['disc_loss'] - math.log(2)) < 1e-5 and
                               line['disc_right'] == 0.5 for line in lines)


def last_line(summary: dict) -> dict:
    import json
    log = (Path(summary['folder']) / 'log.jsonl').read_text().splitlines()
    return json.loads(log[-1])


if __name__ == '__main__':
    main()
