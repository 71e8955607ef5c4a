"""Teacher embeddings for self-supervised FKD (S2-BNN's distillation-only recipe): the
stored form of an embedding (the projection head: models/heads.py; the loss: training/losses.py).

A self-supervised teacher (MoCo v2: ResNet-50 -> Linear(2048, 2048) -> ReLU -> Linear(2048,
128), L2-normalised) gives each crop a unit vector t. The student (backbone + the same kind of
head) gives s, and learns the soft cross-entropy between softmax(t / tau) and
log_softmax(s / tau), tau = 0.2 on both: the D dimensions are treated as logits. No labels.

Stored form (docs/results.md "What a record stores" measured the alternatives): the direction
of t as D int8 values, scaled so that the largest component is +-127. The norm is not stored,
since every target is normalised before use; the scale is not either, for the same reason. A
D-dimensional record takes 9 + D bytes with its box and flags byte; the recovered direction's
cosine with the exact one is 0.99998-0.99999 on average and 0.99992 at worst (measured on 64-d
and 128-d embeddings; wide, heavy-tailed pooled features keep less, since their small
components round to 0). tau is applied at training time, not baked in.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

INT8_SCALE = 127


def encode(embeddings: torch.Tensor) -> torch.Tensor:
    """(M, D) finite float, no row all zero -> (M, D) int8: each row's direction, its largest
    component at +-127 (labelling names the samples of rows that break the rule)."""
    x = embeddings.double()
    peak = x.abs().amax(-1, keepdim=True)
    if not torch.isfinite(x).all() or (peak == 0).any():
        raise ValueError("an embedding is all zero, NaN or Inf: it has no direction to store")
    return torch.round(x / peak * INT8_SCALE).to(torch.int8)


def decode(stored) -> torch.Tensor:
    """int8 (..., D) -> float32 unit vectors (..., D)."""
    return F.normalize(torch.as_tensor(stored).float(), dim=-1)
