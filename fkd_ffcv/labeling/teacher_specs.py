"""The one place that turns a teacher spec into a model and its preprocessing (`load_member`).

A teacher is named by a spec string:

- `torchvision:<arch>:<checkpoint>`: a torchvision architecture and a state-dict checkpoint
  (plain, or under 'model'/'state_dict'; 'module.' and '_orig_mod.' prefixes are removed; the
  class count is read from the checkpoint). Without a checkpoint the weights are random, which
  only tests can want;
- `torchscript:<file>`: a TorchScript module;
- `checkpoint:<file>`: weights exported by the trainer (`final_weights.pt`), which record
  their architecture, class count and preprocessing;
- `timm:<name>[.<tag>]:<checkpoint>`: a timm model (timm_models.py) with weights from a local
  file (.pth/.pt/.safetensors; never downloaded), fed as timm's pretrained configuration for
  that name and tag says (input size, interpolation, mean, std); deprecated names such as
  `tf_efficientnet_l2_ns_475` or `gluon_senet154` are resolved to their current ones;
- `moco:<arch>:<checkpoint>`: a MoCo v2 checkpoint of a torchvision ResNet: the query encoder
  (`module.encoder_q.*`) with its projection head, loaded strictly; an embedding teacher
  (self-supervised FKD, records/embeddings.py);
- `<module>:<function>`: a Python entry point returning a model, or (model, preprocessing dict)
  with keys input_size, mean, std, interpolation. `fkd_ffcv.labeling.teachers:efficientnet_lite0`
  is one; names of modules that have moved (`fkd_ffcv.teachers:efficientnet_lite0`, as betons
  and recipes of earlier versions spell it) still load (fkd_ffcv/moved.py).

Any of them can be an embedding teacher (`embedding=`): its output is then the L2-normalised
embedding of each crop, either its projection (MoCo, an ssl-mode export) or its pooled
features (the input of a classifier), instead of class probabilities.

The kinds are builders in `TEACHERS`, by prefix; a new family registers one (spec -> model and
preprocessing) and needs no edit elsewhere.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Tuple

import torch

from fkd_ffcv.defaults import IMAGENET_CROP, IMAGENET_MEAN, IMAGENET_STD, RESIZE_FILTERS
from fkd_ffcv.files import load_data
from fkd_ffcv.models.heads import ProjectionHead
from fkd_ffcv.models.weights import plain_state_dict
from fkd_ffcv.registry import Registry, call_entry_point


@dataclass(frozen=True)
class Preprocess:
    """How a teacher wants its input: side in pixels, resize interpolation, normalisation of
    RGB values scaled to [0, 1]; whether it takes only that side (a timm ViT's
    fixed_input_size), and the centre-crop fraction it was evaluated with."""
    input_size: int = 224
    interpolation: str = 'antialias'  # PIL's bilinear: what torchvision's weights were fed
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    fixed_input_size: bool = False
    crop_pct: float = IMAGENET_CROP
    model: str = ''  # what the spec resolved to, where that can change (a timm name and tag)

    def __post_init__(self):
        if self.interpolation not in RESIZE_FILTERS:  # teacher crops: the loaders' filters
            raise ValueError(f"interpolation must be one of {list(RESIZE_FILTERS)}, not "
                             f"{self.interpolation!r}")
        if self.input_size < 1 or len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"invalid preprocessing {self}")


def _options(preprocess: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in dict(preprocess).items()}


def _entry_point(spec: str):
    """`<module>:<function>`: the function returns a model, or (model, preprocessing dict)."""
    model, options = call_entry_point(spec, 'teacher', TEACHERS.describe())
    return model, Preprocess(**_options(options))


# Teacher families by spec prefix; a spec that matches none is an entry point.
TEACHERS = Registry('teacher kind', default=_entry_point)


def _existing(path: str, what: str = 'checkpoint') -> str:
    """`path`, the file a spec names, refused if it is not there."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such {what}")
    return path


@TEACHERS.register('torchvision:', prefix=True)
def _torchvision_model(spec: str):
    """`torchvision:<arch>[:<checkpoint>]`; the class count is read from the checkpoint."""
    import torchvision
    arch, _, checkpoint = spec[len('torchvision:'):].partition(':')
    if arch not in torchvision.models.list_models():
        raise ValueError(f"unknown torchvision architecture {arch!r}")
    build = torchvision.models.get_model
    if not checkpoint:
        return build(arch, weights=None), Preprocess()
    state = plain_state_dict(load_data(_existing(checkpoint)))
    reference = build(arch, weights=None).state_dict()
    # The classifier is the last weight whose shape differs from the 1000-class default.
    mismatched = [name for name, value in state.items()
                  if name in reference and value.shape != reference[name].shape]
    model = build(arch, weights=None,
                  num_classes=state[mismatched[-1]].shape[0]) if mismatched else \
        build(arch, weights=None)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{checkpoint} does not fit torchvision {arch}: {e}") from None
    return model, Preprocess()


@TEACHERS.register('timm:', prefix=True)
def _timm_model(spec: str):
    """`timm:<name>[.<tag>]:<checkpoint>`; the class count is read from the checkpoint, the
    preprocessing from timm's pretrained configuration of that name and tag."""
    from fkd_ffcv.models.timm_models import teacher
    name, _, path = spec[len('timm:'):].partition(':')
    if not path:
        raise ValueError(f"teacher {spec!r}: give its weights, timm:{name}:<checkpoint file> "
                         f"(nothing is downloaded)")
    model, options = teacher(name, _existing(path))
    return model, Preprocess(**options)


@TEACHERS.register('checkpoint:', prefix=True)
def _exported_model(spec: str):
    """`checkpoint:<file>`: a trainer's final_weights.pt, with its own preprocessing."""
    from fkd_ffcv.models.exports import load_weights
    model, preprocess, _ = load_weights(_existing(spec[len('checkpoint:'):]))
    return model, Preprocess(**_options(preprocess))


@TEACHERS.register('torchscript:', prefix=True)
def _torchscript_model(spec: str):
    """`torchscript:<file>`: a TorchScript module."""
    path = _existing(spec[len('torchscript:'):], 'TorchScript file')
    return torch.jit.load(path, map_location='cpu'), Preprocess()


@TEACHERS.register('moco:', prefix=True)
def _moco_model(spec: str):
    """`moco:<arch>:<checkpoint>`: MoCo v2's query encoder, a torchvision ResNet whose `fc` is
    the projection head (Linear, ReLU, Linear; models.heads.ProjectionHead), output normalised.
    Only `module.encoder_q.*` is read (the key encoder and the queue are training state), and
    it must fit exactly: the first missing or unexpected keys are named."""
    import torchvision
    arch, _, checkpoint = spec[len('moco:'):].partition(':')
    if arch not in torchvision.models.list_models(torchvision.models) or not checkpoint:
        raise ValueError(f"{spec}: give moco:<torchvision arch>:<checkpoint file> (arch "
                         f"{arch!r}, file {checkpoint!r})")
    saved = load_data(_existing(checkpoint))
    state = saved.get('state_dict', saved) if isinstance(saved, dict) else None
    prefix = 'module.encoder_q.'
    if not isinstance(state, dict) or not any(k.startswith(prefix) for k in state):
        raise ValueError(f"{checkpoint} is not a MoCo checkpoint: no {prefix}* keys in its "
                         f"state_dict")
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    model = torchvision.models.get_model(arch, weights=None)
    if 'fc.0.weight' in state and 'fc.2.weight' in state:
        hidden, width = state['fc.0.weight'].shape
        model.fc = ProjectionHead(width, hidden, state['fc.2.weight'].shape[0])
    elif 'fc.weight' in state:
        raise ValueError(f"{checkpoint}: a MoCo v1 head (one Linear layer, fc.weight); only MoCo "
                         f"v2's MLP head (fc.0, fc.2) is read")
    own = model.state_dict()
    missing, extra = [k for k in own if k not in state], [k for k in state if k not in own]
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or extra or shapes:
        raise ValueError(f"{checkpoint} does not fit a MoCo {arch}: missing {missing[:4]}, "
                         f"unexpected {extra[:4]}, other shapes {shapes[:4]} ({len(missing)}, "
                         f"{len(extra)} and {len(shapes)} in all, under {prefix})")
    model.load_state_dict(state)
    return model, Preprocess(interpolation='antialias')  # MoCo's crops: torchvision on PIL


def load_member(spec: str) -> Tuple[torch.nn.Module, Preprocess]:
    """One teacher from its spec string (module docstring), by the builder TEACHERS holds
    for its prefix."""
    model, preprocess = TEACHERS[spec](spec)
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"teacher {spec!r} gave a {type(model).__name__}, not a torch module")
    return model.eval(), preprocess
