"""The weight average (training.ema_epochs): a copy of the student whose weights and
BatchNorm statistics follow the student's with a per-step decay (schedules.ema_decay); it is
what is validated and exported when the run keeps one."""
from __future__ import annotations

import copy

import torch


def weight_average(model: torch.nn.Module) -> torch.nn.Module:
    """The average as it starts: a frozen copy of `model`, in eval mode."""
    return copy.deepcopy(model).eval().requires_grad_(False)


@torch.no_grad()
def update_average(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """One step of the average towards `model`'s weights and floating-point buffers (the
    BatchNorm statistics are averaged too); integer buffers are copied."""
    torch._foreach_lerp_(list(average.parameters()), list(model.parameters()), 1 - decay)
    for mine, theirs in zip(average.buffers(), model.buffers()):
        if mine.is_floating_point():
            mine.lerp_(theirs, 1 - decay)
        else:
            mine.copy_(theirs)
