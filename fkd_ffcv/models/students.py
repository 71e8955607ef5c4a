"""The student registry: `build_model(arch, num_classes, ...)` is the one constructor the
trainer calls; it takes the builder registered in `MODELS` under the name (or a 'family:'
prefix of it), so a new family registers its builder and needs no edit elsewhere. Families:
torchvision's ResNets and a small ResNet for 32 px inputs (resnets.py), any timm model
(`timm:<name>`, timm_models.py), SReT (sret.py), any torchvision classifier, and pretrained
`<module>:<function>` entry points. A builder may say, as attributes, that it loads
--model.weights itself (`loads_weights`), can check a name early (`check`), takes no BlurPool
(`blurpool = False`) or changes its stem with --model.small_input (`small_input`).
"""
from __future__ import annotations

import sys

import torchvision
from torch import nn

from fkd_ffcv.defaults import IMAGENET_MEAN, IMAGENET_STD
from fkd_ffcv.files import load_data
from fkd_ffcv.models.heads import with_classes
from fkd_ffcv.models.resnets import add_blurpool, small_resnet, torchvision_resnet
from fkd_ffcv.models.weights import is_ssl_export, start_from, unwrap
from fkd_ffcv.registry import Registry, call_entry_point, find_entry_point

MODELS = Registry('architecture')  # name (or 'family:' prefix) -> builder, see build_model
for _arch in ('resnet18', 'resnet34', 'resnet50', 'resnet101'):
    MODELS.register(_arch)(torchvision_resnet)
MODELS.register('small_resnet')(small_resnet)


@MODELS.register('timm:', prefix=True)
def _timm(arch, num_classes, **options):
    """`timm:<name>`: any timm model (timm_models.student); it loads --model.weights itself,
    through timm's loader, which adapts position and patch embeddings to the model's sizes."""
    from fkd_ffcv.models.timm_models import student
    return student(arch, num_classes, **options)


def _check_timm(arch):
    from fkd_ffcv.models.timm_models import resolve
    resolve(arch[len('timm:'):])


# It loads --model.weights itself, can check a name early, and is built as timm builds it (no
# BlurPool), so that its export loads into timm unchanged.
_timm.loads_weights, _timm.check, _timm.blurpool = True, _check_timm, False


def _sret(arch, num_classes, *, image_size, small_input, drop_path, **_):
    """SReT-T, -LT, -S (sret.py); `small_input` for ~32 px inputs."""
    from fkd_ffcv.models.sret import SReT
    return SReT(arch, num_classes, image_size, small_input, drop_path)


# its strided convolutions are its own design, kept as they are; small_input changes its stem
_sret.blurpool, _sret.small_input = False, True
for _arch in ('sret_t', 'sret_lt', 'sret_s'):
    MODELS.register(_arch)(_sret)


@MODELS.register('torchvision:', prefix=True)
def _torchvision_any(arch, num_classes, **_):
    """`torchvision:<name>`: any torchvision classifier, freshly initialised."""
    name = arch[len('torchvision:'):]
    if name not in torchvision.models.list_models(torchvision.models):
        raise ValueError(f"unknown torchvision architecture {name!r}")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def _entry_point(arch, num_classes, **_):
    """`<module>:<function>`: a pretrained model to fine-tune, with its weights. Its classifier
    is replaced when it predicts another class count; its own input normalisation (mean, std)
    is kept with it."""
    model, preprocess = call_entry_point(arch, 'architecture', MODELS.describe())
    if {'mean', 'std'} <= set(preprocess):
        model.input_normalisation = (tuple(preprocess['mean']), tuple(preprocess['std']))
    return with_classes(model, num_classes, arch)


MODELS.default = _entry_point


def check_arch(arch: str) -> None:
    """Raise ValueError naming the known architectures unless `arch` is one, a
    'torchvision:<name>', or an importable '<module>:<function>' (not called here)."""
    if MODELS.registered(arch):
        check = getattr(MODELS[arch], 'check', None)  # a family that can tell early (timm)
        if check:
            check(arch)
        return
    if find_entry_point(arch) is None:
        raise ValueError(f"unknown architecture {arch!r}; known: {MODELS.describe()}, or "
                         f"<module>:<function> returning a model")


def input_normalisation(model: nn.Module) -> tuple:
    """(mean, std) of RGB in [0, 1] that the model expects: its own where its builder knew
    it (a pretrained entry point), else ImageNet's."""
    return getattr(unwrap(model), 'input_normalisation', (IMAGENET_MEAN, IMAGENET_STD))


def build_model(arch: str, num_classes: int, *, small_input: bool = False, width: int = 16,
                depth: int = 2, patch_size: int = 0, image_size: int = 0,
                drop_path: float = 0.0, blurpool: bool = False, weights: str = '',
                new_head: bool = True) -> nn.Module:
    """A student from the builder MODELS holds for `arch`: freshly initialised, or started
    from `weights` (see start_from; an entry point may bring its own, and a builder marked
    `loads_weights` loads them itself); without `new_head`, weights of another class count are
    refused rather than given a new classifier. `small_input` gives a torchvision ResNet a
    CIFAR stem (3x3 stride-1 convolution, no max-pool) and an SReT a stem of one stride for
    inputs of about 32 px; `width` and `depth` size `small_resnet`; `image_size`,
    `patch_size` (0: the model's own) and `drop_path` go to timm models, `image_size` and
    `drop_path` to SReT. A builder takes (arch, num_classes, **these options) and uses the ones
    it needs."""
    build = MODELS[arch]
    if weights and getattr(build, 'loads_weights', False):
        if is_ssl_export(load_data(weights)):
            raise ValueError(f"{weights} is an ssl export; {arch} loads weights through its own "
                             f"loader, which cannot take a projection head's backbone")
    model = build(arch, num_classes, small_input=small_input, width=width, depth=depth,
                  patch_size=patch_size, image_size=image_size, drop_path=drop_path,
                  weights=weights, new_head=new_head)
    if weights and not getattr(build, 'loads_weights', False):
        fresh = start_from(model, weights, new_head)  # plain names: before any BlurPool wrapper
        if fresh:
            print(f"note: started from {weights}; new (shapes differ): {', '.join(fresh)}",
                  file=sys.stderr)
    blurpool = blurpool and takes_blurpool(arch)
    if blurpool and not MODELS.registered(arch):
        print(f"note: --model.blurpool adds low-pass filters that {arch}'s weights were not "
              f"trained with (--model.blurpool=false keeps their function)", file=sys.stderr)
    return add_blurpool(model) if blurpool else model


def takes_blurpool(arch: str) -> bool:
    """Whether --model.blurpool applies to `arch` (not to a family marked `blurpool = False`)."""
    return getattr(MODELS[arch], 'blurpool', True)
