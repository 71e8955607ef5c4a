"""The optimiser and its parameter groups: SGD or AdamW, no weight decay on 1-d parameters
(and a timm model's position and class tokens); with model.head_epochs the classifier's
parameters (an ssl student's whole projection head) get groups of their own, marked 'head',
since only they learn in those epochs; a mode's own trained modules (a discriminator) come
after, in the groups the mode gives."""
from __future__ import annotations

import torch

from fkd_ffcv.errors import TrainingError
from fkd_ffcv.models.heads import classifier_name
from fkd_ffcv.models.heads import projection_of


def create_optimizer(model: torch.nn.Module, opts: dict, mode_groups: list):
    """The run's optimiser over `model`'s parameters and the mode's groups, at rate 0 (the
    trainer sets each group's rate every step)."""
    t = opts['training']
    head = set()
    if opts['model']['head_epochs'] > 0:
        name = classifier_name(model)
        if name is None:
            raise TrainingError("--model.head_epochs: the model has no Linear classifier to "
                                "train on its own")
        module = projection_of(model) or model.get_submodule(name)
        head = {id(p) for p in module.parameters()}
    groups = {}
    own = getattr(model, 'no_weight_decay', set)()
    for name, p in model.named_parameters():
        flat = p.ndim <= 1 or name in own
        groups.setdefault((id(p) in head, flat), []).append(p)
    groups = [{'params': params, 'weight_decay': 0.0 if flat else t['weight_decay'],
               'head': is_head} for (is_head, flat), params in sorted(groups.items())]
    groups += mode_groups
    if t['optimizer'] == 'sgd':
        return torch.optim.SGD(groups, lr=0.0, momentum=t['momentum'])
    return torch.optim.AdamW(groups, lr=0.0)
