"""A network's head, and the one function that replaces it (`replace_head`).

The head is a model's projection head (`ProjectionHead`, a self-supervised student's or a MoCo
teacher's) where it has one, else its classifier: its last Linear layer, as torchvision, timm
and this project's models end in one. Replacing it gives a model another class count
(`with_classes`), a projection head (`with_projection`), its pooled features (`feature_model`)
or a classifier computed in fp32 under autocast (labeling/teachers.py).
"""
from __future__ import annotations

import copy
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from fkd_ffcv.defaults import EMBEDDING_KINDS


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


def classifier_name(model: nn.Module) -> Optional[str]:
    """The name of the model's classifier: its last Linear layer, or None (a TorchScript
    module's layers cannot be replaced, so it has none)."""
    if isinstance(model, torch.jit.ScriptModule):
        return None
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def projection_of(model: nn.Module) -> Optional[ProjectionHead]:
    """The model's ProjectionHead, or None."""
    heads = [m for m in model.modules() if isinstance(m, ProjectionHead)]
    return heads[-1] if heads else None


def replace_head(model: nn.Module, make: Callable[[nn.Module], nn.Module],
                 projection: bool = True) -> Optional[nn.Module]:
    """Put `make(head)` in the place of the model's head, in place: its ProjectionHead where
    `projection` and it has one, else its classifier. Returns the head replaced, or None
    where the model has none (and is left as it is)."""
    heads = [name for name, m in model.named_modules() if isinstance(m, ProjectionHead)]
    name = heads[-1] if heads and projection else classifier_name(model)
    if name is None:
        return None
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name)
    head = getattr(parent, child)
    setattr(parent, child, make(head))
    return head


def with_classes(model: nn.Module, num_classes: int, arch: str = 'the model') -> nn.Module:
    """`model` predicting `num_classes`: its classifier replaced by a new one (freshly
    initialised) when it predicts another count."""
    def new(head: nn.Linear) -> nn.Module:
        if head.out_features == num_classes:
            return head
        return nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
    if replace_head(model, new, projection=False) is None:
        raise ValueError(f"{arch}: no Linear classifier to give {num_classes} classes")
    return model


def with_projection(model: nn.Module, dim: int, hidden: int = 0) -> nn.Module:
    """`model` with its classifier replaced by a freshly initialised ProjectionHead to `dim`
    dimensions (`hidden` 0: as wide as the classifier's input, as MoCo's head is)."""
    refused = "the model has no Linear classifier to replace by a projection head"

    def new(head: nn.Module) -> nn.Module:
        if not isinstance(head, nn.Linear):  # it has a projection head already
            raise ValueError(refused)
        return ProjectionHead(head.in_features, hidden or head.in_features, dim)
    if replace_head(model, new) is None:
        raise ValueError(refused)
    return model


def feature_model(model: nn.Module, who: str = 'the model') -> nn.Module:
    """A copy of `model` that outputs its pooled features: the input of its projection head,
    or of its classifier. Raises ValueError naming `who` when it has neither (a TorchScript
    module, a model without a Linear head): it yields no features to embed."""
    if isinstance(model, torch.jit.ScriptModule):
        raise ValueError(f"{who} yields no embedding: a TorchScript module cannot be cut "
                         f"before its head (use its output, embedding 'projection', if that "
                         f"is an embedding)")
    features = copy.deepcopy(model)
    if replace_head(features, lambda head: nn.Identity()) is None:
        raise ValueError(f"{who} yields no embedding: it has neither a projection head nor a "
                         f"Linear classifier whose input are its features")
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
