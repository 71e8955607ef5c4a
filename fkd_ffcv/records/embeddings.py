"""Teacher embeddings for self-supervised FKD (S2-BNN's distillation-only recipe): the
projection head and the stored form of an embedding (the loss: training/losses.py).

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

import copy

import torch
import torch.nn.functional as F
from torch import nn

from fkd_ffcv.defaults import EMBEDDING_KINDS

INT8_SCALE = 127


class ProjectionHead(nn.Sequential):
    """MoCo v2's MLP head, Linear(C, H) -> ReLU -> Linear(H, D), with an L2-normalised output.
    Its layers are named 0 and 2 as MoCo's `fc` Sequential names them, so a MoCo checkpoint's
    `fc.0.*` / `fc.2.*` tensors load into it unchanged."""

    def __init__(self, in_features: int, hidden: int, dim: int):
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, dim))

    @property
    def dim(self) -> int:
        return self[2].out_features

    @property
    def hidden(self) -> int:
        return self[0].out_features

    def forward(self, x):
        return F.normalize(super().forward(x).float(), dim=-1)


def _head_slot(model: nn.Module):
    """(parent module, attribute name) of the model's head: a ProjectionHead if it has one,
    else its classifier (the last Linear layer); None if neither."""
    from fkd_ffcv.models.students import classifier_name
    heads = [name for name, m in model.named_modules() if isinstance(m, ProjectionHead)]
    name = heads[-1] if heads else classifier_name(model)
    if name is None:
        return None
    parent, _, child = name.rpartition('.')
    return model.get_submodule(parent), child


def with_projection(model: nn.Module, dim: int, hidden: int = 0) -> nn.Module:
    """`model` with its classifier replaced by a freshly initialised ProjectionHead to `dim`
    dimensions (`hidden` 0: as wide as the classifier's input, as MoCo's head is)."""
    slot = _head_slot(model)
    if slot is None or not isinstance(getattr(*slot), nn.Linear):
        raise ValueError("the model has no Linear classifier to replace by a projection head")
    width = getattr(*slot).in_features
    setattr(*slot, ProjectionHead(width, hidden or width, dim))
    return model


def projection_of(model: nn.Module):
    """The model's ProjectionHead, or None."""
    heads = [m for m in model.modules() if isinstance(m, ProjectionHead)]
    return heads[-1] if heads else None


def feature_model(model: nn.Module, who: str = 'the model') -> nn.Module:
    """A copy of `model` that outputs its pooled features: the input of its projection head,
    or of its classifier. Raises ValueError naming `who` when it has neither (a TorchScript
    module, a model without a Linear head): it yields no features to embed."""
    import torch.jit
    if isinstance(model, torch.jit.ScriptModule):
        raise ValueError(f"{who} yields no embedding: a TorchScript module cannot be cut "
                         f"before its head (use its output, embedding 'projection', if that "
                         f"is an embedding)")
    features = copy.deepcopy(model)
    slot = _head_slot(features)
    if slot is None:
        raise ValueError(f"{who} yields no embedding: it has neither a projection head nor a "
                         f"Linear classifier whose input are its features")
    setattr(*slot, nn.Identity())
    return features


def embedding_model(model: nn.Module, kind: str, who: str) -> nn.Module:
    """The module whose output is the embedding of `kind`: 'projection' the model itself (its
    output is an embedding: a MoCo checkpoint, an ssl export, a TorchScript or entry point
    that returns one), 'features' its pooled features (feature_model), 'auto' the projection
    where the model has a ProjectionHead, else the features."""
    if kind not in EMBEDDING_KINDS:
        raise ValueError(f"embedding must be one of {', '.join(EMBEDDING_KINDS)}, not {kind!r}")
    if kind == 'auto':
        kind = 'projection' if projection_of(model) is not None else 'features'
    return model if kind == 'projection' else feature_model(model, who)


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
