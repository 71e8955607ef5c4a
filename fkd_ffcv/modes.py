"""Training modes: what a run needs from the beton, its training loader, how it reads a batch,
its loss, and any state it checkpoints. `MODES` holds them by name (`training.mode`); a new
mode is a new class registered here, and the trainer needs no new branch.

Nothing heavy is imported at module level: options.py reads the modes' facts (crops per image,
a teacher needed, crop records read) to check a command line before torch is loaded.
"""
from __future__ import annotations

import math

from .errors import TrainingError
from .registry import Registry

MODES = Registry('training mode')


class Mode:
    """What every mode has unless it says otherwise: one crop per image, no teacher, no crop
    records, no state of its own. The facts are class-level, read by options.check without
    making a mode; the trainer makes one per run (no arguments)."""
    needs_teacher = False  # the mode runs a teacher (--fkd.teacher)
    reads_records = False  # the mode replays the beton's crop records

    @classmethod
    def crops_per_image(cls, opts: dict) -> int:
        """K: crops per decoded image and pass (a pass is K epochs)."""
        return 1

    @classmethod
    def pass_plan(cls, opts: dict) -> list:
        """Crops per image of each pass, summing to the epochs: K for every pass. Raises
        ValueError when K does not divide the epochs."""
        k, epochs = cls.crops_per_image(opts), opts['training']['epochs']
        if epochs % k:
            raise ValueError(f"--training.epochs={epochs} is not a multiple of "
                             f"--fkd.num_crops={k}: a pass over the images with K crops each is "
                             f"K epochs (--fkd.single_crop_phases=true runs the rest with one "
                             f"crop)")
        return [k] * (epochs // k)

    def check_data(self, trainer) -> None:
        """Raise TrainingError where the training beton lacks what the mode reads."""

    def setup(self, trainer) -> None:
        """Load what the mode needs besides the student (a teacher)."""

    def forwards(self) -> list:
        """(who, forward) of the models besides the student that see the training crops, for
        the trainer's check of every input side."""
        return []

    def train_loader(self, trainer, num_crops: int, **common):
        """The training loader for passes of `num_crops` crops per image; `common` holds
        resolution, seed, workers and distributed."""
        raise NotImplementedError

    def unpack(self, batch) -> tuple:
        """A loader batch -> (uint8 images, targets for `loss`, hard labels for accuracy)."""
        raise NotImplementedError

    def loss(self, trainer, logits, targets, images255, perm, lam):
        """The loss of a step. With mixing (perm is not None), images255 holds the mixed
        images, and `lam` is the weight of the unpermuted targets."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Extra state to checkpoint (a discriminator, an optimiser of its own, ...)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def mixed(loss_of, perm, lam):
    """A loss linear in its target, for targets mixed with weight `lam`: lam L(a) + (1 - lam)
    L(b), with `loss_of(index)` the loss against the targets picked by `index`."""
    everything = slice(None)
    return loss_of(everything) if perm is None else \
        lam * loss_of(everything) + (1 - lam) * loss_of(perm)


@MODES.register('plain')
class Plain(Mode):
    """Hard labels with label smoothing, on a seeded RandomResizedCrop per image and pass."""

    def train_loader(self, trainer, num_crops: int, **common):
        from .loaders import PlainLoader
        data, t = trainer.opts['data'], trainer.opts['training']
        return PlainLoader(data['train_dataset'], t['batch_size'],
                           scale=(data['crop_scale_min'], data['crop_scale_max']),
                           device=trainer.device, **common)

    def unpack(self, batch):
        images, labels = batch
        return images, labels, labels

    def loss(self, trainer, logits, labels, images255, perm, lam):
        import torch.nn.functional as F
        smoothing = trainer.opts['training']['label_smoothing']
        return mixed(lambda i: F.cross_entropy(logits.float(), labels[i],
                                               label_smoothing=smoothing), perm, lam)


@MODES.register('online_kd')
class OnlineKD(Plain):
    """Classic distillation: the teacher (--fkd.teacher) runs on every batch, on the student's
    crops resized to its input; soft cross-entropy against its full distribution."""
    needs_teacher = True

    def setup(self, trainer):
        from .teachers import Teacher
        spec = trainer.opts['fkd']['teacher']
        try:
            self.teacher = Teacher(spec, device=trainer.device, cpu_threads=trainer.threads,
                                   temperature=trainer.opts['fkd']['temperature'],
                                   precision=trainer.precision)
        except (ValueError, FileNotFoundError) as e:
            raise TrainingError(f"--fkd.teacher: {e}") from None
        if self.teacher.num_classes != trainer.num_classes:
            raise TrainingError(f"--fkd.teacher {spec} predicts {self.teacher.num_classes} "
                                f"classes; the data set has {trainer.num_classes}")
        self.spec = spec

    def forwards(self):
        return [(f"the teacher {self.spec}", self.teacher.forward)]

    def loss(self, trainer, logits, labels, images255, perm, lam):
        import torch
        from .soft_labels import dense_cross_entropy
        with torch.no_grad():  # the teacher sees the mixed images themselves
            q = self.teacher.forward(images255)
        return dense_cross_entropy(logits, q, trainer.opts['fkd']['temperature'])


@MODES.register('fkd')
class FKD(Mode):
    """Soft labels replayed from the beton: each decoded image gives K recorded crops
    (FKDLoader) with the teacher's stored top-k; soft cross-entropy against their recovery."""
    reads_records = True

    @classmethod
    def crops_per_image(cls, opts):
        return opts['fkd']['num_crops']

    @classmethod
    def pass_plan(cls, opts):
        """With --fkd.single_crop_phases (the default), FKD's own schedule: the learning
        rate's warm-up epochs with one crop per image, then K crops while at least K epochs
        remain, then the leftover epochs with one crop again (300 epochs, 5 of warm-up,
        K = 4: 5 x 1, 73 x 4, 3 x 1). A cyclic schedule has no warm-up epochs."""
        if not opts['fkd']['single_crop_phases']:
            return super().pass_plan(opts)
        k, epochs, lr = opts['fkd']['num_crops'], opts['training']['epochs'], opts['lr']
        warmup = 0 if lr['schedule'] == 'cyclic' else min(epochs, math.ceil(lr['warmup_epochs']))
        middle = (epochs - warmup) // k
        return [1] * warmup + [k] * middle + [1] * (epochs - warmup - middle * k)

    def check_data(self, trainer):
        """options.check has seen the manifest's word on these; the beton's own is final."""
        from .fields import CLASSES_FIELD
        from .options import check_records, records_missing
        from .soft_labels import LabelSpec
        beton, path = trainer.train_beton, trainer.opts['data']['train_dataset']
        if CLASSES_FIELD not in beton.fields:
            raise TrainingError(records_missing('fkd', path, beton.field_names))
        info = beton.manifest.get('soft_labels')
        if not info:
            raise TrainingError(f"{path}: its manifest does not describe the soft labels "
                                f"(label type); rewrite the labels with write_dataset.py")
        if info['num_classes'] != trainer.num_classes:
            raise TrainingError(f"{path}: the soft labels cover {info['num_classes']} classes, "
                                f"the data set has {trainer.num_classes}")
        self.num_records = info['num_records']
        check_records(self.crops_per_image(trainer.opts), self.num_records, path)
        self.label_spec = LabelSpec.parse(info['label_type'], info['num_classes'])

    def train_loader(self, trainer, num_crops: int, **common):
        import sys
        from .loaders import FKDLoader
        data, t = trainer.opts['data'], trainer.opts['training']
        used = t['epochs']  # one crop per image and epoch, whatever the passes' K
        if used > self.num_records and trainer.is_main and num_crops == max(trainer.plan):
            print(f"note: {t['epochs']} epochs use {used} crops per image; "
                  f"{data['train_dataset']} holds {self.num_records} records per image, so "
                  f"records are reused", file=sys.stderr)
        return FKDLoader(data['train_dataset'], t['batch_size'], num_crops,
                         device=trainer.device, **common)

    def unpack(self, batch):
        images, classes, probs, hard = batch
        return images, (classes, probs), hard

    def loss(self, trainer, logits, targets, images255, perm, lam):
        from .soft_labels import soft_cross_entropy
        classes, probs = targets
        temperature = trainer.opts['fkd']['temperature']
        return mixed(lambda i: soft_cross_entropy(logits, classes[i], probs[i],
                                                  self.label_spec, temperature), perm, lam)
