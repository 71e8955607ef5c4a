"""MoCo v2 (He et al. 2020; Chen et al. 2020): a self-supervised teacher trained with no label,
the teacher S2-BNN and FKD's self-supervised variant distil from. Its export is an embedding
teacher like any ssl export (`checkpoint:<final_weights.pt>` with --labels.embedding=auto).

Each image gives two views (two seeded RandomResizedCrops of scale --data.crop_scale_min..max,
MoCo's 0.2..1, each with its flip and --moco.colour's colour augmentation:
loaders.ViewsLoader). The query
encoder (the student: backbone and MoCo v2's MLP projection head) embeds the first; a key
encoder, its exponential moving average (--moco.momentum), embeds the second without
gradient. The loss is InfoNCE at --ssl.temperature over the positive key and a queue of the
last --moco.queue keys (negatives), and the batch's keys then enter the queue.

MoCo shuffles the keys' batch across GPUs so that BatchNorm cannot tell a query its key from
the batch statistics. Here too (under DDP the processes gather their images, each embeds its
slice of one shuffle, and the keys are gathered back), and in addition each process's key
encoder normalises --moco.bn_splits parts of its slice separately (the split BatchNorm of
MoCo's one-GPU demo, which is what works on one process). Every process's keys enter the
queue (gathered), so all queues are the same.
"""
from __future__ import annotations

from fkd_ffcv.errors import TrainingError
from fkd_ffcv.training.modes.base import MODES, Mode
from fkd_ffcv.training.modes.ssl import EmbeddingDistillation

MOCO_DIM = 128  # MoCo's embedding dimensions, where --ssl.dim is 0


@MODES.register('moco')
class MoCoV2(EmbeddingDistillation, Mode):
    """MoCo v2's training, on any model of the project and any beton (labels read by the
    validation's k-NN and probe only)."""
    sections = ('ssl', 'moco')
    metrics = ('instance_top1',)  # the share of queries whose own key scores highest

    def __init__(self):
        super().__init__()
        self.query = self.key = self.key_normalise = None
        self.queue = self.pointer = None
        self.steps = 0  # steps taken: with the seed and rank, it seeds the keys' shuffle
        self._pending = None  # a checkpoint's state, until the key encoder exists

    def check_data(self, ctx):
        o, t = ctx.opts, ctx.opts['training']
        if t['mixup_alpha'] or t['cutmix_alpha']:
            raise TrainingError("--training.mode=moco mixes no images: leave "
                                "--training.mixup_alpha and --training.cutmix_alpha at 0")
        self.dim = o['ssl']['dim'] or MOCO_DIM
        queue, per_step = o['moco']['queue'], t['batch_size'] * ctx.world_size
        images = len(ctx.train_beton)
        most = (images - per_step) // per_step * per_step  # the largest queue that fits
        way = (f"; give at most {most}" if 0 < most < queue else
               f" (--moco.queue={most}, for one)" if most else
               "; the data set needs at least two steps' images")
        if queue % per_step:
            raise TrainingError(f"--moco.queue={queue} must be a multiple of the images per "
                                f"step ({per_step}: --training.batch_size x processes), so "
                                f"that each step replaces whole keys{way}")
        if queue > images - per_step:
            raise TrainingError(f"--moco.queue={queue}: the queue would hold keys of the step's "
                                f"own images ({images} images in "
                                f"{o['data']['train_dataset']}, {per_step} per step){way}")
        self.check_probe_labels(ctx)

    def student(self, ctx, model):
        """The query encoder; the key encoder starts as its copy, made here, before any
        forward pass (BatchNorm on batch statistics, as MoCo's key encoder)."""
        from fkd_ffcv.training.ema import weight_average
        self.query = super().student(ctx, model)
        self.key = weight_average(self.query).train()
        return self.query

    def train_loader(self, ctx, num_crops: int, **common):
        from fkd_ffcv.loading.loaders import ViewsLoader
        from fkd_ffcv.records.colour import AUGMENTATIONS
        data = ctx.opts['data']
        return ViewsLoader(data['train_dataset'], ctx.opts['training']['batch_size'], views=2,
                           scale=(data['crop_scale_min'], data['crop_scale_max']),
                           colour=AUGMENTATIONS.get(ctx.opts['moco']['colour']),
                           device=ctx.device, **common)

    def unpack(self, batch):
        query, key = batch
        return query, key, None

    def key_encoder(self, ctx):
        """The key encoder, on the run's device from the first step on, with its input
        normalisation, the queue and its pointer (a checkpoint's, where the run resumed)."""
        import torch
        from fkd_ffcv.models.students import input_normalisation
        from fkd_ffcv.training.context import Normalisation
        if self.queue is None:
            self.key = self.key.to(ctx.device, memory_format=torch.channels_last)
            self.key_normalise = Normalisation(*input_normalisation(self.query), ctx.device)
            generator = torch.Generator().manual_seed(ctx.opts['training']['seed'])
            queue = torch.randn(ctx.opts['moco']['queue'], self.dim, generator=generator)
            self.queue = torch.nn.functional.normalize(queue, dim=1).to(ctx.device)
            self.pointer = 0
            if self._pending is not None:
                self.key.load_state_dict(self._pending['key'])
                self.queue.copy_(self._pending['queue'])
                self.pointer, self.steps = self._pending['pointer'], self._pending['steps']
                self._pending = None
        return self.key

    def loss(self, ctx, logits, targets, images255, perm, lam):
        """InfoNCE of the queries (`logits`, the projection head's unit vectors) against their
        keys (the key encoder on the second views, `targets`) and the queue."""
        import torch
        import torch.nn.functional as F
        from fkd_ffcv.training.ema import update_average
        key = self.key_encoder(ctx)
        update_average(key, self.query, ctx.opts['moco']['momentum'])  # before the keys, as MoCo
        with torch.no_grad():
            keys = self.keys(ctx, key, targets)
        q = logits.float()
        positive = (q * keys).sum(1, keepdim=True)
        negatives = self.queue.clone()  # the queue changes below; the backward pass reads this
        scores = torch.cat([positive, q @ negatives.T], 1) / ctx.opts['ssl']['temperature']
        loss = F.cross_entropy(scores, torch.zeros(len(q), dtype=torch.long, device=q.device))
        self.enqueue(ctx, keys)
        self.step_metrics = (scores.detach().argmax(1) == 0).float().mean().reshape(1)
        return loss

    def keys(self, ctx, key, views):
        """The key encoder's unit embeddings of `views`, computed on a shuffle of the step's
        images: under DDP, MoCo's shuffle across processes (each process embeds its slice of
        the gathered, shuffled batch); in every process, BatchNorm statistics taken over
        --moco.bn_splits parts of its slice (sizes within one of each other). The shuffle is
        drawn from (seed, step), the same in every process, so a resumed run repeats it."""
        import torch
        n, world, rank = len(views), ctx.world_size, ctx.rank
        seed = ctx.opts['training']['seed'] * 1_000_003 + self.steps
        self.steps += 1
        images = self.key_normalise(views.float())
        order = torch.randperm(n * world, generator=torch.Generator().manual_seed(seed))
        order = order.to(views.device)
        mine = order[rank * n:(rank + 1) * n]  # this process's slice of the shuffled batch
        images = (_gathered(images, world) if world > 1 else images)[mine]
        images = images.contiguous(memory_format=torch.channels_last)
        parts = max(1, min(ctx.opts['moco']['bn_splits'], n // 2))
        with torch.autocast(**ctx.autocast):
            shuffled = torch.cat([key(part) for part in images.tensor_split(parts)]).float()
        if world > 1:
            shuffled = _gathered(shuffled, world)  # every slice's keys, in shuffled order
        return shuffled[torch.argsort(order)][rank * n:(rank + 1) * n]

    def enqueue(self, ctx, keys):
        if ctx.world_size > 1:  # every process's keys, in rank order
            keys = _gathered(keys, ctx.world_size)
        self.queue[self.pointer:self.pointer + len(keys)] = keys
        self.pointer = (self.pointer + len(keys)) % len(self.queue)

    def state_dict(self) -> dict:
        if self.queue is None:  # no step yet (a checkpoint before the first pass)
            return dict(self._pending or {})
        return {'key': self.key.state_dict(), 'queue': self.queue, 'pointer': self.pointer,
                'steps': self.steps}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        if self.queue is None:
            self._pending = state
        else:
            self.key.load_state_dict(state['key'])
            self.queue.copy_(state['queue'])
            self.pointer, self.steps = state['pointer'], state['steps']


def _gathered(x, world_size: int):
    """Every process's `x` (the same shape in each), concatenated in rank order."""
    import torch
    import torch.distributed as dist
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)
