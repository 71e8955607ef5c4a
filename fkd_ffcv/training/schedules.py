"""Schedules written in epochs, evaluated per step: learning rate and progressive resizing.

An epoch is as many crops as the training set has images (docs/units.md), so with K
crops per image one pass over the images is K epochs. The trainer calls `lr_factor` with the
fractional epoch of every step and `resolution` with the epoch at the start of every pass.
"""
from __future__ import annotations

import math

import numpy as np

LR_SCHEDULES = ('cyclic', 'step', 'cosine')


def step_epochs(text: str) -> tuple:
    """'100,180' -> (100.0, 180.0): the epochs of a step schedule's decays, increasing and
    positive ('' -> (): every step_length epochs instead)."""
    if not text.strip():
        return ()
    try:
        epochs = tuple(float(part) for part in text.split(','))
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of epochs") from None
    if any(e <= 0 for e in epochs) or any(b <= a for a, b in zip(epochs, epochs[1:])):
        raise ValueError(f"{text!r}: the epochs must be positive and increasing")
    return epochs


def lr_factor(epoch: float, *, schedule: str, epochs: float, warmup_epochs: float = 0.0,
              peak_epoch: float = 2.0, step_length: float = 30.0, step_ratio: float = 0.1,
              decays: tuple = (), end_factor: float = 0.0) -> float:
    """Multiplier of the peak learning rate at `epoch` (fractional).

    - cyclic (ffcv-imagenet): linear from 0 at epoch 0 to 1 at `peak_epoch`, then linear to
      `end_factor` at the last epoch;
    - step: times `step_ratio` every `step_length` epochs, or at each epoch of `decays`
      (MEAL V2's FKD recipe: 100 and 180);
    - cosine: half a cosine from 1 to `end_factor`.
    step and cosine start with a linear warm-up from 0 over `warmup_epochs`."""
    if schedule == 'cyclic':
        return float(np.interp(epoch, [0, peak_epoch, epochs], [0, 1, end_factor]))
    if epoch < warmup_epochs:
        return epoch / warmup_epochs
    if schedule == 'step':
        steps = sum(epoch >= e for e in decays) if decays else math.floor(epoch / step_length)
        return step_ratio ** steps
    if schedule == 'cosine':
        t = min(1.0, (epoch - warmup_epochs) / max(epochs - warmup_epochs, 1e-12))
        return end_factor + (1 - end_factor) * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"unknown lr schedule {schedule!r}; choose from {', '.join(LR_SCHEDULES)}")


def resolution(epoch: float, *, min_res: int, max_res: int, start_ramp: float,
               end_ramp: float, round_to: int = 32) -> int:
    """ffcv-imagenet's progressive resizing: `min_res` until `start_ramp`, linear to `max_res`
    at `end_ramp`, rounded to a multiple of `round_to`."""
    if end_ramp <= start_ramp:
        return max_res if epoch >= end_ramp else min_res
    side = float(np.interp(epoch, [start_ramp, end_ramp], [min_res, max_res]))
    return max(round_to, int(round(side / round_to)) * round_to)


def ema_decay(ema_epochs: float, steps_per_epoch: float) -> float:
    """Per-step decay of a weight average whose time constant is `ema_epochs` epochs."""
    return math.exp(-1.0 / (ema_epochs * steps_per_epoch))
