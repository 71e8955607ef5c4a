"""Student models: torchvision ResNets, a small ResNet family for 32 px inputs, any timm model
(`timm:<name>`, timm_models.py), SReT (sret.py), pretrained entry points; plus BlurPool and the
export of plain weights.

`build_model(arch, num_classes, ...)` is the one constructor the trainer calls; it takes the
builder registered in `MODELS` under the name (or a 'family:' prefix of it), so a new family
registers its builder and needs no edit elsewhere. Exported
weights (`export_state_dict`) carry no BlurPool, DDP or torch.compile names, so a torchvision
architecture's export loads into the plain torchvision model. `save_weights` / `load_weights`
keep them in a file that also records how to rebuild and feed the model (a trainer's
`final_weights.pt`, the `checkpoint:<file>` teacher spec).
"""
from __future__ import annotations

import importlib
import sys

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from fkd_ffcv.registry import Registry

MODELS = Registry('architecture')  # name (or 'family:' prefix) -> builder, see build_model
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class BlurPoolConv2d(nn.Module):
    """A [1 2 1] x [1 2 1] low-pass filter in front of a strided convolution (Zhang, 2019;
    ffcv-imagenet's `use_blurpool`). The filter is a non-persistent buffer, so the wrapped
    convolution's weights keep their meaning and export strips the wrapper by name."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = (taps[:, None] * taps[None, :]) / 16
        self.register_buffer('blur', kernel.expand(conv.in_channels, 1, 3, 3).clone(),
                             persistent=False)

    def forward(self, x):
        x = F.conv2d(x, self.blur.to(x.dtype), padding=1, groups=self.conv.in_channels)
        return self.conv(x)


def add_blurpool(model: nn.Module) -> nn.Module:
    """Wrap every strided convolution with at least 16 input channels (ffcv-imagenet's rule)."""
    for name, child in model.named_children():
        if isinstance(child, nn.Conv2d) and max(child.stride) > 1 and child.in_channels >= 16:
            setattr(model, name, BlurPoolConv2d(child))
        else:
            add_blurpool(child)
    return model


class SmallResNet(nn.Module):
    """A CIFAR-style ResNet: 3x3 stem at full resolution, three stages of `depth` basic blocks
    with width, 2 x width and 4 x width channels (strides 1, 2, 2). Width 16, depth 3 is
    He et al.'s ResNet-20; width 16, depth 1 trains at hundreds of crops/s on two CPU cores."""

    def __init__(self, num_classes: int, width: int = 16, depth: int = 2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        stages, channels = [], width
        for i, out in enumerate((width, 2 * width, 4 * width)):
            stride = 1 if i == 0 else 2
            blocks = []
            for b in range(depth):
                down = None
                if b == 0 and (stride != 1 or channels != out):
                    down = nn.Sequential(nn.Conv2d(channels, out, 1, stride, bias=False),
                                         nn.BatchNorm2d(out))
                blocks.append(BasicBlock(channels, out, stride if b == 0 else 1, down))
                channels = out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _torchvision_resnet(arch, num_classes, *, small_input, **_):
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    if small_input:
        model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    return model


for _arch in ('resnet18', 'resnet34', 'resnet50', 'resnet101'):
    MODELS.register(_arch)(_torchvision_resnet)


@MODELS.register('small_resnet')
def _small_resnet(arch, num_classes, *, width, depth, **_):
    return SmallResNet(num_classes, width, depth)


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


_sret.blurpool = False  # its strided convolutions are its own design: kept as they are
for _arch in ('sret_t', 'sret_lt', 'sret_s'):
    MODELS.register(_arch)(_sret)


@MODELS.register('torchvision:', prefix=True)
def _torchvision_any(arch, num_classes, **_):
    """`torchvision:<name>`: any torchvision classifier, freshly initialised."""
    name = arch[len('torchvision:'):]
    if name not in torchvision.models.list_models(torchvision.models):
        raise ValueError(f"unknown torchvision architecture {name!r}")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def call_entry_point(spec: str, what: str, known: str) -> tuple:
    """(model, preprocessing dict) from a `<module>:<function>` spec: the function returns a
    model, or (model, dict with input_size, interpolation, mean, std). `what` and `known` name
    the spec's role and the alternatives in errors."""
    module, _, function = spec.partition(':')
    if not module or not function:
        raise ValueError(f"unknown {what} {spec!r}; known: {known}, or <module>:<function>")
    try:
        build = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{what} {spec!r}: {e}") from None
    try:
        made = build()
    except ImportError as e:  # a package the entry point needs (efficientnet_lite0: .[teacher])
        raise ValueError(f"{what} {spec!r} needs a package that is not installed: {e}") from None
    return made if isinstance(made, tuple) else (made, {})


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
    module, _, function = arch.partition(':')
    try:
        found = module and function and hasattr(importlib.import_module(module), function)
    except ImportError:
        found = False
    if not found:
        raise ValueError(f"unknown architecture {arch!r}; known: {MODELS.describe()}, or "
                         f"<module>:<function> returning a model")


def classifier_name(model: nn.Module):
    """The name of the model's classifier: its last Linear layer (torchvision, timm and this
    project's models end in one), or None."""
    if isinstance(model, torch.jit.ScriptModule):
        return None
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def with_classes(model: nn.Module, num_classes: int, arch: str = 'the model') -> nn.Module:
    """`model` predicting `num_classes`: its classifier replaced by a new one (freshly
    initialised) when it predicts another count."""
    name = classifier_name(model)
    if name is None:
        raise ValueError(f"{arch}: no Linear classifier to give {num_classes} classes")
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name)
    head = getattr(parent, child)
    if head.out_features != num_classes:
        setattr(parent, child, nn.Linear(head.in_features, num_classes,
                                         bias=head.bias is not None))
    return model


def input_normalisation(model: nn.Module) -> tuple:
    """(mean, std) of RGB in [0, 1] that the model expects: its own where its builder knew
    it (a pretrained entry point), else ImageNet's."""
    return getattr(unwrap(model), 'input_normalisation', (IMAGENET_MEAN, IMAGENET_STD))


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


def start_from(model: nn.Module, path, new_head: bool = True) -> list:
    """Load the weights in `path` (a trainer's final_weights.pt, a torchvision or other
    state-dict checkpoint) into `model`; the classifier's tensors keep their fresh values when
    their shape differs (another class count) and `new_head` allows it. Returns their names.
    Names missing on either side, or other tensors of another shape, are refused, the first
    few named. An ssl export's projection head counts as a classifier of another shape: its
    backbone loads, the model's head starts new."""
    from fkd_ffcv.files import load_data
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


def is_ssl_export(saved) -> bool:
    """Whether a loaded file is an ssl-mode export (save_weights with a projection head)."""
    return isinstance(saved, dict) and 'arch' in saved and isinstance(saved.get('embedding'),
                                                                      dict)


def check_start(path, classes, options: dict) -> None:
    """Raise ValueError unless an export (a save_weights file) in `path` was trained on
    `classes`, in that order, with the architecture, BlurPool and stem of `options`
    (build_model's keywords): tensor shapes show none of these, and a student that must start
    where the export stands (MEAL V2) would silently compute another function. A plain state
    dict records none of them and passes, and so does another class count, which the
    classifier's shapes show (start_from, or timm's student builder, names them)."""
    from fkd_ffcv.files import load_data
    saved = load_data(path)
    if is_ssl_export(saved):
        raise ValueError(f"{path} is an ssl export: a backbone with a projection head and no "
                         f"classifier to start from (fine-tune it in another mode first)")
    if not isinstance(saved, dict) or not {'arch', 'classes'} <= saved.keys():
        return
    if len(saved['classes']) == len(classes) and list(saved['classes']) != list(classes):
        first = next(i for i, (a, b) in enumerate(zip(saved['classes'], classes)) if a != b)
        raise ValueError(f"{path} was trained on other classes or another order: class {first} "
                         f"is {saved['classes'][first]!r} there, {classes[first]!r} here")
    stem = MODELS.find(options['arch']) in (_torchvision_resnet, _sret)  # small_input counts
    differ = [f"{key}={saved['arch'][key]!r} (this run: {options[key]!r})"
              for key in ('arch', 'blurpool') + (('small_input',) if stem else ())
              if key in saved['arch'] and saved['arch'][key] != options[key]]
    if differ:
        raise ValueError(f"{path} was exported with {', '.join(differ)}: give the same "
                         f"--model options")


def build_model(arch: str, num_classes: int, *, small_input: bool = False, width: int = 16,
                depth: int = 2, patch_size: int = 0, image_size: int = 0,
                drop_path: float = 0.0, blurpool: bool = False, weights: str = '',
                new_head: bool = True) -> nn.Module:
    """A student from the builder MODELS holds for `arch`: freshly initialised, or started
    from `weights` (see start_from; an entry point may bring its own, and a builder marked
    `loads_weights` loads them itself); without `new_head`, weights of another class count are
    refused rather than given a new classifier. `small_input` gives a torchvision ResNet a
    CIFAR stem (3x3 stride-1 convolution, no max-pool) and an SReT a stem of one stride for
    inputs of about 32 px; `width` and `depth` size `small_resnet`; `image_size`, `patch_size` (0: the model's
    own) and `drop_path` go to timm models, `image_size` and `drop_path` to SReT. A builder
    takes (arch, num_classes, **these options) and uses the ones it needs."""
    build = MODELS[arch]
    if weights and getattr(build, 'loads_weights', False):
        from fkd_ffcv.files import load_data
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


def saved_options(options: dict) -> dict:
    """build_model's keywords from options recorded by an earlier version (a checkpoint's
    model_options, an export's 'arch'): 'heads' sized the hand-written ViT that timm's
    replaced, and is dropped."""
    return {k: v for k, v in options.items() if k != 'heads'}


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


def save_weights(path, model: nn.Module, arch: dict, classes, preprocess: dict,
                 **extra) -> None:
    """Write plain weights with their architecture options (build_model's keywords, 'arch'
    included), class names and input preprocessing (input_size, interpolation, mean, std),
    atomically. Under 'model' is a plain state dict, so tools that only know torchvision
    (`torch.load(f)['model']`) read it too; a timm model's creation arguments are under
    'timm'; an ssl student's projection head under 'embedding' (dim, hidden); a model trained
    with BlurPool computes the same
    function only with the filters put back (`add_blurpool`, as `load_weights` does)."""
    from fkd_ffcv.files import atomic_write
    saved = {'model': export_state_dict(model), 'arch': arch, 'num_classes': len(classes),
             'classes': list(classes), 'preprocess': preprocess, **extra}
    from fkd_ffcv.records.embeddings import projection_of
    head = projection_of(unwrap(model))
    if head is not None:  # an ssl student: rebuilt with its projection head
        saved['embedding'] = {'dim': head.dim, 'hidden': head.hidden}
    timm_args = getattr(unwrap(model), 'timm_args', None)
    if timm_args:  # timm.create_model(**saved['timm']) + load_state_dict(saved['model'])
        saved['timm'] = dict(timm_args)
    atomic_write(path, lambda f: torch.save(saved, f))


def load_weights(path) -> tuple:
    """(model in eval mode, preprocess dict, class names) from a `save_weights` file."""
    from fkd_ffcv.files import load_data
    saved = load_data(path)
    if not isinstance(saved, dict) or not {'arch', 'model', 'preprocess'} <= saved.keys():
        raise ValueError(f"{path} was not written by save_weights (a trainer's "
                         f"final_weights.pt); for a plain state dict use "
                         f"timm:<name>:{path} or torchvision:<arch>:{path}")
    arch = saved_options(saved['arch'])
    blurpool = arch.pop('blurpool', False)  # the weights carry plain names: wrap after loading
    model = build_model(arch.pop('arch'), saved['num_classes'], **arch)
    if 'embedding' in saved:
        from fkd_ffcv.records.embeddings import with_projection
        model = with_projection(model, saved['embedding']['dim'], saved['embedding']['hidden'])
    model.load_state_dict(saved['model'])
    return (add_blurpool(model) if blurpool else model).eval(), saved['preprocess'], \
        saved['classes']
