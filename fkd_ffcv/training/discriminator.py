"""MEAL V2's discriminator: a small network that tells the student's class distribution from
the teacher ensemble's, trained in the same step as the student.

By default it is MEAL V2's (models/discriminator.py, loss.py and train.py there): the C-way
vector is a 1 x 1 map through three 1 x 1 convolutions C -> C/8 -> C/64 -> 2 (1000 -> 125 -> 15
-> 2), each followed by a ReLU, the last one too (so the two "logits" are never negative),
PyTorch's default initialisation, and BCE-with-logits with the student's rows labelled [1, 0]
and the teacher's [0, 1]; the student and the discriminator minimise that same BCE in one
backward pass (`gradient='shared'`). One change that no option undoes: the widths are at least
`MIN_WIDTH`, so that a data set of 10 classes gets a discriminator that can learn (10 // 64 is 0).

The project's variants, each an option (docs/training.md has what each changed, measured):
- `open_start` (meal.disc_open_start): the last layer's biases start at 1. With PyTorch's
  initialisation alone about a quarter of these discriminators start dead (both last ReLUs
  closed for every input: BCE fixed at ln 2, no gradient, ever); measured over 200 seeds for
  10 and for 1000 classes.
- `last_relu=False` (meal.disc_last_relu): no ReLU after the last layer. While it cannot tell
  the two apart, BCE's gradient on a score z >= 0 is sigmoid(z) - target, which averages to
  sigmoid(z) - 1/2 >= 0 over the two labels, so every score is pushed down until its ReLU closes
  for good; without that ReLU the scores are true logits.
- `gradient='reversed'` (meal.disc_gradient): the student's gradient through the term is
  negated (a gradient reversal layer), so it learns to fool the discriminator, as in a GAN,
  still in one backward pass. With 'shared' the student is pushed to look *more* like a
  student; MEAL V2's author calls the term a regulariser that keeps it from copying the ensemble.

What the discriminator is fed is the mode's: the student's raw logits against the stored
probabilities in Fast MEAL V2 (as MEAL V2's FKD variant, FKD_train.py), raw logits on both sides
in online MEAL V2 (as train.py); `meal.disc_softmax` (the project's) feeds softmax outputs
against probabilities instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fkd_ffcv.defaults import DISCRIMINATOR_GRADIENTS as GRADIENTS

MIN_WIDTH = 8


class Discriminator(nn.Module):
    """(N, C) class vectors -> (N, 2) scores (student, teacher); non-negative with
    `last_relu` (MEAL V2's)."""

    def __init__(self, num_classes: int, last_relu: bool = True, open_start: bool = False):
        super().__init__()
        wide = max(num_classes // 8, MIN_WIDTH)
        narrow = max(wide // 8, MIN_WIDTH)
        self.layers = nn.Sequential(nn.Conv2d(num_classes, wide, 1), nn.ReLU(),
                                    nn.Conv2d(wide, narrow, 1), nn.ReLU(),
                                    nn.Conv2d(narrow, 2, 1), *([nn.ReLU()] if last_relu else []))
        if open_start:
            nn.init.constant_(self.layers[4].bias, 1.0)  # both scores start open (docstring)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x[:, :, None, None]).flatten(1)


class _Reverse(torch.autograd.Function):
    """Identity forward, negated gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def discriminator_loss(discriminator: nn.Module, student: torch.Tensor, teacher: torch.Tensor,
                       gradient: str) -> tuple:
    """(BCE-with-logits of the discriminator on the student's rows, labelled [1, 0], and the
    teacher's, labelled [0, 1]; the share of rows it tells right). `student` carries the
    student's gradient; `teacher` is a target and gets none."""
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {', '.join(GRADIENTS)}, not {gradient!r}")
    if gradient == 'reversed':
        student = _Reverse.apply(student)
    x = torch.cat([student.float(), teacher.detach().float()])
    n = student.shape[0]
    target = torch.zeros(2 * n, 2, device=x.device)
    target[:n, 0] = 1
    target[n:, 1] = 1
    scores = discriminator(x)
    right = (scores.argmax(1) == target.argmax(1)).float().mean()
    return F.binary_cross_entropy_with_logits(scores, target), right.detach()
