"""The speed-run trainer: one class, read top to bottom as set-up, the pass, the step and the
evaluation. What differs between FKD, plain training, online KD, MEAL V2 and self-supervised
distillation is a mode object (training/modes/), which reads the run through its RunContext
(context.py); the options are options.py and the checks between them option_checks.py; the
run folder is run_folder.py; the losses losses.py, the top-k count evaluation.py, the weight
average ema.py, precise BatchNorm batchnorm.py, what eval-only reads back checkpoints.py, the
end-of-run lines report.py.

Units (docs/units.md): an epoch is as many crops as the training set has images; with K crops
per image a pass over the images is K epochs; the batch size counts crops; schedules are
written in epochs and evaluated every step; progressive resizing changes at pass boundaries.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from fkd_ffcv.errors import OptionError, TrainingError
from fkd_ffcv.models.students import build_model, check_arch, input_normalisation
from fkd_ffcv.models.exports import check_start
from fkd_ffcv.models.weights import unwrap
from fkd_ffcv.progress import bar as progress_bar
from fkd_ffcv.training.batchnorm import PreciseBatchNorm
from fkd_ffcv.training.checkpoints import load_for_evaluation, model_build_options, validate_as_run
from fkd_ffcv.training.context import Normalisation, RunContext
from fkd_ffcv.training.ema import update_average, weight_average
from fkd_ffcv.training.evaluation import top_k_accuracy
from fkd_ffcv.training.mixing import mix
from fkd_ffcv.training.modes import MODES
from fkd_ffcv.training.optimizer import create_optimizer
from fkd_ffcv.training.option_checks import check
from fkd_ffcv.training.options import run_folder_path
from fkd_ffcv.training.report import interrupted, print_summary, run_summary, warn_if_at_chance
from fkd_ffcv.training.run_folder import RunFolder
from fkd_ffcv.training.schedules import ema_decay, lr_factor, resolution, step_epochs


class Trainer:
    """One training run (or one evaluation) from an `options()` dict.

    `Trainer(opts).run()` trains (or evaluates) and returns the summary. The model, loaders,
    optimiser and log are None until prepare() (run_eval_only(): the model and validation
    loader) fills them; validation_scores(), train_pass() and the checkpoints need them."""

    def __init__(self, opts: dict):
        check(opts)
        self.opts = {name: dict(values) for name, values in opts.items()}
        try:  # known once models/students.py is loaded
            check_arch(self.opts['model']['arch'])
        except ValueError as e:
            raise OptionError(f"--model.arch: {e}") from None
        self.mode = MODES[self.opts['training']['mode']]()
        self.num_crops = self.mode.crops_per_image(self.opts)  # K
        self.plan = self.mode.pass_plan(self.opts)  # crops per image in each pass
        self.passes = len(self.plan)
        self.first_epoch = [sum(self.plan[:p]) for p in range(self.passes + 1)]
        self.ctx = RunContext.build(self.opts, self.plan, self.mode.probes)
        self.folder = RunFolder(run_folder_path(self.opts), self.ctx.is_main)
        self.scaler = torch.amp.GradScaler(self.ctx.device.type,
                                           enabled=self.ctx.precision == 'fp16')
        self.model = self.train_model = self.normalise = self.optimizer = self.ema = None
        self.train_loaders = self.pass_steps = self.first_step = self.val_loader = None
        self.precise_bn = self.ema_decay = self.history = None
        self.passes_done = 0
        self.started = time.perf_counter()

    # ---------------------------------------------------------------------------- set-up

    def prepare(self):
        self.mode.check_data(self.ctx)
        self.mode.setup(self.ctx)
        self.create_model()
        self.optimizer = create_optimizer(self.model, self.opts,
                                          self.mode.parameter_groups(self.ctx))
        self.create_loaders()
        self.check_shapes()
        self.precise_bn = PreciseBatchNorm(self.ctx, self.model, sum(self.pass_steps),
                                           self.resolution_at(0))
        if self.ema is not None:
            self.ema_decay = ema_decay(self.opts['training']['ema_epochs'],
                                       sum(self.pass_steps) / sum(self.plan))  # per epoch
        self.history = []

    def create_model(self):
        m, ctx, build = self.opts['model'], self.ctx, model_build_options(self.opts)
        torch.manual_seed(self.opts['training']['seed'])
        try:
            if self.mode.starts_from_weights:  # as the export stands, or not at all
                check_start(m['weights'], ctx.classes, build)
            self.model = self.mode.student(ctx, build_model(
                num_classes=ctx.num_classes, **build, weights=m['weights'],
                new_head=not self.mode.starts_from_weights))
        except (ValueError, FileNotFoundError) as e:
            if not m['weights'] and ':' not in m['arch']:
                raise
            raise TrainingError(f"--model.arch / --model.weights: {e}") from None
        self.normalise = Normalisation(*input_normalisation(self.model), ctx.device)
        self.model = self.model.to(ctx.device, memory_format=torch.channels_last)
        if self.opts['training']['ema_epochs'] > 0:
            self.ema = weight_average(self.model)
        self.train_model = ctx.parallel(self.model)
        if self.opts['training']['compile']:
            # One static graph per input side (progressive resizing has a few), not a
            # dynamic-shape graph that is slower for every side.
            self.train_model = torch.compile(self.train_model, dynamic=False)

    def create_loaders(self):
        t, ctx = self.opts['training'], self.ctx
        # one loader per K the plan uses (each compiles its pipeline once); option_checks.check has
        # seen that the batch leaves every pass its K steps
        self.train_loaders = {k: self.mode.train_loader(
            ctx, k, resolution=self.resolution_at(0), seed=t['seed'],
            num_workers=ctx.process.workers, distributed=ctx.world_size > 1,
            resize=self.opts['data']['resize']) for k in sorted(set(self.plan))}
        self.pass_steps = [len(self.train_loaders[k]) for k in self.plan]
        self.first_step = [sum(self.pass_steps[:p]) for p in range(self.passes + 1)]
        self.val_loader = self.validation_loader()

    def validation_loader(self):
        from fkd_ffcv.loading.loaders import eval_loader
        data, v, ctx = self.opts['data'], self.opts['validation'], self.ctx
        return eval_loader(data['val_dataset'], v['batch_size'], v['resolution'], v['ratio'],
                           ctx.process.workers, str(ctx.device), ctx.rank, ctx.world_size,
                           data['resize'])

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
                probe = torch.zeros(2, 3, side, side, device=self.ctx.device)
                try:
                    with torch.no_grad(), torch.autocast(**self.ctx.autocast):
                        forward(probe)
                except (RuntimeError, ValueError, AssertionError) as e:  # timm asserts
                    raise TrainingError(f"{who} does not accept {side} x {side} px inputs: "
                                        f"{e}") from None

    # ---------------------------------------------------------------------------- schedules

    def resolution_at(self, pass_index: int) -> int:
        return resolution(self.first_epoch[pass_index], **self.opts['resolution'])

    def lr_at(self, epoch: float) -> float:
        lr, t = self.opts['lr'], self.opts['training']
        return lr['lr'] * lr_factor(epoch, schedule=lr['schedule'], epochs=t['epochs'],
                                    warmup_epochs=lr['warmup_epochs'], peak_epoch=lr['peak_epoch'],
                                    step_length=lr['step_length'], step_ratio=lr['step_ratio'],
                                    decays=step_epochs(lr['step_epochs']),
                                    end_factor=lr['end_factor'])

    # ---------------------------------------------------------------------------- runs

    def run(self) -> dict:
        """Train (or resume) to the end, evaluate, export; returns the summary."""
        if self.opts['training']['eval_only']:
            return self.run_eval_only()
        state = None
        if self.opts['training']['resume']:  # option_checks.check: the folder holds a run
            state = self.folder.read_checkpoint(self.opts, self.ctx.world_size, self.ctx.device)
            self.passes_done = state['passes_done']  # what a Ctrl-C from here on keeps
        self.prepare()
        start = self.restore(state) if state else 0
        if state and self.ctx.is_main:
            print(f"resuming {self.folder.path} after pass {start} of {self.passes} "
                  f"(epoch {self.first_epoch[start]} of {self.opts['training']['epochs']})")
        self.passes_done = start
        self.folder.start(self.opts, self.history)
        if start == 0 and self.opts['validation']['at_start']:
            self.log({'epoch': 0, 'seconds': 0.0, 'crops': 0, 'crops_per_s': 0.0,
                      'data_wait': 0.0, **self.validation_scores()})
        for p in range(start, self.passes):
            evaluated = self.train_pass(p)
            self.sync_buffers()
            if evaluated is not None:  # the pass's last line waits for its validation
                evaluated.update(self.validation_scores())
                self.log(evaluated)
            self.save_checkpoint(p + 1)
            self.passes_done = p + 1
        warn_if_at_chance(self.history, self.ctx.num_classes, len(self.ctx.train_beton),
                          self.precise_bn.images > 0, self.ctx.is_main)
        summary = run_summary(self.history, self.opts, self.num_crops,
                              time.perf_counter() - self.started, self.ctx, self.folder.path)
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
        torch.manual_seed(self.opts['training']['seed'] * 1_000_003 + 1000 * p + self.ctx.rank)
        self.train_model.train()
        bounds = [round((e + 1) * steps / k) for e in range(k)]  # step ending each epoch
        bar = progress_bar(self.ctx.progress, total=steps, leave=False, unit='step',
                           desc=f"pass {p + 1}/{self.passes} ({side} px)")
        totals = torch.zeros(4 + len(self.mode.metrics), device=self.ctx.device)
        epoch_start, wait, i, evaluated = time.perf_counter(), 0.0, 0, None
        batches = self.ctx.cpu_threads(loader)
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            wait += time.perf_counter() - t0
            if batch is None:
                break
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
        images, targets, hard = self.mode.unpack(batch)  # on the device already
        images255, perm, lam = mix(images.float(), t['seed'], self.ctx.rank, step,
                                   t['mixup_alpha'], t['cutmix_alpha'])
        with torch.autocast(**self.ctx.autocast):
            logits = self.train_model(self.normalise(images255))
        loss = self.mode.loss(self.ctx, logits, targets, images255, perm, lam)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            update_average(self.ema, self.model, self.ema_decay)
        n, loss = logits.shape[0], loss.detach().float()
        totals[0] += loss * n  # device-side sums: no host synchronisation in the step
        if hard is not None:
            totals[1] += (logits.detach().argmax(-1) == hard).sum()
        totals[2] += n
        totals[3] += (~torch.isfinite(loss)).float()
        if self.mode.metrics:
            totals[4:] += self.mode.step_metrics * n
        return lr

    def epoch_line(self, epoch, totals, lr, epoch_start, wait, side) -> dict:
        """The epoch's log line; reading the device-side sums waits for the queued steps, so
        the epoch's time is taken after it."""
        if self.ctx.world_size > 1:
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
        if self.ctx.world_size == 1:
            return
        for model in (self.model, self.ema):
            for buffer in ([] if model is None else model.buffers()):
                if buffer.is_floating_point():
                    dist.all_reduce(buffer)
                    buffer /= self.ctx.world_size

    # ---------------------------------------------------------------------------- evaluation

    @property
    def evaluated_model(self) -> torch.nn.Module:
        """What is validated and exported: the weight average if the run keeps one."""
        return self.ema if self.ema is not None else unwrap(self.model)

    def evaluate_now(self, p: int) -> bool:
        every = self.opts['validation']['every_passes']
        return p + 1 == self.passes or (every > 0 and (p + 1) % every == 0)

    def recompute_bn(self) -> None:
        """Precise BatchNorm (batchnorm.py) of the evaluated model, on the training crops of
        the last pass done (its side and order)."""
        p = min(self.passes_done, self.passes - 1)
        self.precise_bn.recompute(self.evaluated_model, self.normalise, self.resolution_at(p),
                                  self.passes_done)

    def validation_scores(self) -> dict:
        """Top-1, top-5 and loss of the evaluated model over the whole validation beton
        (ranks read disjoint shards; counts are summed), or the mode's own scores (k-NN and
        linear-probe top-1 of an ssl student's features). In training, the BatchNorm
        statistics are first recomputed when validation.precise_bn says so."""
        if self.precise_bn is not None and self.precise_bn.images:
            self.recompute_bn()
        model = self.evaluated_model.eval()
        own = self.mode.probe_scores(self.ctx, model, self.normalise)
        if own is not None:
            return own

        def logits(images):
            with torch.autocast(**self.ctx.autocast):
                return model(self.normalise(images.float()))

        batches = progress_bar(self.ctx.progress, iterable=self.val_loader, leave=False,
                               desc='validation', unit='batch')
        result = top_k_accuracy(logits, self.ctx.cpu_threads(batches), self.ctx.device,
                                flip=self.opts['validation']['lr_tta'],
                                world_size=self.ctx.world_size)
        return {'top1': result['top1'], 'top5': result['top5'], 'val_loss': result['loss'],
                'val_images': result['images']}

    def run_eval_only(self) -> dict:
        """Evaluate a checkpoint.pt or final_weights.pt on the validation beton: top-1 and
        top-5 of a classifier, k-NN and linear-probe top-1 of an ssl student (its mode's
        measures), each only in a mode of its kind, at the side, ratio and filter the run
        validated with unless the options change them."""
        path = Path(self.opts['training']['checkpoint'] or self.folder.checkpoint)
        data, v, ctx = self.opts['data'], self.opts['validation'], self.ctx
        model, normalisation, run = load_for_evaluation(path, self.opts['training']['mode'],
                                                        ctx.classes, data['val_dataset'])
        validate_as_run(self.opts, run)  # in place: self.ctx.opts is this dict and sees it
        if ctx.is_main:
            print(f"evaluating {path} at {v['resolution']} px, ratio {v['ratio']:.3f}, "
                  f"{data['resize']} resize, as the run validated (--validation.resolution, "
                  f"--validation.ratio, --data.resize at other than their defaults change it)")
        self.model = model.to(ctx.device, memory_format=torch.channels_last)
        self.normalise = Normalisation(*normalisation, ctx.device)
        self.val_loader = self.validation_loader()
        return {'checkpoint': str(path), **self.validation_scores()}

    # ---------------------------------------------------------------------------- state

    def save_checkpoint(self, passes_done: int) -> None:
        self.folder.save_checkpoint({
            'passes_done': passes_done, 'world_size': self.ctx.world_size,
            'model': self.model.state_dict(),
            'ema': None if self.ema is None else self.ema.state_dict(),
            'optimizer': self.optimizer.state_dict(), 'scaler': self.scaler.state_dict(),
            'mode': self.mode.state_dict(), 'history': self.history, 'options': self.opts,
            'classes': self.ctx.classes, 'model_options': model_build_options(self.opts),
            'num_classes': self.ctx.num_classes})

    def restore(self, state: dict) -> int:
        """Load a checkpoint's weights, optimiser, mode state and log; returns the passes it
        finished."""
        self.model.load_state_dict(state['model'])
        if self.ema is not None:
            self.ema.load_state_dict(state['ema'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.scaler.load_state_dict(state['scaler'])
        self.mode.load_state_dict(state['mode'])
        self.history = state['history']
        return state['passes_done']

    def export(self) -> Path:
        """Plain weights (averaged, if averaging) with what a teacher or a user needs to
        rebuild and feed the model (models/exports.py: save_weights)."""
        v, resize = self.opts['validation'], self.opts['data']['resize']
        mean, std = input_normalisation(self.model)
        return self.folder.export(
            self.evaluated_model, model_build_options(self.opts), self.ctx.classes,
            {'input_size': self.resolution_at(self.passes - 1), 'interpolation': resize,
             'mean': list(mean), 'std': list(std)},
            validation={'resolution': v['resolution'], 'ratio': v['ratio'], 'resize': resize,
                        'lr_tta': v['lr_tta'], 'precision': self.ctx.precision})

    def log(self, line: dict) -> None:
        self.history.append(line)
        self.folder.append_log(line)
        if self.ctx.is_main:
            tqdm.write('  '.join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in line.items()))


def main(opts: dict, argv=None) -> int:
    """The command line's body: run, print the summary; option errors become exit status 2,
    other run errors 1, Ctrl-C 130 with what was kept. The process group (torchrun) is closed
    however the run ends."""
    trainer = None
    try:
        trainer = Trainer(opts)
        summary = trainer.run()
        if trainer.ctx.is_main:
            print_summary(summary)
        return 0
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, OptionError) else 1
    except KeyboardInterrupt:
        if trainer is None or trainer.ctx.is_main:
            print(f"\n{interrupted(trainer, list(argv or sys.argv))}", file=sys.stderr)
        return 130
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
