"""Precise BatchNorm (validation.precise_bn, as pycls and detectron2 do): before a validation,
the running statistics of the evaluated model become the plain average of their batch
statistics over a number of training crops at the current weights, since running averages
over the last steps lag weights that still move fast (a short run's)."""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from fkd_ffcv.models.weights import unwrap
from fkd_ffcv.training.options import PRECISE_BN_IMAGES, PRECISE_BN_STEPS


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


class PreciseBatchNorm:
    """The recomputation of one run: how many training images (`images`, 0: off) and the
    loader that reads them (compiled once, at the first validation)."""

    def __init__(self, ctx, model: torch.nn.Module, steps: int, first_side: int):
        """Resolve validation.precise_bn for a run of `steps` steps; say in one line when it
        is on. `first_side` is the training crops' side in the first pass."""
        asked = ctx.opts['validation']['precise_bn']
        has_norms = any(is_batchnorm(m) for m in unwrap(model).modules())
        self.images = precise_bn_images(asked, steps, len(ctx.train_beton)) if has_norms else 0
        self.ctx, self.first_side, self.loader = ctx, first_side, None
        if self.images and ctx.is_main:
            why = (f"auto: {steps} training steps, fewer than {PRECISE_BN_STEPS}, leave the "
                   f"running statistics behind the weights" if asked < 0 else
                   "--validation.precise_bn")
            print(f"precise BN: each validation first recomputes the BatchNorm statistics on "
                  f"{self.images} training images ({why}; --validation.precise_bn=0 turns "
                  f"it off)", file=sys.stderr)

    @torch.no_grad()
    def recompute(self, model: torch.nn.Module, normalise, side: int, pass_index: int) -> None:
        """Recompute `model`'s statistics on random-resized training crops of `side` px, in
        the order of pass `pass_index`. Only the BatchNorm layers are in training mode, there
        are no gradients, and momentum and step counts are restored after; under DDP each
        rank reads its share of the images and the ranks average their statistics."""
        from fkd_ffcv.loading.loaders import PlainLoader
        ctx = self.ctx
        data, t = ctx.opts['data'], ctx.opts['training']
        per_process = -(-self.images // ctx.world_size)
        batch = min(t['batch_size'], per_process)
        if self.loader is None:
            self.loader = PlainLoader(
                data['train_dataset'], batch, resolution=self.first_side, seed=t['seed'] + 1,
                num_workers=ctx.process.workers, distributed=ctx.world_size > 1,
                scale=(data['crop_scale_min'], data['crop_scale_max']), device=ctx.device,
                labels=False, resize=data['resize'])
        self.loader.start_at(pass_index)
        self.loader.set_resolution(side)
        norms = [m for m in model.modules() if is_batchnorm(m)]
        kept = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average of the batches' statistics
            m.train()
        for i, (images, _) in enumerate(ctx.cpu_threads(self.loader)):
            with torch.autocast(**ctx.autocast):
                model(normalise(images.float()))
            if (i + 1) * batch >= per_process:
                break
        for m, (momentum, tracked) in zip(norms, kept):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)
            m.eval()
            if ctx.world_size > 1:
                for buffer in (m.running_mean, m.running_var):
                    dist.all_reduce(buffer)
                    buffer /= ctx.world_size
