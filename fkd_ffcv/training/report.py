"""What a run tells its user at the end: the summary (summary.json and the last line), the
warning of a run that ended near chance, and after a Ctrl-C what was kept and the command
that continues."""
from __future__ import annotations

import os
import sys

import torch

from fkd_ffcv.training.options import PRECISE_BN_IMAGES


def run_summary(history: list, opts: dict, num_crops: int, wall_seconds: float, ctx,
                folder) -> dict:
    """The summary of a finished run from its log lines."""
    train_seconds = sum(line['seconds'] for line in history)
    last = history[-1]
    crops = sum(line['crops_per_s'] * line['seconds'] for line in history)
    return {'mode': opts['training']['mode'], 'arch': opts['model']['arch'],
            'epochs': opts['training']['epochs'], 'num_crops': num_crops,
            'top1': last.get('top1'), 'top5': last.get('top5'),
            **{key: last[key] for key in ('knn_top1', 'probe_top1') if key in last},
            'train_seconds': train_seconds, 'crops_per_s': crops / train_seconds,
            'wall_seconds': wall_seconds,
            'data_wait': sum(l['data_wait'] * l['seconds'] for l in history) / train_seconds,
            'device': str(ctx.device), 'precision': ctx.precision,
            'world_size': ctx.world_size, 'torch': torch.__version__, 'folder': str(folder)}


def print_summary(summary: dict) -> None:
    if 'checkpoint' in summary:
        scores = (f"top-1 {summary['top1']:.2%}  top-5 {summary['top5']:.2%}"
                  if 'top1' in summary else
                  f"k-NN top-1 {summary['knn_top1']:.2%}" + (
                      f"  linear-probe top-1 {summary['probe_top1']:.2%}"
                      if 'probe_top1' in summary else ''))
        print(f"{summary['checkpoint']}: {scores}  ({summary['val_images']} images)")
        return
    scores = (f"top-1 {summary['top1']:.2%}, top-5 {summary['top5']:.2%}"
              if summary['top1'] is not None else
              ', '.join(f"{name} {summary[key]:.2%}" for name, key in
                        (('k-NN top-1', 'knn_top1'), ('linear-probe top-1', 'probe_top1'))
                        if key in summary))
    print(f"{summary['mode']} {summary['arch']}: {summary['epochs']} epochs, {scores}, "
          f"{summary['train_seconds']:.1f} s training, {summary['crops_per_s']:,.0f} crops/s, "
          f"{summary['data_wait']:.0%} waiting for data; run in {summary['folder']}")


def warn_if_at_chance(history: list, num_classes: int, train_images: int,
                      precise_bn_ran: bool, is_main: bool) -> None:
    """One warning line (stderr, the main process) when the final validation is near chance
    while training accuracy is not: a short run on a small data set that did not generalise."""
    line = history[-1] if history else {}
    top1, train = line.get('top1'), line.get('train_top1')
    chance = 1 / num_classes
    if not is_main or top1 is None or train is None or top1 > 1.5 * chance or \
            train < 2 * chance:
        return
    precise_bn = ("" if precise_bn_ran else  # recomputing again adds nothing
                  f"--validation.precise_bn={PRECISE_BN_IMAGES} (BatchNorm statistics "
                  f"recomputed before validating), ")
    print(f"warning: validation top-1 {top1:.2%} is near chance ({chance:.2%} for "
          f"{num_classes} classes) while train_top1 reached {train:.2%}: the model did not "
          f"generalise from this small data set ({train_images} training images); try more "
          f"--training.epochs, a smaller --training.batch_size, {precise_bn}or a pretrained "
          f"--model.weights", file=sys.stderr)


def interrupted(trainer, argv) -> str:
    """What a Ctrl-C kept, and the command that continues."""
    import shlex
    program = argv[0] if argv[0].endswith('.py') else os.path.basename(argv[0])  # fkd-train
    command = ' '.join(shlex.quote(a) for a in (['python'] if program.endswith('.py') else [])
                       + [program, *argv[1:]])
    done = getattr(trainer, 'passes_done', 0)
    if done == 0:
        return (f"interrupted before the first pass ended: nothing was kept; start again "
                f"with: {command}")
    if '--resume' not in argv and '--training.resume=true' not in argv:
        command += ' --resume'
    if trainer.ctx.world_size > 1:
        command = (f"the same torchrun command ({trainer.ctx.world_size} processes) with "
                   f"--resume")
    return (f"interrupted: {trainer.folder.checkpoint} holds {done} of {trainer.passes} passes "
            f"(epoch {trainer.first_epoch[done]}); continue with: {command}")
