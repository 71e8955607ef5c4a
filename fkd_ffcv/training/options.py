"""The trainer's options, and every check between options of the two command lines, without
torch or ffcv: a wrong combination fails in a fraction of a second, naming the option, before
any teacher, model or data is loaded (the scripts call `check` / `check_writing` first; the
Trainer calls `check` too).

Options are fastargs sections (`PARAMS`); `options({'section.key': value})` gives them as
{section: {key: value}} for Python use, each value checked as on the command line.
"""
from __future__ import annotations

import json
import math
import os
from typing import Optional

from fastargs import Param, Section
from fastargs.validation import And, Checker, InRange, OneOf

from pathlib import Path

from fkd_ffcv.config import Flag
from fkd_ffcv.defaults import (DEFAULT_RESIZE, EMBEDDING_KINDS, FASHION_MNIST_DIR, PRECISIONS,
                               RESIZE_FILTERS, STUDENT_ARCHS, STUDENT_PREFIXES)
from fkd_ffcv.errors import DataError, OptionError
from fkd_ffcv.data.header import check_beton
from fkd_ffcv.data.manifest import (Manifest, Records, check_records, labelled_beton,
                                    read_manifest, records_missing)
from fkd_ffcv.records.label_types import LabelSpec, default_label_type
from fkd_ffcv.training.modes import MODES
from fkd_ffcv.training.schedules import LR_SCHEDULES


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
        crop_scale_min=Param(And(float, InRange(0, 1)), 'plain / online KD: RandomResized'
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
        end_factor=Param(And(float, InRange(0, 1)), 'cyclic / cosine: final lr / peak',
                         default=0.0),
    )),
    'training': ('the optimisation', dict(
        mode=Param(Registered(MODES), 'a training mode of modes.py (meal_v2: Fast MEAL V2; '
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
                    default=224 / 256),
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
        disc_gradient=Param(OneOf(['shared', 'reversed']), 'reversed: the student learns to '
                            'fool it; shared: it minimises its BCE too, as in MEAL V2 (it cost '
                            '2.7 points where the discriminator learnt: docs/training.md)',
                            default='reversed'),
        disc_last_relu=Param(Flag(), 'MEAL V2\'s ReLU after the last layer (false: the scores '
                             'may be negative; docs/training.md)', default=True),
        teachers=Param(And(int, InRange(min=0)), 'teachers the labels should come from (a '
                       'warning names another count; 0: any)', default=0),
    )),
    'ssl': ('self-supervised FKD (modes ssl and online_ssl; embeddings.py, probes.py)', dict(
        temperature=Param(And(float, InRange(min=1e-6)), 'tau of the teacher\'s and the '
                          'student\'s softmax over the embedding (S2-BNN: 0.2)', default=0.2),
        dim=Param(And(int, InRange(min=0)), 'projection dimensions (0: the teacher\'s; another '
                  'count is refused)', default=0),
        head_hidden=Param(And(int, InRange(min=0)), 'hidden width of the projection head (0: '
                          'the backbone\'s feature width, as MoCo\'s)', default=0),
        embedding=Param(OneOf(EMBEDDING_KINDS), 'online_ssl: what the '
                        'teacher gives (auto: its projection head if it has one, else its '
                        'pooled features)', default='auto'),
        knn_k=Param(And(int, InRange(min=1)), 'k-NN evaluation: neighbours', default=20),
        knn_temperature=Param(And(float, InRange(min=1e-6)), 'k-NN: vote weight '
                              'exp(similarity / T)', default=0.07),
        probe_epochs=Param(And(int, InRange(min=0)), 'linear probe on frozen features at '
                           'each validation: epochs (0: k-NN only)', default=100),
        probe_lr=Param(And(float, InRange(min=0)), 'linear probe: SGD learning rate',
                       default=0.1),
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


def declare_sections() -> None:
    """Make PARAMS fastargs' command-line sections (train_imagenet.py; once per process)."""
    for name, (description, params) in PARAMS.items():
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


def run_folder(opts: dict) -> str:
    """The run's folder: logging.folder, by default runs/<mode>_<arch>."""
    return opts['logging']['folder'] or \
        f"runs/{opts['training']['mode']}_{opts['model']['arch']}"


# What a run's config.json records but a later command must not take from it.
NOT_RECORDED = {('training', 'resume'), ('training', 'eval_only'), ('training', 'checkpoint'),
                ('logging', 'folder')}


def take_recorded(opts: dict, given) -> Optional[str]:
    """--eval-only and --resume: each option that neither the command line nor a recipe gives
    (`given`: 'section.key' names) takes the value the run recorded in its config.json (beside
    --training.checkpoint when that is given, else in the run folder), so that
    `--eval-only --logging.folder=runs/x` needs nothing else. Returns the file read, or None
    when there is none."""
    t = opts['training']
    if not (t['eval_only'] or t['resume']):
        return None
    path = recorded_config(opts)
    try:
        with open(path) as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict):
        return None
    for name, (_, params) in PARAMS.items():
        values = recorded.get(name)
        for key, param in params.items():
            if not isinstance(values, dict) or key not in values or \
                    f'{name}.{key}' in given or (name, key) in NOT_RECORDED:
                continue
            try:
                opts[name][key] = param.validate(values[key])
            except Exception:  # a value an older version recorded otherwise: the default
                pass
    return path


def beton_samples(path: str) -> Optional[int]:
    """The sample count in a beton's header (header.check_beton, no ffcv); None when the file
    is not there or not a whole beton: `check` then names what is wrong with it."""
    try:
        return check_beton(path).num_samples
    except (OSError, DataError):
        return None


def fit_to_run(opts: dict, given) -> list:
    """Defaults that a short run or a small data set cannot hold, made to fit; a value given
    (`given`: 'section.key' names) is left for `check` to refuse. Returns one line per choice
    made, for the log: a cyclic schedule's default peak past the end of the run comes at the
    same share of it as in the default 16 epochs; a default batch larger than the training
    set (per process, whole K-crop groups) is reduced to it."""
    t, lr, notes = opts['training'], opts['lr'], []
    if t['eval_only']:
        return notes
    peak = PARAMS['lr'][1]['peak_epoch'].default
    epochs = PARAMS['training'][1]['epochs'].default
    if lr['schedule'] == 'cyclic' and lr['peak_epoch'] >= t['epochs'] and \
            'lr.peak_epoch' not in given:
        lr['peak_epoch'] = t['epochs'] * peak / epochs
        notes.append(f"--lr.peak_epoch={lr['peak_epoch']:g}: the default {peak:g} is not "
                     f"within {t['epochs']} epoch(s), so the peak comes at the same share of "
                     f"the run as {peak:g} of {epochs} (give --lr.peak_epoch to choose)")
    largest = largest_batch(opts)
    if largest and t['batch_size'] > largest and 'training.batch_size' not in given:
        notes.append(f"--training.batch_size={largest}: the default {t['batch_size']} is more "
                     f"than the {largest} crops of one step over "
                     f"{opts['data']['train_dataset']} (give --training.batch_size to choose)")
        t['batch_size'] = largest
    return notes


def plan_step(opts: dict) -> int:
    """The crops per image a batch must be a multiple of: the K of every pass in the mode's
    plan (K = fkd.num_crops, and 1 for the passes fkd.single_crop_phases or a run shorter
    than K epochs run with one crop). Raises ValueError where the plan cannot be made."""
    return math.lcm(*set(MODES[opts['training']['mode']].pass_plan(opts)))


def largest_batch(opts: dict) -> Optional[int]:
    """The largest batch (crops per process) that gives every pass of the plan at least its K
    steps: a pass of K crops per image steps over the process's share of the images, batch / K
    at a time, and the incomplete last batch is dropped. None where the beton or the plan
    cannot tell (`check` names why)."""
    data = opts['data']
    images = beton_samples(data['train_dataset']) if data['train_dataset'] else None
    if images is None:
        return None
    try:
        step = plan_step(opts)
    except ValueError:
        return None
    world = int(os.environ.get('WORLD_SIZE', 1))
    per_process = -(-images // world)  # FFCV's distributed mode pads to a multiple
    return per_process // step * step


def check(opts: dict) -> None:
    """Raise OptionError for the first problem between options: files they name, epochs and
    batches that a pass of K crops per image cannot divide, sides off the rounding, a schedule
    that ends before it starts, a mode's missing teacher, more crops than stored records, an
    unknown architecture name, a run folder that holds a run (or none to resume)."""
    data, t, lr, r = opts['data'], opts['training'], opts['lr'], opts['resolution']
    mode = MODES[t['mode']]  # the class: its facts, nothing loaded
    check_run_to_continue(opts)  # before the data: a wrong folder is why the data are missing
    # an evaluation of features (k-NN, probe) reads the training beton's labels too
    needed = ('train_dataset', 'val_dataset') if not t['eval_only'] or mode.probes else \
        ('val_dataset',)
    for key in needed:
        if not data[key]:
            raise OptionError(f"--data.{key} is required" + (
                f" ({recorded_config(opts)} does not record it)"
                if t['eval_only'] or t['resume'] else ""))
        if not os.path.isfile(data[key]):
            raise OptionError(f"--data.{key}: {data[key]}: no such file")
        check_beton(data[key])  # DataError (exit 1): not a beton, or truncated
    if t['eval_only']:
        return
    checkpoint = os.path.join(run_folder(opts), 'checkpoint.pt')
    if not t['resume'] and os.path.isfile(checkpoint):
        raise OptionError(f"{run_folder(opts)} already holds a run; continue it with --resume "
                          f"or choose another --logging.folder")
    check_arch_name(opts['model']['arch'])
    weights = opts['model']['weights']
    if weights and not os.path.isfile(weights):
        raise OptionError(f"--model.weights: {weights}: no such file")
    m = opts['model']
    takes = ('image_size', 'patch_size', 'drop_path') if m['arch'].startswith('timm:') else \
        ('image_size', 'drop_path') if m['arch'].startswith('sret_') else ()
    misplaced = [f"--model.{key}={m[key]}" for key in ('image_size', 'patch_size', 'drop_path')
                 if m[key] and key not in takes]
    if misplaced:
        raise OptionError(f"{', '.join(misplaced)}: not an option of {m['arch']} (image_size, "
                          f"patch_size and drop_path are for timm models, image_size and "
                          f"drop_path for SReT)")
    if opts['model']['head_epochs'] >= t['epochs']:
        raise OptionError(f"--model.head_epochs={opts['model']['head_epochs']} must end before "
                          f"--training.epochs={t['epochs']}")
    check_sections(opts, t['mode'], mode)
    if 'ssl' in mode.sections:
        if opts['fkd']['temperature'] != PARAMS['fkd'][1]['temperature'].default:
            raise OptionError(f"--fkd.temperature={opts['fkd']['temperature']}: the "
                              f"self-supervised loss takes tau from --ssl.temperature")
        if not mode.needs_teacher and opts['ssl']['embedding'] != 'auto':
            raise OptionError(f"--ssl.embedding={opts['ssl']['embedding']}: {t['mode']} mode "
                              f"replays the embeddings the records store (chosen when labelling, "
                              f"--labels.embedding); the option is online_ssl's")
    if mode.starts_from_weights and not weights:
        raise OptionError(f"{t['mode']} mode starts the student from weights: give "
                          f"--model.weights (a final_weights.pt, torchvision or timm "
                          f"checkpoint of the data set's classes); for a student from scratch "
                          f"use --training.mode=fkd")
    k = mode.crops_per_image(opts)
    manifest = read_manifest(data['train_dataset']) if mode.reads_records else Manifest()
    if manifest.fields and mode.record_field not in manifest.fields:
        raise OptionError(records_missing(t['mode'], data['train_dataset'],
                                          list(manifest.fields), mode.record_field))
    if lr['schedule'] == 'cyclic' and lr['peak_epoch'] >= t['epochs']:
        raise OptionError(f"--lr.peak_epoch={lr['peak_epoch']} must come before the end of the "
                          f"run (--training.epochs={t['epochs']}): set a smaller "
                          f"--lr.peak_epoch or more --training.epochs")
    if lr['schedule'] != 'cyclic' and lr['warmup_epochs'] >= t['epochs']:
        raise OptionError(f"--lr.warmup_epochs={lr['warmup_epochs']} must end before "
                          f"--training.epochs={t['epochs']}")
    try:
        mode.pass_plan(opts)
    except ValueError as e:
        raise OptionError(str(e)) from None
    step = plan_step(opts)  # k where a pass of the plan takes k crops per image, else 1
    if t['batch_size'] % step:
        raise OptionError(f"--training.batch_size={t['batch_size']} counts crops and must be a "
                          f"multiple of --fkd.num_crops={step}")
    largest = largest_batch(opts)
    if largest is not None and t['batch_size'] > largest:
        images, world = beton_samples(data['train_dataset']), os.environ.get('WORLD_SIZE', '1')
        where = f"{images} images of {data['train_dataset']}" + (
            f", shared by {world} processes," if world != '1' else '')
        raise OptionError(f"--training.batch_size={t['batch_size']}: a pass over the {where} "
                          f"holds fewer than {step} step(s) of {t['batch_size']} crops ({step} "
                          f"per image); set --training.batch_size={largest} or less"
                          if largest >= step else f"{data['train_dataset']} has {images} "
                          f"images, too few for the {step} crops per image of "
                          f"--fkd.num_crops={step} per process")
    wanted, classes = opts['model']['num_classes'], read_manifest(
        data['train_dataset']).classes
    if wanted and classes and wanted != len(classes):
        raise OptionError(f"--model.num_classes={wanted} but {data['train_dataset']} has "
                          f"{len(classes)} classes (0 takes the data set's)")
    for key in ('min_res', 'max_res'):
        if r[key] % r['round_to']:
            raise OptionError(f"--resolution.{key}={r[key]} is not a multiple of "
                              f"--resolution.round_to={r['round_to']}")
    if mode.needs_teacher and not opts['fkd']['teacher']:
        raise OptionError(f"{t['mode']} mode needs --fkd.teacher")
    if mode.needs_teacher:
        check_teacher_files('--fkd.teacher', opts['fkd']['teacher'])
    described = manifest.records(mode.record_field) or Records()
    check_records(k, described.num_records, data['train_dataset'])
    if described.dim and opts['ssl']['dim'] not in (0, described.dim):
        raise OptionError(f"--ssl.dim={opts['ssl']['dim']}: the student's projection head must "
                          f"have the {described.dim} dimensions of the teacher embeddings in "
                          f"{data['train_dataset']}")
    check_same_classes(data['train_dataset'], data['val_dataset'])


def recorded_config(opts: dict) -> str:
    """The config.json that --eval-only and --resume take the run's options from: beside
    --training.checkpoint when that is given, else in the run folder."""
    t = opts['training']
    folder = os.path.dirname(t['checkpoint']) if t['eval_only'] and t['checkpoint'] else \
        run_folder(opts)
    return os.path.join(folder or '.', 'config.json')


def check_run_to_continue(opts: dict) -> None:
    """--eval-only and --resume need the run they continue: its folder and checkpoint (or
    --training.checkpoint), named before any option the run would have given."""
    t, folder = opts['training'], run_folder(opts)
    if not (t['eval_only'] or t['resume']):
        return
    switch = '--eval-only' if t['eval_only'] else '--resume'
    fix = ("give --logging.folder of a run, or --training.checkpoint" if t['eval_only'] else
           "nothing to resume; --logging.folder names the run")
    if t['eval_only'] and t['checkpoint']:
        if not os.path.isfile(t['checkpoint']):
            raise OptionError(f"--training.checkpoint={t['checkpoint']}: no such checkpoint")
        return
    if not os.path.isdir(folder):
        raise OptionError(f"{switch}: {folder}: no such run folder ({fix})")
    checkpoint = os.path.join(folder, 'checkpoint.pt')
    if not os.path.isfile(checkpoint):
        raise OptionError(f"{switch}: {folder} holds no checkpoint.pt ({fix})")


def check_arch_name(arch: str) -> None:
    """Refuse an architecture that is neither a built-in name, a family prefix, nor a
    `<module>:<function>` whose package is installed, without importing torch (a name
    registered from Python counts once models.py is loaded; timm names are checked when timm
    is loaded)."""
    import difflib
    import importlib.util
    import sys
    if arch in STUDENT_ARCHS or arch.startswith(STUDENT_PREFIXES):
        return
    models = sys.modules.get('fkd_ffcv.models.students')
    if models is not None and models.MODELS.registered(arch):
        return
    module, _, function = arch.partition(':')
    top = module.partition('.')[0]
    try:
        found = bool(top and function) and importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        close = difflib.get_close_matches(arch, STUDENT_ARCHS, n=1)
        raise OptionError(f"--model.arch={arch}: unknown architecture"
                          + (f" (did you mean {close[0]}?)" if close else "")
                          + f"; known: {', '.join(STUDENT_ARCHS)}, "
                          f"{', '.join(p + '<name>' for p in STUDENT_PREFIXES)}, or "
                          f"<module>:<function> returning a model")


def check_sections(opts: dict, name: str, mode) -> None:
    """A section that belongs to other modes (meal) must keep its defaults."""
    owned = {section for _, m in MODES.items() for section in m.sections}
    for section in sorted(owned - set(mode.sections)):
        changed = [f"--{section}.{key}={value}" for key, value in opts[section].items()
                   if value != PARAMS[section][1][key].default]
        if changed:
            owners = [n for n, m in MODES.items() if section in m.sections]
            raise OptionError(f"{', '.join(changed)}: an option of the {' and '.join(owners)} "
                              f"mode(s), not of {name} mode")


def check_same_classes(train: str, val: str) -> None:
    """A training and a validation beton must name the same classes in the same order (their
    manifests say; a beton without one is judged when the trainer opens it). A DataError
    (exit 1): the options are fine, the files do not belong together."""
    ours, theirs = (read_manifest(path).classes for path in (train, val))
    if ours is not None and theirs is not None and ours != theirs:
        differ = next((f"class {i}: {a!r} against {b!r}" for i, (a, b) in
                       enumerate(zip(ours, theirs)) if a != b),
                      f"{len(ours)} classes against {len(theirs)}")
        raise DataError(f"--data.train_dataset={train} and --data.val_dataset={val} have "
                          f"other classes ({differ}): give betons written from the same data "
                          f"set")


def check_writing(data: dict, write: dict, labels: dict) -> None:
    """write_dataset.py's checks between its `data`, `write` and `labels` sections, then the
    files and folders they name (so a typo fails in a fraction of a second, before ffcv)."""
    source = labels['teacher'] or labels['import_root']
    if data['source'] == 'folder' and not data['root'] and not labels['beton']:
        raise OptionError("--data.root is required with --data.source=folder")
    if labels['beton'] and not source and not labels.get('out'):
        raise OptionError(f"--labels.beton={labels['beton']}: give the labels' source, "
                          f"--labels.teacher or --labels.import_root (or only --labels.out "
                          f"to write a copy without its crop records)")
    if labels['teacher'] and labels['import_root']:
        raise OptionError("--labels.teacher and --labels.import_root both give the labels; "
                          "choose one")
    if labels.get('embedding') and not labels['teacher']:
        raise OptionError(f"--labels.embedding={labels['embedding']} stores a teacher's "
                          f"embeddings: give --labels.teacher")
    if not labels.get('embedding') and any(spec.startswith('moco:')
                                           for spec in labels['teacher'].split(',')):
        raise OptionError(f"--labels.teacher={labels['teacher']}: a MoCo checkpoint gives "
                          f"embeddings, not class scores; add --labels.embedding=auto")
    if labels.get('embedding') and labels['label_type']:
        raise OptionError(f"--labels.label_type={labels['label_type']} is a soft-label type; "
                          f"--labels.embedding stores embeddings, not soft labels")
    if labels.get('embedding') and labels.get('temperature', 1.0) != 1.0:
        raise OptionError(f"--labels.temperature={labels['temperature']}: embeddings are "
                          f"stored as they are; the self-supervised loss applies "
                          f"--ssl.temperature when training")
    if labels['scale_min'] and not labels['scale_max']:
        raise OptionError(f"--labels.scale_min={labels['scale_min']} needs --labels.scale_max "
                          f"(0 keeps FKD's default range)")
    if labels['scale_max'] and labels['scale_min'] > labels['scale_max']:
        raise OptionError(f"--labels.scale_min={labels['scale_min']} is above "
                          f"--labels.scale_max={labels['scale_max']}")
    if source and not labels['beton'] and data['split'] == 'val':
        raise OptionError("crop records go into the train split, which --data.split=val does "
                          "not write (label a beton with --labels.beton)")
    if int(os.environ.get('WORLD_SIZE', 1)) > 1 and not labels['beton'] and source:
        raise OptionError("under torchrun, write the images first, then label them with "
                          "--labels.beton")
    check_writing_paths(data, labels)
    if labels['beton']:
        check_beton(labels['beton'])  # DataError (exit 1), before any teacher loads
    if source and labels.get('label_type') and not labels.get('embedding'):
        check_label_type(labels['label_type'], data, labels)
    check_outputs(data, write, labels)


def written_betons(data: dict) -> dict:
    """{split: the beton fkd-write writes for it}: <out_dir>/<name>_<split>.beton."""
    fashion = data['source'] == 'fashion-mnist'
    name = data['name'] or ('fashion_mnist' if fashion else
                            Path(data['root'] or FASHION_MNIST_DIR).resolve().name)
    splits = ['train', 'val'] if data['split'] == 'all' else [data['split']]
    return {split: Path(data['out_dir']) / f"{name}_{split}.beton" for split in splits}


def check_outputs(data: dict, write: dict, labels: dict) -> None:
    """Betons this command would write must not exist yet, unless --overwrite says to replace
    them (write.overwrite)."""
    if write.get('overwrite'):
        return
    source = labels['teacher'] or labels['import_root']
    outputs = [] if labels['beton'] else [(path, '--data.out_dir or --data.name')
                                          for path in written_betons(data).values()]
    if labels['beton'] or (source and data['split'] != 'val'):
        beton = labels['beton'] or written_betons(data)['train']
        outputs.append((labelled_beton(labels, beton), '--labels.out'))
    for path, other in outputs:
        if path.exists():
            written = read_manifest(path).written_at
            raise OptionError(f"{path} exists{f' (written {written})' if written else ''}: give "
                              f"--overwrite to replace it, or another {other}")


def check_label_type(label_type: str, data: dict, labels: dict) -> None:
    """An explicit --labels.label_type must be possible for the class count of the beton to
    label (its manifest, or the class folders about to be written)."""
    if labels['beton']:
        where, classes = labels['beton'], len(read_manifest(labels['beton']).classes or [])
    elif data['source'] == 'folder':
        where = os.path.join(data['root'], 'train')
        classes = sum(entry.is_dir() for entry in os.scandir(where))
    else:
        where, classes = 'Fashion-MNIST', 10
    if classes:
        try:
            LabelSpec.parse(label_type, classes)
        except ValueError as e:
            raise OptionError(f"--labels.label_type: {e} ({where}); without the option, "
                              f"{default_label_type(classes)} is chosen from the class "
                              f"count") from None


def check_writing_paths(data: dict, labels: dict) -> None:
    """write_dataset.py: the beton to label, the FKD tree to import and the data root must be
    there, laid out as their source reads them."""
    layout = "<root>/train/<class>/<image> (val likewise)"
    # sources.FashionMNISTSource's image files (sources.py loads cv2, so they are named here)
    fashion_images = {'train': 'train-images-idx3-ubyte.gz', 'val': 't10k-images-idx3-ubyte.gz'}
    if labels['beton']:
        if not os.path.isfile(labels['beton']):
            raise OptionError(f"--labels.beton={labels['beton']}: no such file (write the "
                              f"images first: python write_dataset.py --data.source=...)")
    check_teacher_files('--labels.teacher', labels['teacher'])
    if labels['import_root'] and not os.path.isdir(labels['import_root']):
        raise OptionError(f"--labels.import_root={labels['import_root']}: no such directory "
                          f"(FKD's tree: <import_root>/train/<class>/<image stem>.tar)")
    if labels['beton']:
        return  # no images are written
    splits = ['train', 'val'] if data['split'] == 'all' else [data['split']]
    root = data['root']
    if data['source'] == 'folder':
        if not os.path.isdir(root):
            raise OptionError(f"--data.root={root}: no such directory; a folder source is laid "
                              f"out as {layout}")
        for split in splits:
            folder = os.path.join(root, split)
            if not os.path.isdir(folder):
                raise OptionError(f"--data.root={root} has no {split}/ folder; a folder source "
                                  f"is laid out as {layout}")
            with os.scandir(folder) as entries:
                if not any(entry.is_dir() for entry in entries):
                    raise OptionError(f"{folder} has no class folders; a folder source is laid "
                                      f"out as {layout}")
    elif root:  # fashion-mnist from another folder than the Debian package's
        missing = [fashion_images[split] for split in splits
                   if not os.path.isfile(os.path.join(root, fashion_images[split]))]
        if missing:
            raise OptionError(f"--data.root={root} does not hold Fashion-MNIST ({missing[0]}) "
                              f"and --data.source is fashion-mnist (the default); for images "
                              f"laid out as {layout}, the source must be folder: "
                              f"--data.source=folder")


def check_teacher_files(option: str, specs: str) -> None:
    """The files a teacher spec names (checkpoint:<file>, torchscript:<file>,
    torchvision:<arch>:<file>, timm:<name>:<file>, moco:<arch>:<file>; teachers.py reads them)
    must be there."""
    for spec in filter(None, specs.split(',')):
        kind, _, rest = spec.partition(':')
        path = {'checkpoint': rest, 'torchscript': rest, 'torchvision': rest.partition(':')[2],
                'timm': rest.partition(':')[2], 'moco': rest.partition(':')[2]}.get(kind)
        if path and not os.path.isfile(path):
            raise OptionError(f"{option}={spec}: {path}: no such file")
