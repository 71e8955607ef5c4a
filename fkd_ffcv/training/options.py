"""fkd-train's options, without torch or ffcv: its sections (`PARAMS`), `options()` (them as
{section: {key: value}} for Python use, each value checked as on the command line) and
`recipe()` (a YAML/JSON recipe file as those options).

The other option modules, all torch-free so that a wrong command line fails before torch
loads: option_checks.py (fkd-train's checks between options), run_options.py (options taken
from the run that --eval-only or --resume continues, defaults fitted to a short run),
write_options.py (fkd-write's sections and checks).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from fastargs import Param, Section
from fastargs.validation import And, Checker, InRange, OneOf

from fkd_ffcv.config import Flag, read_config_file, unknown_keys
from fkd_ffcv.defaults import (COLOUR_AUGMENTATIONS, DEFAULT_RESIZE, DISCRIMINATOR_GRADIENTS,
                               EMBEDDING_KINDS, IMAGENET_CROP, PRECISIONS, RESIZE_FILTERS)
from fkd_ffcv.training.modes import MODES
from fkd_ffcv.training.schedules import LR_SCHEDULES

# The demo's recipes, installed with the package (recipe('plain') reads fashion_mnist_plain.yaml)
SMALL_CONFIGS = Path(__file__).resolve().parents[1] / 'small_configs'


class Registered(Checker):
    """A name a registry knows at the time of the check (so a mode registered later counts)."""

    def __init__(self, registry):
        self.registry = registry

    def check(self, value):
        if value not in self.registry:
            raise ValueError(value)
        return value

    def help(self):
        return f"one of {self.registry.describe()}"


# validation.precise_bn=-1 (auto): runs of fewer optimiser steps than this recompute their
# BatchNorm statistics before each validation, on up to this many training images
# (docs/training.md, "Precise BatchNorm", has the measurements that chose them).
PRECISE_BN_STEPS = 250
PRECISE_BN_IMAGES = 4096

PARAMS = {
    'data': ('the betons', dict(
        train_dataset=Param(str, 'training beton (FKD mode: with crop records)', default=''),
        val_dataset=Param(str, 'validation beton', default=''),
        num_workers=Param(int, 'loader threads (-1: every core)', default=-1),
        crop_scale_min=Param(And(float, InRange(0, 1)), 'plain / online KD / moco: RandomResized'
                             'Crop area range (FKD replays the recorded crops)', default=0.08),
        crop_scale_max=Param(And(float, InRange(0, 1)), 'upper bound of that range',
                         default=1.0),
        resize=Param(OneOf(RESIZE_FILTERS), 'crop resize of the training and validation '
                     'loaders: antialias (a triangle filter widened on downscales: PIL\'s and '
                     'torchvision\'s antialiased bilinear), bilinear (OpenCV INTER_LINEAR, '
                     'aliases on downscales), bicubic (PIL\'s antialiased bicubic) or area '
                     '(OpenCV INTER_AREA, stock FFCV\'s; 3x slower)', default=DEFAULT_RESIZE),
    )),
    'model': ('the student', dict(
        arch=Param(str, 'architecture: a name the model registry knows (resnet18/34/50/101, '
                   'small_resnet, sret_t, sret_lt, sret_s), timm:<name>, torchvision:<name>, '
                   'or <module>:<function> returning a (pretrained) model',
                   default='resnet50'),
        weights=Param(str, 'start from these weights: a final_weights.pt or a state-dict '
                      'checkpoint (.pt/.pth/.safetensors; a classifier of another class '
                      'count starts new)', default=''),
        head_epochs=Param(And(float, InRange(min=0)), 'train only the classifier for the first '
                          'epochs (fine-tuning a pretrained model)', default=0.0),
        num_classes=Param(And(int, InRange(min=0)), 'class count (0: the data set\'s)',
                          default=0),
        small_input=Param(Flag(), 'torchvision ResNets, SReT: a stem for ~32 px inputs',
                          default=False),
        width=Param(And(int, InRange(min=1)), 'small_resnet base width', default=16),
        depth=Param(And(int, InRange(min=1)), 'small_resnet blocks per stage', default=2),
        image_size=Param(And(int, InRange(min=0)), 'timm, SReT: the side position embeddings '
                         'are learnt for (0: the model\'s own)', default=0),
        patch_size=Param(And(int, InRange(min=0)), 'timm: patch side of a ViT (0: the model\'s '
                         'own)', default=0),
        drop_path=Param(And(float, InRange(0, 1)), 'timm, SReT: stochastic depth rate',
                        default=0.0),
        blurpool=Param(Flag(), 'low-pass filter before strided convolutions (not timm models, '
                       'kept as timm builds them)', default=True),
    )),
    'lr': ('learning rate, per step from a schedule written in epochs', dict(
        lr=Param(And(float, InRange(min=0)), 'peak learning rate', default=0.5),
        schedule=Param(OneOf(LR_SCHEDULES), 'cyclic (ffcv), step or cosine',
                       default='cyclic'),
        peak_epoch=Param(And(float, InRange(min=0)), 'cyclic: epoch of the peak', default=2.0),
        warmup_epochs=Param(And(float, InRange(min=0)), 'step / cosine: linear warm-up',
                            default=0.0),
        step_length=Param(And(float, InRange(min=1e-9)), 'step: epochs per step',
                          default=30.0),
        step_ratio=Param(And(float, InRange(0, 1)), 'step: factor per step', default=0.1),
        step_epochs=Param(str, 'step: the epochs of the steps, comma-separated (e.g. 100,180; '
                          'empty: every step_length epochs)', default=''),
        end_factor=Param(And(float, InRange(0, 1)), 'cyclic / cosine: final lr / peak',
                         default=0.0),
    )),
    'training': ('the optimisation', dict(
        mode=Param(Registered(MODES), 'a training mode of training/modes/ (meal_v2: Fast MEAL V2; '
                   'ssl: self-supervised FKD)',
                   default='fkd'),
        epochs=Param(And(int, InRange(min=1)), 'epochs (crops = epochs x images)', default=16),
        batch_size=Param(And(int, InRange(min=1)), 'crops per step and process', default=512),
        optimizer=Param(OneOf(['sgd', 'adamw']), 'sgd (momentum) or adamw', default='sgd'),
        momentum=Param(And(float, InRange(0, 1)), 'sgd momentum', default=0.9),
        weight_decay=Param(And(float, InRange(min=0)), 'not applied to norms and biases',
                           default=5e-5),
        label_smoothing=Param(And(float, InRange(0, 1)), 'plain mode', default=0.1),
        precision=Param(OneOf(PRECISIONS), 'auto: bf16 on GPUs and CPUs that compute it, '
                        'fp16 on older GPUs, else fp32; fp16 uses a gradient scaler',
                        default='auto'),
        compile=Param(Flag(), 'torch.compile the model', default=False),
        ema_epochs=Param(And(float, InRange(min=0)), 'time constant of an exponential '
                         'average of the weights, evaluated and exported (0: off)',
                         default=0.0),
        mixup_alpha=Param(And(float, InRange(min=0)), 'mixup Beta(a, a) (0: off)',
                          default=0.0),
        cutmix_alpha=Param(And(float, InRange(min=0)), 'cutmix Beta(a, a) (0: off; with '
                           'mixup, one of the two per step)', default=0.0),
        seed=Param(int, 'seed of the model, data order, records and mixing', default=0),
        resume=Param(Flag(), 'continue the run in logging.folder (alias --resume)',
                     default=False),
        eval_only=Param(Flag(), 'evaluate training.checkpoint and stop (alias --eval-only)',
                        default=False),
        checkpoint=Param(str, 'eval only: checkpoint.pt or final_weights.pt (default: the '
                         'folder\'s checkpoint)', default=''),
    )),
    'validation': ('evaluation on data.val_dataset', dict(
        resolution=Param(And(int, InRange(min=1)), 'side of the centre crop', default=256),
        ratio=Param(And(float, InRange(0, 1)), 'centre crop side / shorter image side',
                    default=IMAGENET_CROP),
        batch_size=Param(And(int, InRange(min=1)), 'images per batch', default=256),
        lr_tta=Param(Flag(), 'average the logits of the image and its mirror', default=True),
        every_passes=Param(And(int, InRange(min=0)), 'evaluate every n passes (0: at the '
                           'end only)', default=0),
        at_start=Param(Flag(), 'evaluate before the first step too (logged as epoch 0): the '
                       'starting point of a run from --model.weights', default=False),
        precise_bn=Param(And(int, InRange(min=-1)), 'before each validation, recompute the '
                         'BatchNorm statistics on this many training images at the current '
                         'weights (0: off; -1: auto, on for runs of fewer than '
                         f'{PRECISE_BN_STEPS} steps, on up to {PRECISE_BN_IMAGES} images)',
                         default=-1),
    )),
    'resolution': ('progressive resizing, changed at pass boundaries', dict(
        min_res=Param(And(int, InRange(min=1)), 'side until start_ramp', default=160),
        max_res=Param(And(int, InRange(min=1)), 'side from end_ramp', default=192),
        start_ramp=Param(And(float, InRange(min=0)), 'epoch the ramp starts', default=0.0),
        end_ramp=Param(And(float, InRange(min=0)), 'epoch the ramp ends', default=0.0),
        round_to=Param(And(int, InRange(min=1)), 'sides are multiples of this', default=32),
    )),
    'fkd': ('distillation', dict(
        num_crops=Param(And(int, InRange(min=1)), 'FKD: crops per decoded image (K)',
                        default=4),
        single_crop_phases=Param(Flag(), 'FKD: the lr warm-up epochs and the epochs K does not '
                                 'divide with one crop per image, as FKD ran them (measured: '
                                 'docs/results.md)', default=True),
        temperature=Param(And(float, InRange(min=1e-6)), 'softmax temperature of the '
                          'student in the distillation loss', default=1.0),
        teacher=Param(str, 'online modes: teacher spec(s), comma-separated for an ensemble: '
                      'checkpoint:<final_weights.pt>, timm:<name>[.<tag>]:<checkpoint>, '
                      'torchvision:<arch>[:<checkpoint>], torchscript:<file>, '
                      'moco:<arch>:<checkpoint> (online_ssl), <module>:<function>', default=''),
    )),
    'meal': ('MEAL V2 (modes meal_v2 and online_meal_v2; discriminator.py)', dict(
        discriminator=Param(Flag(), 'the discriminator term (false: distillation alone)',
                            default=True),
        disc_weight=Param(And(float, InRange(min=0)), 'weight of its BCE in the loss',
                          default=1.0),
        disc_lr_ratio=Param(And(float, InRange(min=0)), 'its learning rate / the student\'s '
                            '(it follows the schedule)', default=1.0),
        disc_gradient=Param(OneOf(DISCRIMINATOR_GRADIENTS), 'shared: the student minimises '
                            'the discriminator\'s BCE too, as in MEAL V2; reversed: it learns '
                            'to fool it (docs/training.md)', default='shared'),
        disc_last_relu=Param(Flag(), 'MEAL V2\'s ReLU after the last layer (false: the scores '
                             'may be negative; docs/training.md)', default=True),
        disc_open_start=Param(Flag(), 'the last layer\'s biases start at 1, so that no '
                              'discriminator starts dead (MEAL V2: PyTorch\'s initialisation; '
                              'docs/training.md)', default=False),
        disc_softmax=Param(Flag(), 'feed it softmax(student) and the teacher\'s '
                           'probabilities (MEAL V2 feeds the student\'s raw logits; '
                           'docs/training.md)', default=False),
        teachers=Param(And(int, InRange(min=0)), 'teachers the labels should come from (a '
                       'warning names another count; 0: any)', default=0),
    )),
    'ssl': ('self-supervised training (modes ssl, online_ssl and moco; embeddings.py, probes.py)',
            dict(
        temperature=Param(And(float, InRange(min=1e-6)), 'tau of the teacher\'s and the '
                          'student\'s softmax over the embedding (S2-BNN: 0.2)', default=0.2),
        dim=Param(And(int, InRange(min=0)), 'projection dimensions (0: the teacher\'s, moco: '
                  '128; another count than the teacher\'s is refused)', default=0),
        head_hidden=Param(And(int, InRange(min=0)), 'hidden width of the projection head (0: '
                          'the backbone\'s feature width, as MoCo\'s)', default=0),
        embedding=Param(OneOf(EMBEDDING_KINDS), 'online_ssl: what the '
                        'teacher gives (auto: its projection head if it has one, else its '
                        'pooled features)', default='auto'),
        colour=Param(OneOf(COLOUR_AUGMENTATIONS), 'online_ssl: a colour augmentation of each '
                     'student crop, embedded by the teacher as the student sees it (ssl mode '
                     'replays the one its records store: --labels.colour)', default='none'),
        knn_k=Param(And(int, InRange(min=1)), 'k-NN evaluation: neighbours', default=20),
        knn_temperature=Param(And(float, InRange(min=1e-6)), 'k-NN: vote weight '
                              'exp(similarity / T)', default=0.07),
        probe_epochs=Param(And(int, InRange(min=0)), 'linear probe on frozen features at '
                           'each validation: epochs (0: k-NN only)', default=100),
        probe_lr=Param(And(float, InRange(min=0)), 'linear probe: SGD learning rate',
                       default=0.1),
    )),
    'moco': ('MoCo v2, a self-supervised teacher (mode moco; modes/moco.py)', dict(
        queue=Param(And(int, InRange(min=1)), 'keys kept as negatives (MoCo: 65536; a multiple '
                    'of the images per step, fewer than the images)', default=65536),
        momentum=Param(And(float, InRange(0, 1)), 'the key encoder\'s momentum (MoCo: 0.999)',
                       default=0.999),
        colour=Param(OneOf(COLOUR_AUGMENTATIONS), 'the views\' colour augmentation (moco_v2: '
                     'MoCo v2\'s; records/colour.py)', default='moco_v2'),
        bn_splits=Param(And(int, InRange(min=1)), 'parts of the shuffled key batch whose '
                        'BatchNorm statistics are taken apart (MoCo\'s shuffle BN)', default=8),
    )),
    'logging': ('outputs', dict(
        folder=Param(str, 'run folder (default: runs/<mode>_<arch>)', default=''),
        progress=Param(Flag(), 'progress bars of training and validation, drawn only when '
                       'stderr is a terminal', default=True),
    )),
    'dist': ('multi-process training under torchrun', dict(
        backend=Param(OneOf(['auto', 'nccl', 'gloo']), 'auto: nccl on CUDA, gloo on CPU',
                      default='auto'),
    )),
}


def declare_sections(sections: dict = PARAMS) -> None:
    """Make `sections` (fkd-train's PARAMS, or fkd-write's WRITE_PARAMS) fastargs'
    command-line sections (once per process)."""
    for name, (description, params) in sections.items():
        Section(name, description).params(**params)


def options(overrides: Optional[dict] = None) -> dict:
    """Every option as {section: {key: value}}: defaults, then `overrides` given as
    {'section.key': value}, each checked as on the command line."""
    overrides = dict(overrides or {})
    unknown = [k for k in overrides if k.partition('.')[0] not in PARAMS
               or k.partition('.')[2] not in PARAMS[k.partition('.')[0]][1]]
    if unknown:
        raise ValueError(f"unknown option(s): {', '.join(unknown)}")
    out = {}
    for name, (_, params) in PARAMS.items():
        for key, param in params.items():
            value = overrides.get(f'{name}.{key}', param.default)
            try:
                out.setdefault(name, {})[key] = param.validate(value)
            except Exception:
                raise ValueError(f"--{name}.{key}: expected {param.checker.help()}, got "
                                 f"{value!r}") from None
    return out


def recipe(path_or_name, overrides: Optional[dict] = None) -> dict:
    """A YAML/JSON recipe file (or the name of a small recipe: 'plain' is
    small_configs/fashion_mnist_plain.yaml) as options(), `overrides` ({'section.key': v}) on
    top. Keys are checked as `--config-file` checks them: an unknown one is a ValueError."""
    path = Path(path_or_name)
    if path.suffix not in ('.yaml', '.yml', '.json'):
        path = SMALL_CONFIGS / f'fashion_mnist_{path_or_name}.yaml'
    data = read_config_file(str(path))
    known = [(section, key) for section, (_, params) in PARAMS.items() for key in params]
    problems = unknown_keys(data, known)
    if problems:
        raise ValueError(f"{path}: {'; '.join(problems)}")
    flat = {}
    for section, values in data.items():  # sections of keys, or 'section.key' at the top
        if isinstance(values, dict):
            flat.update({f'{section}.{key}': value for key, value in values.items()})
        elif values is not None:
            flat[section] = values
    return options({**flat, **(overrides or {})})


def run_folder_path(opts: dict) -> str:
    """The run's folder: logging.folder, by default runs/<mode>_<arch>."""
    return opts['logging']['folder'] or \
        f"runs/{opts['training']['mode']}_{opts['model']['arch']}"
