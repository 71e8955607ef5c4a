"""The speed-run trainer: one class, a method per concern, read top to bottom as set-up, the
pass, the step and the evaluation. What differs between FKD, plain training and online KD is a
mode object (modes.py); the options and every check between them are options.py; the run
folder (checkpoint, resume, export, logs) is run_folder.py; mixup and cutmix are mixing.py.

Units (docs/units.md): an epoch is as many crops as the training set has images; with K crops
per image a pass over the images is K epochs; the batch size counts crops; schedules are
written in epochs and evaluated every step; progressive resizing changes at pass boundaries.
"""
from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from fkd_ffcv.devices import autocast_dtype, local_device, resolve_backend, resolve_precision
from fkd_ffcv.models.heads import classifier_name, projection_of, with_projection
from fkd_ffcv.training.mixing import mix
from fkd_ffcv.models.exports import check_start, saved_options
from fkd_ffcv.models.students import build_model, check_arch, input_normalisation, takes_blurpool
from fkd_ffcv.models.weights import is_ssl_export, unwrap
from fkd_ffcv.training.modes import MODES
from fkd_ffcv.errors import DataError, OptionError, TrainingError
from fkd_ffcv.files import load_data
from fkd_ffcv.training.option_checks import check
from fkd_ffcv.training.options import PARAMS, PRECISE_BN_IMAGES, PRECISE_BN_STEPS, run_folder
from fkd_ffcv.progress import bar as progress_bar
from fkd_ffcv.training.run_folder import RunFolder
from fkd_ffcv.training.schedules import ema_decay, lr_factor, resolution



class Trainer:
    """One training run (or one evaluation) from an `options()` dict.

    `Trainer(opts).run()` trains and returns the summary; `evaluate()` gives top-1/top-5 of
    the current (or averaged) weights on the validation beton."""

    def __init__(self, opts: dict):
        check(opts)
        self.opts = {name: dict(values) for name, values in opts.items()}
        t = self.opts['training']
        try:  # known once models.py is loaded
            check_arch(self.opts['model']['arch'])
        except ValueError as e:
            raise OptionError(f"--model.arch: {e}") from None
        self.mode = MODES[t['mode']]()
        self.num_crops = self.mode.crops_per_image(self.opts)  # K
        self.plan = self.mode.pass_plan(self.opts)  # crops per image in each pass
        self.passes = len(self.plan)
        self.first_epoch = [sum(self.plan[:p]) for p in range(self.passes + 1)]
        self.setup_distributed()
        self.setup_precision()
        self.folder = RunFolder(run_folder(self.opts), self.is_main)
        self.bn_images, self.bn_loader = 0, None  # precise BN: chosen when training starts
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
        workers = self.opts['data']['num_workers']
        self.workers = workers if workers > 0 else self.threads  # every loader's threads
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group(resolve_backend(self.opts['dist']['backend'], self.device,
                                                    local_world))
        self.is_main = self.rank == 0

    def setup_precision(self):
        self.precision = resolve_precision(self.opts['training']['precision'], self.device)
        dtype = autocast_dtype(self.precision)
        self.autocast = dict(device_type=self.device.type, dtype=dtype or torch.float32,
                             enabled=dtype is not None)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == 'fp16')

    def set_normalisation(self, mean, std):
        """The input normalisation of uint8 images: the model's own (a pretrained model's),
        else ImageNet's."""
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255

    def prepare(self):
        self.read_data()
        self.mode.setup(self)
        self.create_model()
        self.create_optimizer()
        self.create_loaders()
        self.check_shapes()
        self.choose_precise_bn()
        if self.ema is not None:
            self.ema_decay = ema_decay(self.opts['training']['ema_epochs'],
                                       sum(self.pass_steps) / sum(self.plan))  # per epoch
        self.history = []

    def read_data(self):
        """Open the betons and check that data, labels and model agree on the classes, and
        that the training beton holds what the mode reads."""
        from fkd_ffcv.data.beton import Beton
        data = self.opts['data']
        self.train_beton, self.val_beton = Beton(data['train_dataset']), Beton(data['val_dataset'])
        self.classes = self.train_beton.classes
        if self.val_beton.classes != self.classes:
            raise DataError(f"{data['val_dataset']} has {len(self.val_beton.classes)} "
                                f"classes, {data['train_dataset']} {len(self.classes)} (or "
                                f"they are named differently); both must share one list")
        self.num_classes = len(self.classes)
        wanted = self.opts['model']['num_classes']
        if wanted and wanted != self.num_classes:
            raise TrainingError(f"--model.num_classes={wanted} but {data['train_dataset']} "
                                f"has {self.num_classes} classes")
        self.mode.check_data(self)

    def model_options(self) -> dict:
        m = self.opts['model']
        return {'arch': m['arch'], 'small_input': m['small_input'], 'width': m['width'],
                'depth': m['depth'], 'patch_size': m['patch_size'],
                'image_size': m['image_size'], 'drop_path': m['drop_path'],
                'blurpool': m['blurpool'] and takes_blurpool(m['arch'])}

    def create_model(self):
        torch.manual_seed(self.opts['training']['seed'])
        try:
            if self.mode.starts_from_weights:  # as the export stands, or not at all
                check_start(self.opts['model']['weights'], self.classes, self.model_options())
            self.model = self.mode.student(self, build_model(
                num_classes=self.num_classes, **self.model_options(),
                weights=self.opts['model']['weights'],
                new_head=not self.mode.starts_from_weights))
        except (ValueError, FileNotFoundError) as e:
            if not self.opts['model']['weights'] and ':' not in self.opts['model']['arch']:
                raise
            raise TrainingError(f"--model.arch / --model.weights: {e}") from None
        self.set_normalisation(*input_normalisation(self.model))
        self.model = self.model.to(self.device, memory_format=torch.channels_last)
        self.ema = None
        if self.opts['training']['ema_epochs'] > 0:
            self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.train_model = self.parallel(self.model)
        if self.opts['training']['compile']:
            # One static graph per input side (progressive resizing has a few), not a
            # dynamic-shape graph that is slower for every side.
            self.train_model = torch.compile(self.train_model, dynamic=False)

    def parallel(self, module: torch.nn.Module) -> torch.nn.Module:
        """`module` as it trains: under DDP when there are several processes (the student, a
        mode's discriminator), its gradients averaged over them."""
        if self.world_size == 1:
            return module
        return torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[self.device.index] if self.device.type == 'cuda' else None)

    def create_optimizer(self):
        """SGD or AdamW; no weight decay on 1-d parameters. With model.head_epochs, the
        classifier's parameters get groups of their own: only they learn in those epochs. The
        mode's own trained modules (a discriminator) come after, in groups of their own."""
        t = self.opts['training']
        head = set()
        if self.opts['model']['head_epochs'] > 0:
            name = classifier_name(self.model)
            if name is None:
                raise TrainingError("--model.head_epochs: the model has no Linear classifier "
                                    "to train on its own")
            module = projection_of(self.model) or self.model.get_submodule(name)  # ssl: all of it
            head = {id(p) for p in module.parameters()}
        groups = {}
        own = getattr(self.model, 'no_weight_decay', set)()  # timm: position, class tokens
        for name, p in self.model.named_parameters():
            flat = p.ndim <= 1 or name in own
            groups.setdefault((id(p) in head, flat), []).append(p)
        groups = [{'params': params, 'weight_decay': 0.0 if flat else t['weight_decay'],
                   'head': is_head} for (is_head, flat), params in sorted(groups.items())]
        groups += self.mode.parameter_groups(self)
        if t['optimizer'] == 'sgd':
            self.optimizer = torch.optim.SGD(groups, lr=0.0, momentum=t['momentum'])
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=0.0)

    def create_loaders(self):
        from fkd_ffcv.loading.loaders import eval_loader
        data, t, v = self.opts['data'], self.opts['training'], self.opts['validation']
        # one loader per K the plan uses (each compiles its pipeline once); options.check has
        # seen that the batch leaves every pass its K steps
        self.train_loaders = {k: self.mode.train_loader(
            self, k, resolution=self.resolution_at(0), seed=t['seed'],
            num_workers=self.workers, distributed=self.world_size > 1, resize=data['resize'])
            for k in sorted(set(self.plan))}
        self.pass_steps = [len(self.train_loaders[k]) for k in self.plan]
        self.first_step = [sum(self.pass_steps[:p]) for p in range(self.passes + 1)]
        self.val_loader = eval_loader(data['val_dataset'], v['batch_size'], v['resolution'],
                                      v['ratio'], self.workers, str(self.device), self.rank,
                                      self.world_size, data['resize'])

    def check_shapes(self):
        """Run the student (and the mode's other models) once at every input side the run
        will use, so that a model that does not fit the input fails now with the side named,
        not hours later."""
        sides = sorted({self.resolution_at(p) for p in range(self.passes)})
        checks = [('the student', self.model, sides + [self.opts['validation']['resolution']])]
        checks += [(who, forward, sides) for who, forward in self.mode.forwards()]
        self.model.eval()
        for who, forward, sizes in checks:
            for side in sorted(set(sizes)):
                probe = torch.zeros(2, 3, side, side, device=self.device)
                try:
                    with torch.no_grad(), torch.autocast(**self.autocast):
                        forward(probe)
                except (RuntimeError, ValueError, AssertionError) as e:  # timm asserts
                    raise TrainingError(f"{who} does not accept {side} x {side} px inputs: "
                                        f"{e}") from None

    # ---------------------------------------------------------------------------- schedules

    def resolution_at(self, pass_index: int) -> int:
        r = self.opts['resolution']
        return resolution(self.first_epoch[pass_index],
                          min_res=r['min_res'], max_res=r['max_res'],
                          start_ramp=r['start_ramp'], end_ramp=r['end_ramp'],
                          round_to=r['round_to'])

    def lr_at(self, epoch: float) -> float:
        lr, t = self.opts['lr'], self.opts['training']
        return lr['lr'] * lr_factor(epoch, schedule=lr['schedule'], epochs=t['epochs'],
                                    warmup_epochs=lr['warmup_epochs'],
                                    peak_epoch=lr['peak_epoch'],
                                    step_length=lr['step_length'],
                                    step_ratio=lr['step_ratio'], end_factor=lr['end_factor'])

    # ---------------------------------------------------------------------------- runs

    def run(self) -> dict:
        """Train (or resume) to the end, evaluate, export; returns the summary."""
        t = self.opts['training']
        if t['eval_only']:
            return self.run_eval_only()
        state = None
        if t['resume']:  # options.check has seen that the folder holds a run (or none)
            state = self.folder.read_checkpoint(self.opts, self.world_size, self.device)
            self.passes_done = state['passes_done']  # what a Ctrl-C from here on keeps
        self.prepare()
        start = self.restore(state) if state else 0
        if state and self.is_main:
            print(f"resuming {self.folder.path} after pass {start} of {self.passes} "
                  f"(epoch {self.first_epoch[start]} of {self.opts['training']['epochs']})")
        self.passes_done = start
        self.folder.start(self.opts, self.history)
        if start == 0 and self.opts['validation']['at_start']:
            self.log({'epoch': 0, 'seconds': 0.0, 'crops': 0, 'crops_per_s': 0.0,
                      'data_wait': 0.0, **self.evaluate()})
        for p in range(start, self.passes):
            evaluated = self.train_pass(p)
            self.sync_buffers()
            if evaluated is not None:  # the pass's last line waits for its validation
                evaluated.update(self.evaluate())
                self.log(evaluated)
            self.save_checkpoint(p + 1)
            self.passes_done = p + 1
        self.warn_if_at_chance()
        summary = self.summary()
        self.export()
        self.folder.write_summary(summary)
        return summary

    def train_pass(self, p: int):
        """One pass over the images (K epochs, K = plan[p]); logs a line at every epoch
        boundary and returns the last one, unlogged, when the pass ends with a validation."""
        k, steps, first = self.plan[p], self.pass_steps[p], self.first_epoch[p]
        side = self.resolution_at(p)
        loader = self.train_loaders[k]
        loader.start_at(p, first)  # its order, and the records of epochs first .. first + K - 1
        loader.set_resolution(side)
        torch.manual_seed(self.opts['training']['seed'] * 1_000_003 + 1000 * p + self.rank)
        self.train_model.train()
        bounds = [round((e + 1) * steps / k) for e in range(k)]  # step ending each epoch
        bar = progress_bar(self.is_main and self.opts['logging']['progress'], total=steps,
                           desc=f"pass {p + 1}/{self.passes} ({side} px)", unit='step',
                           leave=False)
        totals = torch.zeros(4 + len(self.mode.metrics), device=self.device)
        epoch_start, wait, i, evaluated = time.perf_counter(), 0.0, 0, None
        iterator = iter(loader)
        while True:
            t0 = time.perf_counter()
            batch = next(iterator, None)
            wait += time.perf_counter() - t0
            if batch is None:
                break
            if i == 0 and self.device.type == 'cpu':
                torch.set_num_threads(self.threads)
            lr = self.train_step(batch, self.first_step[p] + i, first + i * k / steps, totals)
            i += 1
            bar.update(1)
            if i in bounds:
                epoch = first + bounds.index(i) + 1
                line = self.epoch_line(epoch, totals, lr, epoch_start, wait, side)
                bar.set_postfix(loss=f"{line['loss']:.3f}", crops_s=f"{line['crops_per_s']:,.0f}")
                if epoch < first + k or not self.evaluate_now(p):  # not the pass's last
                    self.log(line)
                else:
                    evaluated = line
                totals.zero_()
                epoch_start, wait = time.perf_counter(), 0.0
        bar.close()
        return evaluated

    def train_step(self, batch, step: int, epoch: float, totals: torch.Tensor):
        """One optimiser step; `step` counts steps from the run's start (it seeds mixing),
        `epoch` is where the step lies in the schedule."""
        lr = self.lr_at(epoch)
        body_learns = epoch >= self.opts['model']['head_epochs']
        for group in self.optimizer.param_groups:
            learns = body_learns or group.get('head') or group.get('always')
            group['lr'] = lr * group.get('lr_scale', 1.0) if learns else 0.0
        t = self.opts['training']
        images, targets, hard = self.mode.unpack(batch)  # on self.device already
        images255, perm, lam = mix(images.float(), t['seed'], self.rank, step,
                                   t['mixup_alpha'], t['cutmix_alpha'])
        with torch.autocast(**self.autocast):
            logits = self.train_model(self.normalise(images255))
        loss = self.mode.loss(self, logits, targets, images255, perm, lam)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.update_ema()
        n, loss = logits.shape[0], loss.detach().float()
        totals[0] += loss * n  # device-side sums: no host synchronisation in the step
        if hard is not None:
            totals[1] += (logits.detach().argmax(-1) == hard).sum()
        totals[2] += n
        totals[3] += (~torch.isfinite(loss)).float()
        if self.mode.metrics:
            totals[4:] += self.mode.step_metrics * n
        return lr

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def update_ema(self):
        ema_params = list(self.ema.parameters())
        torch._foreach_lerp_(ema_params, list(self.model.parameters()), 1 - self.ema_decay)
        for mine, theirs in zip(self.ema.buffers(), self.model.buffers()):
            if mine.is_floating_point():  # BatchNorm statistics are averaged too
                mine.lerp_(theirs, 1 - self.ema_decay)
            else:
                mine.copy_(theirs)

    def epoch_line(self, epoch, totals, lr, epoch_start, wait, side) -> dict:
        """The epoch's log line; reading the device-side sums waits for the queued steps, so
        the epoch's time is taken after it."""
        if self.world_size > 1:
            dist.all_reduce(totals)
        (loss_sum, correct, n, bad), extra = totals[:4].tolist(), totals[4:].tolist()
        seconds = time.perf_counter() - epoch_start
        if bad:
            raise TrainingError(f"the loss became NaN or infinite in epoch {epoch}; the last "
                                f"good checkpoint is {self.folder.checkpoint} (lower "
                                f"--lr.lr, or try --training.precision=fp32)")
        return {'epoch': epoch, 'loss': loss_sum / n,
                **({'train_top1': correct / n} if self.mode.reads_labels else {}), 'lr': lr,
                'resolution': side, 'crops': int(n), 'seconds': seconds,
                'crops_per_s': n / seconds, 'data_wait': wait / seconds,
                **{name: value / n for name, value in zip(self.mode.metrics, extra)}}

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

    # ---------------------------------------------------------------------------- evaluation

    def choose_precise_bn(self) -> None:
        """How many training images each validation first recomputes the BatchNorm statistics
        on (validation.precise_bn; auto: PRECISE_BN_IMAGES in a run of fewer than
        PRECISE_BN_STEPS steps, whose running statistics still lag the weights), said in one
        line when it is on."""
        asked, steps = self.opts['validation']['precise_bn'], sum(self.pass_steps)
        norms = [m for m in unwrap(self.model).modules() if is_batchnorm(m)]
        self.bn_images = precise_bn_images(asked, steps, len(self.train_beton)) if norms else 0
        if self.bn_images and self.is_main:
            why = (f"auto: {steps} training steps, fewer than {PRECISE_BN_STEPS}, leave the "
                   f"running statistics behind the weights" if asked < 0 else
                   "--validation.precise_bn")
            print(f"precise BN: each validation first recomputes the BatchNorm statistics on "
                  f"{self.bn_images} training images ({why}; --validation.precise_bn=0 turns "
                  f"it off)", file=sys.stderr)

    @torch.no_grad()
    def recompute_bn(self) -> None:
        """Precise BatchNorm (as pycls and detectron2 do): the running statistics of the
        evaluated model (the weight average, if any) become the plain average of their batch
        statistics over `bn_images` training crops (random-resized, at the current training
        side) at the current weights, since running averages over the last steps lag weights
        that still move fast. Only the BatchNorm layers are in training mode, there are no
        gradients, and momentum and step counts are restored after; under DDP each rank reads
        its share of the images and the ranks average their statistics."""
        from fkd_ffcv.loading.loaders import PlainLoader
        data, t = self.opts['data'], self.opts['training']
        per_process = -(-self.bn_images // self.world_size)
        batch = min(t['batch_size'], per_process)
        if self.bn_loader is None:  # compiled once, at the first validation
            self.bn_loader = PlainLoader(
                data['train_dataset'], batch, resolution=self.resolution_at(0),
                seed=t['seed'] + 1, num_workers=self.workers, distributed=self.world_size > 1,
                scale=(data['crop_scale_min'], data['crop_scale_max']), device=self.device,
                labels=False, resize=data['resize'])
        side = self.resolution_at(min(self.passes_done, self.passes - 1))
        self.bn_loader.start_at(self.passes_done)
        self.bn_loader.set_resolution(side)
        model = self.ema if self.ema is not None else unwrap(self.model)
        norms = [m for m in model.modules() if is_batchnorm(m)]
        kept = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average of the batches' statistics
            m.train()
        for i, (images, _) in enumerate(self.bn_loader):
            if i == 0 and self.device.type == 'cpu':
                torch.set_num_threads(self.threads)
            with torch.autocast(**self.autocast):
                model(self.normalise(images.float()))
            if (i + 1) * batch >= per_process:
                break
        for m, (momentum, tracked) in zip(norms, kept):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)
            m.eval()
            if self.world_size > 1:
                for buffer in (m.running_mean, m.running_var):
                    dist.all_reduce(buffer)
                    buffer /= self.world_size

    def evaluate_now(self, p: int) -> bool:
        every = self.opts['validation']['every_passes']
        return p + 1 == self.passes or (every > 0 and (p + 1) % every == 0)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Top-1, top-5 and loss of the averaged weights (if any) or the model, over the whole
        validation beton (ranks read disjoint shards; counts are summed); or the mode's own
        measures (k-NN and linear-probe top-1 of an ssl student's features). In training,
        the BatchNorm statistics are first recomputed when validation.precise_bn says so."""
        if self.bn_images:
            self.recompute_bn()
        own = self.mode.evaluate(self)
        if own is not None:
            return own
        model = self.ema if self.ema is not None else unwrap(self.model)
        model.eval()
        tta = self.opts['validation']['lr_tta']
        totals = torch.zeros(4, device=self.device)
        first = True
        batches = progress_bar(self.is_main and self.opts['logging']['progress'],
                               iterable=self.val_loader, desc='validation', unit='batch',
                               leave=False)
        for images, labels in batches:
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

    def warn_if_at_chance(self) -> None:
        """One warning line (rank 0) when the final validation is near chance while training
        accuracy is not: a short run on a small data set that did not generalise."""
        line = self.history[-1] if self.history else {}
        top1, train = line.get('top1'), line.get('train_top1')
        chance = 1 / self.num_classes
        if not self.is_main or top1 is None or train is None or \
                top1 > 1.5 * chance or train < 2 * chance:
            return
        precise_bn = ("" if self.bn_images else  # it ran: recomputing again adds nothing
                      f"--validation.precise_bn={PRECISE_BN_IMAGES} (BatchNorm statistics "
                      f"recomputed before validating), ")
        print(f"warning: validation top-1 {top1:.2%} is near chance ({chance:.2%} for "
              f"{self.num_classes} classes) while train_top1 reached {train:.2%}: the model "
              f"did not generalise from this small data set ({len(self.train_beton)} training "
              f"images); try more --training.epochs, a smaller --training.batch_size, "
              f"{precise_bn}or a pretrained --model.weights", file=sys.stderr)

    def run_eval_only(self) -> dict:
        """Evaluate a checkpoint.pt or final_weights.pt on the validation beton: top-1 and
        top-5 of a classifier, k-NN and linear-probe top-1 of an ssl student (its mode's
        measures), each only in a mode of its kind."""
        from fkd_ffcv.data.beton import Beton
        from fkd_ffcv.loading.loaders import eval_loader
        path = Path(self.opts['training']['checkpoint'] or self.folder.checkpoint)
        try:
            state = load_data(path)
        except ValueError as e:
            raise TrainingError(str(e)) from None
        if not isinstance(state, dict) or not {'classes', 'model'} <= state.keys():
            raise TrainingError(f"{path} is neither a checkpoint.pt nor a final_weights.pt")
        trained_as = state.get('options', {}).get('training', {}).get('mode')  # a checkpoint's
        embeds = is_ssl_export(state) or (trained_as in MODES and MODES[trained_as].probes)
        export = path if 'arch' in state else path.with_name('final_weights.pt')
        mode = self.opts['training']['mode']
        if embeds and not self.mode.probes:
            raise OptionError(f"{path} holds an embedding model (ssl mode) without a "
                              f"classifier: evaluate it with --training.mode=ssl (k-NN and "
                              f"linear-probe top-1), or fkd-probe {export} <train beton> "
                              f"<val beton>")
        if self.mode.probes and not embeds:
            raise OptionError(f"{path} holds a classifier (trained in "
                              f"{trained_as or 'a classifier'} mode), and --training.mode="
                              f"{mode} measures embedding models: leave --training.mode={mode} "
                              f"out for its top-1 and top-5 (or give --training.mode="
                              f"{trained_as or 'plain'}), or measure its features with "
                              f"fkd-probe {export} <train beton> <val beton>")
        data, v = self.opts['data'], self.opts['validation']
        classes = Beton(data['val_dataset']).classes
        if classes != state['classes']:
            raise TrainingError(f"{path} was trained on {len(state['classes'])} classes; "
                                f"{data['val_dataset']} has {len(classes)} (or other names)")
        self.num_classes, self.classes = len(classes), classes
        if 'arch' in state:  # final_weights.pt
            from fkd_ffcv.models.exports import load_weights
            self.model, preprocess, _ = load_weights(path)
            self.set_normalisation(preprocess['mean'], preprocess['std'])
            stored = {'resize': 'area', **state.get('validation', {})}  # older: INTER_AREA
        else:
            weights = state['ema'] if state.get('ema') else state['model']
            self.model = build_model(num_classes=self.num_classes,
                                     **saved_options(state['model_options']))
            if embeds:  # the student's classifier became a projection head of these sizes
                head = classifier_name(self.model)
                self.model = with_projection(self.model, weights[f'{head}.2.weight'].shape[0],
                                             weights[f'{head}.0.weight'].shape[0])
            self.model.load_state_dict(weights)
            self.set_normalisation(*input_normalisation(self.model))
            stored = {**state['options']['validation'],
                      'resize': state['options']['data'].get('resize', 'area')}
        for key in ('resolution', 'ratio'):  # as the run validated, unless given otherwise
            if key in stored and v[key] == PARAMS['validation'][1][key].default:
                v[key] = stored[key]
        if data['resize'] == PARAMS['data'][1]['resize'].default:
            data['resize'] = stored['resize']
        if self.is_main:
            print(f"evaluating {path} at {v['resolution']} px, ratio {v['ratio']:.3f}, "
                  f"{data['resize']} resize, as the run validated (--validation.resolution, "
                  f"--validation.ratio, --data.resize at other than their defaults change it)")
        self.model = self.model.to(self.device, memory_format=torch.channels_last)
        self.ema = None
        self.val_loader = eval_loader(data['val_dataset'], v['batch_size'], v['resolution'],
                                      v['ratio'], self.workers, str(self.device),
                                      self.rank, self.world_size, data['resize'])
        return {'checkpoint': str(path), **self.evaluate()}

    # ---------------------------------------------------------------------------- state

    def save_checkpoint(self, passes_done: int) -> None:
        self.folder.save_checkpoint({
            'passes_done': passes_done, 'world_size': self.world_size,
            'model': self.model.state_dict(),
            'ema': None if self.ema is None else self.ema.state_dict(),
            'optimizer': self.optimizer.state_dict(), 'scaler': self.scaler.state_dict(),
            'mode': self.mode.state_dict(), 'history': self.history, 'options': self.opts,
            'classes': self.classes, 'model_options': self.model_options(),
            'num_classes': self.num_classes})

    def restore(self, state: dict) -> int:
        """Load a checkpoint's weights, optimiser, mode state and log; returns the passes it
        finished."""
        self.model.load_state_dict(state['model'])
        if self.ema is not None:
            self.ema.load_state_dict(state['ema'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.scaler.load_state_dict(state['scaler'])
        if state.get('mode'):
            self.mode.load_state_dict(state['mode'])
        self.history = state['history']
        return state['passes_done']

    def export(self) -> Path:
        """Plain weights (averaged, if averaging) with what a teacher or a user needs to
        rebuild and feed the model (models.save_weights)."""
        v = self.opts['validation']
        return self.folder.export(self.ema if self.ema is not None else self.model,
                                  self.model_options(), self.classes,
                                  {'input_size': self.resolution_at(self.passes - 1),
                                   'interpolation': self.opts['data']['resize'], **dict(zip(
                                       ('mean', 'std'), map(list, input_normalisation(
                                           self.model))))},
                                  validation={'resolution': v['resolution'],
                                              'ratio': v['ratio'],
                                              'resize': self.opts['data']['resize'],
                                              'lr_tta': v['lr_tta'],
                                              'precision': self.precision})

    def log(self, line: dict) -> None:
        self.history.append(line)
        self.folder.append_log(line)
        if self.is_main:
            tqdm.write('  '.join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in line.items()))

    def summary(self) -> dict:
        train_seconds = sum(line['seconds'] for line in self.history)
        last = self.history[-1]
        crops = sum(line['crops_per_s'] * line['seconds'] for line in self.history)
        return {'mode': self.opts['training']['mode'], 'arch': self.opts['model']['arch'],
                'epochs': self.opts['training']['epochs'], 'num_crops': self.num_crops,
                'top1': last.get('top1'), 'top5': last.get('top5'),
                **{key: last[key] for key in ('knn_top1', 'probe_top1') if key in last},
                'train_seconds': train_seconds, 'crops_per_s': crops / train_seconds,
                'wall_seconds': time.perf_counter() - self.started,
                'data_wait': sum(l['data_wait'] * l['seconds'] for l in self.history)
                / train_seconds,
                'device': str(self.device), 'precision': self.precision,
                'world_size': self.world_size, 'torch': torch.__version__,
                'folder': str(self.folder.path)}


def precise_bn_images(asked: int, steps: int, images: int) -> int:
    """validation.precise_bn resolved for a run of `steps` steps over `images` images: the
    number asked for, or (-1, auto) PRECISE_BN_IMAGES in a run of fewer than PRECISE_BN_STEPS
    steps and none in a longer one; at most the images there are."""
    wanted = asked if asked >= 0 else PRECISE_BN_IMAGES if steps < PRECISE_BN_STEPS else 0
    return min(wanted, images)


def is_batchnorm(module: torch.nn.Module) -> bool:
    """A BatchNorm layer that keeps running statistics (what precise BN recomputes)."""
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and \
        module.track_running_stats


def print_summary(summary: dict) -> None:
    if 'checkpoint' in summary:
        scores = (f"top-1 {summary['top1']:.2%}  top-5 {summary['top5']:.2%}"
                  if 'top1' in summary else
                  f"k-NN top-1 {summary['knn_top1']:.2%}" + (
                      f"  linear-probe top-1 {summary['probe_top1']:.2%}"
                      if 'probe_top1' in summary else ''))
        print(f"{summary['checkpoint']}: {scores}  ({summary['val_images']} images)")
        return
    scores = (f"top-1 {summary['top1']:.2%}, top-5 {summary['top5']:.2%}"
              if summary['top1'] is not None else
              ', '.join(f"{name} {summary[key]:.2%}" for name, key in
                        (('k-NN top-1', 'knn_top1'), ('linear-probe top-1', 'probe_top1'))
                        if key in summary))
    print(f"{summary['mode']} {summary['arch']}: {summary['epochs']} epochs, {scores}, "
          f"{summary['train_seconds']:.1f} s training, {summary['crops_per_s']:,.0f} crops/s, "
          f"{summary['data_wait']:.0%} waiting for data; run in {summary['folder']}")


def interrupted(trainer, argv) -> str:
    """What a Ctrl-C kept, and the command that continues."""
    import shlex
    program = argv[0] if argv[0].endswith('.py') else os.path.basename(argv[0])  # fkd-train
    command = ' '.join(shlex.quote(a) for a in (['python'] if program.endswith('.py') else [])
                       + [program, *argv[1:]])
    done = getattr(trainer, 'passes_done', 0)
    if done == 0:
        return (f"interrupted before the first pass ended: nothing was kept; start again "
                f"with: {command}")
    if '--resume' not in argv and '--training.resume=true' not in argv:
        command += ' --resume'
    if trainer.world_size > 1:
        command = f"the same torchrun command ({trainer.world_size} processes) with --resume"
    return (f"interrupted: {trainer.folder.checkpoint} holds {done} of {trainer.passes} passes "
            f"(epoch {trainer.first_epoch[done]}); continue with: {command}")


def main(opts: dict, argv=None) -> int:
    """The command line's body: run, print the summary; option errors become exit status 2,
    other run errors 1, Ctrl-C 130 with what was kept. The process group (torchrun) is closed
    however the run ends."""
    trainer = None
    try:
        trainer = Trainer(opts)
        summary = trainer.run()
        if trainer.is_main:
            print_summary(summary)
        return 0
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, OptionError) else 1
    except KeyboardInterrupt:
        if trainer is None or trainer.is_main:
            print(f"\n{interrupted(trainer, list(argv or sys.argv))}", file=sys.stderr)
        return 130
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
