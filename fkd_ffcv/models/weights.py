"""State dicts: read from a checkpoint of any common layout, loaded into a model whose head
may differ (`start_from`), and exported under the plain architecture's names (no DDP,
torch.compile or BlurPool wrappers), so that a torchvision architecture's export loads into
the plain torchvision model. The file that keeps an export with how to rebuild it: exports.py.
"""
from __future__ import annotations

import torch
from torch import nn

from fkd_ffcv.files import load_data
from fkd_ffcv.models.heads import classifier_name
from fkd_ffcv.models.resnets import BlurPoolConv2d


def plain_state_dict(checkpoint) -> dict:
    """The state dict in a checkpoint (plain, or under 'model' / 'state_dict' /
    'model_state_dict'), without DDP's 'module.' and torch.compile's '_orig_mod.' prefixes."""
    if isinstance(checkpoint, dict):
        for key in ('model', 'state_dict', 'model_state_dict'):
            if key in checkpoint and isinstance(checkpoint[key], dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not all(torch.is_tensor(v)
                                                   for v in checkpoint.values()):
        raise ValueError("the checkpoint holds no state dict of tensors")
    cleaned = {}
    for name, value in checkpoint.items():
        for prefix in ('module.', '_orig_mod.'):
            if name.startswith(prefix):
                name = name[len(prefix):]
        cleaned[name] = value
    return cleaned


def is_ssl_export(saved) -> bool:
    """Whether a loaded file is an ssl-mode export (save_weights with a projection head)."""
    return isinstance(saved, dict) and 'arch' in saved and isinstance(saved.get('embedding'),
                                                                      dict)


def start_from(model: nn.Module, path, new_head: bool = True) -> list:
    """Load the weights in `path` (a trainer's final_weights.pt, a torchvision or other
    state-dict checkpoint) into `model`; the classifier's tensors keep their fresh values when
    their shape differs (another class count) and `new_head` allows it. Returns their names.
    Names missing on either side, or other tensors of another shape, are refused, the first
    few named. An ssl export's projection head counts as a classifier of another shape: its
    backbone loads, the model's head starts new."""
    saved = load_data(path)
    state = plain_state_dict(saved)
    own = model.state_dict()
    head = classifier_name(model) if new_head else None
    new = []  # the model's head tensors, where the export's is a projection head
    if is_ssl_export(saved) and head is not None:
        state = {k: v for k, v in state.items() if not k.startswith(head + '.')}
        new = [k for k in own if k.startswith(head + '.')]
    missing = [k for k in own if k not in state and k not in new]
    extra = [k for k in state if k not in own]
    if missing or extra:
        raise ValueError(f"{path} does not fit the model: missing {missing[:4]}, unexpected "
                         f"{extra[:4]} ({len(missing)} and {len(extra)} in all)")
    fresh = [k for k, v in state.items() if v.shape != own[k].shape]
    other = [k for k in fresh if head is None or not k.startswith(head + '.')]
    if other:
        raise ValueError(f"{path} does not fit the model: {len(other)} tensor(s) of other shapes "
                         f"besides the classifier, e.g. {other[0]} {tuple(state[other[0]].shape)} "
                         f"against {tuple(own[other[0]].shape)}")
    model.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=False)
    return fresh + new


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel and torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, '_orig_mod'):
            model = model._orig_mod
        else:
            return model


def export_state_dict(model: nn.Module) -> dict:
    """Weights on the CPU under the plain architecture's names: no DDP, compile or BlurPool
    wrappers."""
    model = unwrap(model)
    wrapped = [name for name, m in model.named_modules() if isinstance(m, BlurPoolConv2d)]
    state = {}
    for key, value in model.state_dict().items():
        for name in wrapped:
            if key.startswith(name + '.conv.'):
                key = name + '.' + key[len(name) + len('.conv.'):]
                break
        state[key] = value.detach().to('cpu', copy=True)  # loads where there is no GPU
    return state
