"""The speed-run trainer: FKD (soft labels replayed from the beton), plain (hard labels) and
online KD (a teacher forward on every batch), as one class with a method per concern.

Options are fastargs sections (`PARAMS`); `options()` gives them as a dict for Python use and
`train_imagenet.py` reads them from YAML and the command line. Units (DESIGN-NOTES section 6):
an epoch is as many crops as the training set has images; with K crops per image a pass over
the images is K epochs; the batch size counts crops; schedules are written in epochs and
evaluated every step; progressive resizing changes at pass boundaries.

Run folder (`logging.folder`): `config.json` (the effective options), `log.jsonl` (a JSON line
per epoch; validation results on the lines that end an evaluated pass), `checkpoint.pt`
(written atomically after every pass), `final_weights.pt` (plain weights, see models.py) and
`summary.json`.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from fastargs import Param, Section
from fastargs.validation import And, InRange, OneOf

from .config import Flag
from .devices import (PRECISIONS, autocast_dtype, local_device, resolve_backend,
                      resolve_precision)
from .files import atomic_write
from .models import ARCHS, build_model, save_weights, unwrap
from .schedules import LR_SCHEDULES, ema_decay, lr_factor, resolution
from .soft_labels import dense_cross_entropy

MODES = ('fkd', 'plain', 'online_kd')
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CHECKPOINT_FORMAT = 'fkd-ffcv checkpoint 1'
# Options that may change when a run is resumed; any other change is refused.
RESUMABLE_CHANGES = {('training', 'resume'), ('data', 'num_workers'), ('logging', 'progress'),
                     ('training', 'checkpoint'), ('training', 'eval_only')}

PARAMS = {
    'data': ('the betons', dict(
        train_dataset=Param(str, 'training beton (FKD mode: with crop records)', default=''),
        val_dataset=Param(str, 'validation beton', default=''),
        num_workers=Param(int, 'loader threads (-1: every core)', default=-1),
        crop_scale_min=Param(And(float, InRange(0, 1)), 'plain / online KD: RandomResized'
                             'Crop area range (FKD replays the recorded crops)', default=0.08),
        crop_scale_max=Param(And(float, InRange(0, 1)), 'upper bound of that range',
                         default=1.0),
    )),
    'model': ('the student', dict(
        arch=Param(OneOf(ARCHS), 'architecture', default='resnet50'),
        num_classes=Param(And(int, InRange(min=0)), 'class count (0: the data set\'s)',
                          default=0),
        small_input=Param(Flag(), 'torchvision ResNets: CIFAR stem for ~32 px inputs',
                          default=False),
        width=Param(And(int, InRange(min=1)), 'small_resnet base width / vit width',
                    default=16),
        depth=Param(And(int, InRange(min=1)), 'small_resnet blocks per stage / vit blocks',
                    default=2),
        heads=Param(And(int, InRange(min=1)), 'vit attention heads', default=3),
        patch_size=Param(And(int, InRange(min=1)), 'vit patch side', default=4),
        image_size=Param(And(int, InRange(min=1)), 'vit: side its position embeddings are '
                         'learnt for (others are interpolated)', default=224),
        drop_path=Param(And(float, InRange(0, 1)), 'vit stochastic depth rate', default=0.0),
        blurpool=Param(Flag(), 'low-pass filter before strided convolutions', default=True),
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
        mode=Param(OneOf(MODES), 'fkd, plain or online_kd', default='fkd'),
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
        temperature=Param(And(float, InRange(min=1e-6)), 'softmax temperature of the '
                          'student in the distillation loss', default=1.0),
        teacher=Param(str, 'online_kd: teacher spec(s) (teachers.py)', default=''),
    )),
    'logging': ('outputs', dict(
        folder=Param(str, 'run folder (default: runs/<mode>_<arch>)', default=''),
        progress=Param(Flag(), 'progress bar', default=True),
    )),
    'dist': ('multi-process training under torchrun', dict(
        backend=Param(OneOf(['auto', 'nccl', 'gloo']), 'auto: nccl on CUDA, gloo on CPU',
                      default='auto'),
    )),
}
for _name, (_desc, _params) in PARAMS.items():
    Section(_name, _desc).params(**_params)


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


class TrainingError(RuntimeError):
    """A run that cannot start or go on; the message says why and what was kept."""


def _atomic_save(obj, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


class Trainer:
    """One training run (or one evaluation) from an `options()` dict.

    `Trainer(opts).run()` trains and returns the summary; `evaluate()` gives top-1/top-5 of
    the current (or averaged) weights on the validation beton."""

    def __init__(self, opts: dict):
        self.opts = opts
        self.o = {name: dict(values) for name, values in opts.items()}  # short alias
        self.setup_distributed()
        self.setup_precision()
        self.folder = Path(self.o['logging']['folder'] or
                           f"runs/{self.o['training']['mode']}_{self.o['model']['arch']}")
        self.started = time.perf_counter()

    # ---------------------------------------------------------------------------- set-up

    def setup_distributed(self):
        self.rank = int(os.environ.get('RANK', 0))
        self.world_size = int(os.environ.get('WORLD_SIZE', 1))
        local_rank = int(os.environ.get('LOCAL_RANK', 0))
        local_world = int(os.environ.get('LOCAL_WORLD_SIZE', 1))
        self.device = local_device(local_rank)
        if self.device.type == 'cuda':
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
        # Importing ffcv sets torch to one thread and every loader pass sets it to the
        # loader's thread count; the CPU model wants this many (re-applied every pass).
        self.threads = max(1, len(os.sched_getaffinity(0)) // local_world)
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group(resolve_backend(self.o['dist']['backend'], self.device,
                                                    local_world))
        self.is_main = self.rank == 0

    def setup_precision(self):
        self.precision = precision = resolve_precision(self.o['training']['precision'],
                                                       self.device)
        dtype = autocast_dtype(precision)
        self.autocast = dict(device_type=self.device.type, dtype=dtype or torch.float32,
                             enabled=dtype is not None)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == 'fp16')
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255

    def read_data(self):
        """Open the betons and check that data, labels and model agree on the classes."""
        from .beton import Beton
        from .fields import CLASSES_FIELD
        data, training = self.o['data'], self.o['training']
        for key in ('train_dataset', 'val_dataset'):
            if not data[key]:
                raise TrainingError(f"--data.{key} is required")
            if not os.path.isfile(data[key]):
                raise TrainingError(f"--data.{key}: {data[key]}: no such file")
        self.train_beton, self.val_beton = Beton(data['train_dataset']), Beton(data['val_dataset'])
        self.classes = self.train_beton.classes
        if self.val_beton.classes != self.classes:
            raise TrainingError(f"{data['val_dataset']} has {len(self.val_beton.classes)} "
                                f"classes, {data['train_dataset']} {len(self.classes)} (or "
                                f"they are named differently); both must share one list")
        self.num_classes = len(self.classes)
        wanted = self.o['model']['num_classes']
        if wanted and wanted != self.num_classes:
            raise TrainingError(f"--model.num_classes={wanted} but {data['train_dataset']} "
                                f"has {self.num_classes} classes")
        lr = self.o['lr']
        if lr['schedule'] == 'cyclic' and lr['peak_epoch'] >= training['epochs']:
            raise TrainingError(f"--lr.peak_epoch={lr['peak_epoch']} must come before the end "
                                f"of the run (--training.epochs={training['epochs']})")
        if lr['schedule'] != 'cyclic' and lr['warmup_epochs'] >= training['epochs']:
            raise TrainingError(f"--lr.warmup_epochs={lr['warmup_epochs']} must end before "
                                f"--training.epochs={training['epochs']}")
        self.label_spec = None
        if training['mode'] == 'fkd':
            if CLASSES_FIELD not in self.train_beton.fields:
                raise TrainingError(f"FKD mode needs crop records with soft labels, and "
                                    f"{data['train_dataset']} has none (fields: "
                                    f"{', '.join(self.train_beton.field_names)}); label it "
                                    f"with write_dataset.py --labels.teacher=... or use "
                                    f"--training.mode=plain")
            self.label_spec = self._label_spec()

    def _label_spec(self):
        from .soft_labels import LabelSpec
        path = self.o['data']['train_dataset']
        info = self.train_beton.manifest.get('soft_labels')
        if not info:
            raise TrainingError(f"{path}: its manifest does not describe the soft labels "
                                f"(label type); rewrite the labels with write_dataset.py")
        if info['num_classes'] != self.num_classes:
            raise TrainingError(f"{path}: the soft labels cover {info['num_classes']} classes, "
                                f"the data set has {self.num_classes}")
        self.num_records = info['num_records']
        return LabelSpec.parse(info['label_type'], info['num_classes'])

    def model_options(self) -> dict:
        m = self.o['model']
        return {'arch': m['arch'], 'small_input': m['small_input'], 'width': m['width'],
                'depth': m['depth'], 'heads': m['heads'], 'patch_size': m['patch_size'],
                'image_size': m['image_size'], 'drop_path': m['drop_path'],
                'blurpool': m['blurpool']}

    def create_model(self):
        torch.manual_seed(self.o['training']['seed'])
        self.model = build_model(num_classes=self.num_classes, **self.model_options())
        self.model = self.model.to(self.device, memory_format=torch.channels_last)
        self.ema = None
        if self.o['training']['ema_epochs'] > 0:
            import copy
            self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.train_model = self.model
        if self.world_size > 1:
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == 'cuda'
                else None)
        if self.o['training']['compile']:
            # One static graph per input side (progressive resizing has a few), not a
            # dynamic-shape graph that is slower for every side.
            self.train_model = torch.compile(self.train_model, dynamic=False)

    def create_optimizer(self):
        t = self.o['training']
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if p.ndim <= 1 or name.endswith('pos_embed') or name.endswith('cls_token')
             else decay).append(p)
        groups = [{'params': decay, 'weight_decay': t['weight_decay']},
                  {'params': no_decay, 'weight_decay': 0.0}]
        if t['optimizer'] == 'sgd':
            self.optimizer = torch.optim.SGD(groups, lr=0.0, momentum=t['momentum'])
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=0.0)

    def create_loaders(self):
        from .loaders import FKDLoader, PlainLoader, eval_loader
        data, t, v = self.o['data'], self.o['training'], self.o['validation']
        self.num_crops = self.o['fkd']['num_crops'] if t['mode'] == 'fkd' else 1
        if t['epochs'] % self.num_crops:
            raise TrainingError(f"--training.epochs={t['epochs']} is not a multiple of "
                                f"--fkd.num_crops={self.num_crops}: a pass over the images "
                                f"with K crops each is K epochs")
        if t['batch_size'] % self.num_crops:
            raise TrainingError(f"--training.batch_size={t['batch_size']} counts crops and "
                                f"must be a multiple of --fkd.num_crops={self.num_crops}")
        self.passes = t['epochs'] // self.num_crops
        r = self.o['resolution']
        for key in ('min_res', 'max_res'):
            if r[key] % r['round_to']:
                raise TrainingError(f"--resolution.{key}={r[key]} is not a multiple of "
                                    f"--resolution.round_to={r['round_to']}")
        workers = data['num_workers'] if data['num_workers'] > 0 else self.threads
        common = dict(resolution=self.resolution_at(0), seed=t['seed'], num_workers=workers,
                      distributed=self.world_size > 1)
        if t['mode'] == 'fkd':
            if self.num_crops > self.num_records:
                raise TrainingError(f"--fkd.num_crops={self.num_crops} is more than the "
                                    f"{self.num_records} crop records per image of "
                                    f"{data['train_dataset']}: a pass would repeat crops")
            self.train_loader = FKDLoader(data['train_dataset'], t['batch_size'],
                                          self.num_crops, device=self.device, **common)
            used = self.passes * self.num_crops
            if used > self.num_records and self.is_main:
                print(f"note: {t['epochs']} epochs use {used} crops per image; "
                      f"{data['train_dataset']} holds {self.num_records} records per image, "
                      f"so records are reused", file=sys.stderr)
        else:
            self.train_loader = PlainLoader(data['train_dataset'], t['batch_size'],
                                            scale=(data['crop_scale_min'],
                                                   data['crop_scale_max']),
                                            device=self.device, **common)
        self.steps_per_pass = len(self.train_loader)
        if self.steps_per_pass < self.num_crops:
            raise TrainingError(f"{data['train_dataset']}: a pass of its {len(self.train_beton)} "
                                f"images gives {self.steps_per_pass} step(s) of "
                                f"{t['batch_size'] // self.num_crops} images per process, "
                                f"fewer than the {self.num_crops} epochs it must hold; lower "
                                f"--training.batch_size")
        self.val_loader = eval_loader(data['val_dataset'], v['batch_size'], v['resolution'],
                                      v['ratio'], workers, str(self.device), self.rank,
                                      self.world_size)

    def create_teacher(self):
        self.teacher = None
        if self.o['training']['mode'] != 'online_kd':
            return
        from .teachers import Teacher
        spec = self.o['fkd']['teacher']
        if not spec:
            raise TrainingError("online_kd mode needs --fkd.teacher")
        try:
            self.teacher = Teacher(spec, device=self.device, cpu_threads=self.threads,
                                   temperature=self.o['fkd']['temperature'],
                                   precision=self.precision)
        except (ValueError, FileNotFoundError) as e:
            raise TrainingError(f"--fkd.teacher: {e}") from None
        if self.teacher.num_classes != self.num_classes:
            raise TrainingError(f"--fkd.teacher {spec} predicts {self.teacher.num_classes} "
                                f"classes; the data set has {self.num_classes}")

    def check_shapes(self):
        """Run the student (and teacher) once at every input side the run will use, so that a
        model that does not fit the input fails now with the side named, not hours later."""
        sides = sorted({self.resolution_at(p) for p in range(self.passes)})
        checks = [('the student', self.model, sides + [self.o['validation']['resolution']])]
        if self.teacher is not None:
            checks.append((f"the teacher {self.o['fkd']['teacher']}", self.teacher.forward,
                           sides))
        self.model.eval()
        for who, forward, sizes in checks:
            for side in sorted(set(sizes)):
                probe = torch.zeros(2, 3, side, side, device=self.device)
                try:
                    with torch.no_grad(), torch.autocast(**self.autocast):
                        forward(probe)
                except (RuntimeError, ValueError) as e:
                    raise TrainingError(f"{who} does not accept {side} x {side} px inputs: "
                                        f"{e}") from None

    # ---------------------------------------------------------------------------- schedules

    def resolution_at(self, pass_index: int) -> int:
        r = self.o['resolution']
        return resolution(pass_index * self.num_crops,
                          min_res=r['min_res'], max_res=r['max_res'],
                          start_ramp=r['start_ramp'], end_ramp=r['end_ramp'],
                          round_to=r['round_to'])

    def lr_at(self, step: int) -> float:
        lr, t = self.o['lr'], self.o['training']
        epoch = step / self.steps_per_pass * self.num_crops
        return lr['lr'] * lr_factor(epoch, schedule=lr['schedule'], epochs=t['epochs'],
                                    warmup_epochs=lr['warmup_epochs'],
                                    peak_epoch=lr['peak_epoch'],
                                    step_length=lr['step_length'],
                                    step_ratio=lr['step_ratio'], end_factor=lr['end_factor'])

    # ---------------------------------------------------------------------------- one step

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def mix(self, images: torch.Tensor, step: int):
        """Mixup or cutmix within the batch, drawn from (seed, step) so a resumed run mixes the
        same way. Returns the mixed images, the permutation and the weight of the originals."""
        t = self.o['training']
        alphas = [(kind, a) for kind, a in (('mixup', t['mixup_alpha']),
                                             ('cutmix', t['cutmix_alpha'])) if a > 0]
        if not alphas:
            return images, None, 1.0
        rng = np.random.default_rng([t['seed'], self.rank, step])
        kind, alpha = alphas[rng.integers(len(alphas))]
        lam = float(rng.beta(alpha, alpha))
        generator = torch.Generator(device=images.device)
        generator.manual_seed(int(rng.integers(2 ** 62)))  # on the device: no copy, no sync
        perm = torch.randperm(images.shape[0], generator=generator, device=images.device)
        if kind == 'mixup':
            return lam * images + (1 - lam) * images[perm], perm, lam
        h, w = images.shape[-2:]
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        images = images.clone()
        images[:, :, y0:y1, x0:x1] = images[perm][:, :, y0:y1, x0:x1]
        return images, perm, 1 - (y1 - y0) * (x1 - x0) / (h * w)

    def loss(self, logits, batch, images255, perm, lam):
        """The mode's loss. With mixing, FKD and plain targets are mixed with weight `lam`
        (linear in the target, so lam * L(a) + (1 - lam) * L(b)); online KD asks the teacher
        about the mixed image itself."""
        from .soft_labels import soft_cross_entropy
        mode, temperature = self.o['training']['mode'], self.o['fkd']['temperature']
        if mode == 'online_kd':
            with torch.no_grad():
                q = self.teacher.forward(images255)
            return dense_cross_entropy(logits, q, temperature)
        if mode == 'fkd':
            _, classes, probs, _ = batch
            def one(idx):
                return soft_cross_entropy(logits, classes[idx], probs[idx], self.label_spec,
                                          temperature)
        else:
            labels = batch[1]
            def one(idx):
                return F.cross_entropy(logits.float(), labels[idx],
                                       label_smoothing=self.o['training']['label_smoothing'])
        everything = slice(None)
        return one(everything) if perm is None else \
            lam * one(everything) + (1 - lam) * one(perm)

    def train_step(self, batch, step: int, totals: torch.Tensor):
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group['lr'] = lr
        images255 = batch[0].float()  # the loaders deliver on self.device
        hard = batch[-1]
        images255, perm, lam = self.mix(images255, step)
        with torch.autocast(**self.autocast):
            logits = self.train_model(self.normalise(images255))
        loss = self.loss(logits, batch, images255, perm, lam)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.update_ema()
        n, loss = hard.shape[0], loss.detach().float()
        totals[0] += loss * n  # device-side sums: no host synchronisation in the step
        totals[1] += (logits.detach().argmax(-1) == hard).sum()
        totals[2] += n
        totals[3] += (~torch.isfinite(loss)).float()
        return lr

    @torch.no_grad()
    def update_ema(self):
        ema_params = list(self.ema.parameters())
        torch._foreach_lerp_(ema_params, list(self.model.parameters()), 1 - self.ema_decay)
        for mine, theirs in zip(self.ema.buffers(), self.model.buffers()):
            if mine.is_floating_point():  # BatchNorm statistics are averaged too
                mine.lerp_(theirs, 1 - self.ema_decay)
            else:
                mine.copy_(theirs)

    # ---------------------------------------------------------------------------- loops

    def train_pass(self, p: int) -> None:
        """One pass over the images (K epochs); logs a line at every epoch boundary."""
        from tqdm import tqdm
        k, steps = self.num_crops, self.steps_per_pass
        side = self.resolution_at(p)
        self.train_loader.set_resolution(side)
        torch.manual_seed(self.o['training']['seed'] * 1_000_003 + 1000 * p + self.rank)
        self.train_model.train()
        bounds = [round((e + 1) * steps / k) for e in range(k)]  # step ending each epoch
        bar = tqdm(total=steps, desc=f"pass {p + 1}/{self.passes} ({side} px)", unit='step',
                   disable=not (self.is_main and self.o['logging']['progress']), leave=False)
        totals = torch.zeros(4, device=self.device)
        epoch_start, wait, i = time.perf_counter(), 0.0, 0
        iterator = iter(self.train_loader)
        while True:
            t0 = time.perf_counter()
            batch = next(iterator, None)
            wait += time.perf_counter() - t0
            if batch is None:
                break
            if i == 0 and self.device.type == 'cpu':
                torch.set_num_threads(self.threads)
            lr = self.train_step(batch, p * steps + i, totals)
            i += 1
            bar.update(1)
            if i in bounds:
                epoch = p * k + bounds.index(i) + 1
                line = self.epoch_line(epoch, totals, lr, epoch_start, wait, side)
                bar.set_postfix(loss=f"{line['loss']:.3f}", crops_s=f"{line['crops_per_s']:,.0f}")
                if epoch % k or not self.evaluate_now(p):
                    self.log(line)
                else:
                    self.pending = line
                totals.zero_()
                epoch_start, wait = time.perf_counter(), 0.0
        bar.close()

    def epoch_line(self, epoch, totals, lr, epoch_start, wait, side) -> dict:
        """The epoch's log line; reading the device-side sums waits for the queued steps, so
        the epoch's time is taken after it."""
        if self.world_size > 1:
            dist.all_reduce(totals)
        loss_sum, correct, n, bad = totals.tolist()
        seconds = time.perf_counter() - epoch_start
        if bad:
            raise TrainingError(f"the loss became NaN or infinite in epoch {epoch}; the last "
                                f"good checkpoint is {self.folder / 'checkpoint.pt'} (lower "
                                f"--lr.lr, or try --training.precision=fp32)")
        return {'epoch': epoch, 'loss': loss_sum / n, 'train_top1': correct / n, 'lr': lr,
                'resolution': side, 'crops': int(n), 'seconds': seconds,
                'crops_per_s': n / seconds,
                'data_wait': wait / seconds}

    @torch.no_grad()
    def sync_buffers(self) -> None:
        """Average BatchNorm statistics over the ranks: each rank updated them on its own
        batches, so without this the ranks would validate and save different models."""
        if self.world_size == 1:
            return
        for model in (self.model, self.ema):
            for buffer in ([] if model is None else model.buffers()):
                if buffer.is_floating_point():
                    dist.all_reduce(buffer)
                    buffer /= self.world_size

    def evaluate_now(self, p: int) -> bool:
        every = self.o['validation']['every_passes']
        return p + 1 == self.passes or (every > 0 and (p + 1) % every == 0)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Top-1, top-5 and loss of the averaged weights (if any) or the model, over the whole
        validation beton (ranks read disjoint shards; counts are summed)."""
        model = self.ema if self.ema is not None else unwrap(self.model)
        model.eval()
        tta = self.o['validation']['lr_tta']
        totals = torch.zeros(4, device=self.device)
        first = True
        for images, labels in self.val_loader:
            if first and self.device.type == 'cpu':
                torch.set_num_threads(self.threads)
                first = False
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True).long()
            x = self.normalise(images.float())
            with torch.autocast(**self.autocast):
                logits = model(x).float()
                if tta:
                    logits = (logits + model(torch.flip(x, dims=[3])).float()) / 2
            top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
            totals[0] += F.cross_entropy(logits, labels, reduction='sum')
            totals[1] += (top5[:, 0] == labels).sum()
            totals[2] += (top5 == labels[:, None]).any(1).sum()
            totals[3] += labels.shape[0]
        if self.world_size > 1:
            dist.all_reduce(totals)
        loss_sum, top1, top5, n = totals.tolist()
        return {'top1': top1 / n, 'top5': top5 / n, 'val_loss': loss_sum / n,
                'val_images': int(n)}

    # ---------------------------------------------------------------------------- state

    def checkpoint_state(self, passes_done: int) -> dict:
        return {'format': CHECKPOINT_FORMAT, 'passes_done': passes_done,
                'world_size': self.world_size,
                'model': self.model.state_dict(),
                'ema': None if self.ema is None else self.ema.state_dict(),
                'optimizer': self.optimizer.state_dict(), 'scaler': self.scaler.state_dict(),
                'history': self.history, 'options': self.opts, 'classes': self.classes,
                'model_options': self.model_options(), 'num_classes': self.num_classes}

    def save_checkpoint(self, passes_done: int) -> None:
        if self.is_main:
            _atomic_save(self.checkpoint_state(passes_done), self.folder / 'checkpoint.pt')

    def read_checkpoint(self) -> dict:
        """The folder's checkpoint, refused if it belongs to a run with other options."""
        path = self.folder / 'checkpoint.pt'
        if not path.is_file():
            raise TrainingError(f"--resume: {path} does not exist (nothing to resume)")
        state = torch.load(path, map_location=self.device, weights_only=False)
        if not isinstance(state, dict) or state.get('format') != CHECKPOINT_FORMAT:
            raise TrainingError(f"{path} is not a fkd-ffcv checkpoint")
        changed = [f'{s}.{k}' for s, values in self.opts.items() for k, v in values.items()
                   if (s, k) not in RESUMABLE_CHANGES
                   and state['options'].get(s, {}).get(k) != v]
        if changed:
            raise TrainingError(f"--resume: options differ from the checkpointed run's: "
                                f"{', '.join(changed)} (resume with the same options)")
        if state.get('world_size', 1) != self.world_size:
            raise TrainingError(f"--resume: {path} was written by a run of "
                                f"{state.get('world_size', 1)} process(es), this one has "
                                f"{self.world_size}; batch sizes are per process, so the run "
                                f"would change (resume with the same process count)")
        return state

    def restore(self, state: dict) -> int:
        """Load a checkpoint's weights, optimiser and log; returns the passes it finished."""
        self.model.load_state_dict(state['model'])
        if self.ema is not None:
            self.ema.load_state_dict(state['ema'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.scaler.load_state_dict(state['scaler'])
        self.history = state['history']
        if self.is_main:  # drop lines of the interrupted pass
            _atomic_write_text(self.folder / 'log.jsonl',
                               ''.join(json.dumps(line) + '\n' for line in self.history))
        return state['passes_done']

    def export(self) -> Path:
        """Plain weights (averaged, if averaging) with what a teacher or a user needs to
        rebuild and feed the model (models.save_weights)."""
        path = self.folder / 'final_weights.pt'
        v = self.o['validation']
        save_weights(path, self.ema if self.ema is not None else self.model,
                     self.model_options(), self.classes,
                     {'input_size': self.resolution_at(self.passes - 1),
                      'interpolation': 'area', 'mean': list(IMAGENET_MEAN),
                      'std': list(IMAGENET_STD)},
                     validation={'resolution': v['resolution'], 'ratio': v['ratio']})
        return path

    def log(self, line: dict) -> None:
        self.history.append(line)
        if self.is_main:
            with open(self.folder / 'log.jsonl', 'a') as f:
                f.write(json.dumps(line) + '\n')
            from tqdm import tqdm
            text = '  '.join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in line.items())
            tqdm.write(text)

    # ---------------------------------------------------------------------------- runs

    def prepare(self):
        self.read_data()
        self.create_teacher()
        self.create_model()
        self.create_optimizer()
        self.create_loaders()
        self.check_shapes()
        steps_per_epoch = self.steps_per_pass / self.num_crops
        if self.ema is not None:
            self.ema_decay = ema_decay(self.o['training']['ema_epochs'], steps_per_epoch)
        self.history, self.pending = [], None

    def run(self) -> dict:
        """Train (or resume) to the end, evaluate, export; returns the summary."""
        t = self.o['training']
        if t['eval_only']:
            return self.run_eval_only()
        state = None
        if t['resume']:
            state = self.read_checkpoint()
        elif (self.folder / 'checkpoint.pt').exists():
            raise TrainingError(f"{self.folder} already holds a run; continue it with --resume "
                                f"or choose another --logging.folder")
        self.prepare()
        start = self.restore(state) if state else 0
        if self.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(self.folder / 'config.json', json.dumps(self.opts, indent=2))
            if start == 0:
                _atomic_write_text(self.folder / 'log.jsonl', '')
        self.train_loader.start_at(start)
        for p in range(start, self.passes):
            self.train_pass(p)
            self.sync_buffers()
            if self.pending is not None:
                self.pending.update(self.evaluate())
                self.log(self.pending)
                self.pending = None
            self.save_checkpoint(p + 1)
        train_seconds = sum(line['seconds'] for line in self.history)
        summary = self.summary(train_seconds)
        if self.is_main:
            self.export()
            _atomic_write_text(self.folder / 'summary.json', json.dumps(summary, indent=2))
        return summary

    def summary(self, train_seconds: float) -> dict:
        last = self.history[-1]
        crops = sum(line['crops_per_s'] * line['seconds'] for line in self.history)
        return {'mode': self.o['training']['mode'], 'arch': self.o['model']['arch'],
                'epochs': self.o['training']['epochs'], 'num_crops': self.num_crops,
                'top1': last.get('top1'), 'top5': last.get('top5'),
                'train_seconds': train_seconds, 'crops_per_s': crops / train_seconds,
                'wall_seconds': time.perf_counter() - self.started,
                'data_wait': sum(l['data_wait'] * l['seconds'] for l in self.history)
                / train_seconds,
                'device': str(self.device), 'precision': self.precision,
                'world_size': self.world_size, 'torch': torch.__version__,
                'folder': str(self.folder)}

    def run_eval_only(self) -> dict:
        """Evaluate a checkpoint.pt or final_weights.pt on the validation beton."""
        from .beton import Beton
        from .loaders import eval_loader
        path = Path(self.o['training']['checkpoint'] or self.folder / 'checkpoint.pt')
        if not path.is_file():
            raise TrainingError(f"--eval-only: {path}: no such checkpoint")
        state = torch.load(path, map_location='cpu', weights_only=False)
        if not isinstance(state, dict) or not {'classes', 'model'} <= state.keys():
            raise TrainingError(f"{path} is neither a checkpoint.pt nor a final_weights.pt")
        data, v = self.o['data'], self.o['validation']
        if not data['val_dataset'] or not os.path.isfile(data['val_dataset']):
            raise TrainingError(f"--data.val_dataset: {data['val_dataset']!r}: no such file")
        classes = Beton(data['val_dataset']).classes
        if classes != state['classes']:
            raise TrainingError(f"{path} was trained on {len(state['classes'])} classes; "
                                f"{data['val_dataset']} has {len(classes)} (or other names)")
        self.num_classes, self.classes = len(classes), classes
        if 'arch' in state:  # final_weights.pt
            from .models import load_weights
            self.model = load_weights(path)[0]
            stored = state.get('validation', {})
            if stored and (stored['resolution'], stored['ratio']) != (v['resolution'],
                                                                       v['ratio']):
                print(f"note: {path} was validated at {stored['resolution']} px, ratio "
                      f"{stored['ratio']:.3f}; evaluating at --validation.resolution="
                      f"{v['resolution']}, --validation.ratio={v['ratio']:.3f}",
                      file=sys.stderr)
        else:
            self.model = build_model(num_classes=self.num_classes, **state['model_options'])
            self.model.load_state_dict(state['ema'] if state.get('ema') else state['model'])
        self.model = self.model.to(self.device, memory_format=torch.channels_last)
        self.ema = None
        self.val_loader = eval_loader(data['val_dataset'], v['batch_size'], v['resolution'],
                                      v['ratio'], data['num_workers'], str(self.device),
                                      self.rank, self.world_size)
        return {'checkpoint': str(path), **self.evaluate()}


def print_summary(summary: dict) -> None:
    if 'checkpoint' in summary:
        print(f"{summary['checkpoint']}: top-1 {summary['top1']:.2%}  top-5 "
              f"{summary['top5']:.2%}  ({summary['val_images']} images)")
        return
    print(f"{summary['mode']} {summary['arch']}: {summary['epochs']} epochs, "
          f"top-1 {summary['top1']:.2%}, top-5 {summary['top5']:.2%}, "
          f"{summary['train_seconds']:.1f} s training, {summary['crops_per_s']:,.0f} crops/s, "
          f"{summary['data_wait']:.0%} waiting for data; run in {summary['folder']}")


def main(opts: dict) -> int:
    """The command line's body: run, print the summary; errors become exit status 1."""
    try:
        trainer = Trainer(opts)
        summary = trainer.run()
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if trainer.is_main:
        print_summary(summary)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0
