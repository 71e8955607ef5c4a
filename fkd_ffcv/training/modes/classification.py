"""The modes that learn a classifier from labels: plain (hard labels), online_kd (a teacher's
distribution on every batch) and fkd (soft labels replayed from the beton)."""
from __future__ import annotations

import math

from fkd_ffcv.defaults import CLASSES_FIELD
from fkd_ffcv.errors import TrainingError
from fkd_ffcv.training.modes.base import MODES, Mode


@MODES.register('plain')
class Plain(Mode):
    """Hard labels with label smoothing, on a seeded RandomResizedCrop per image and pass."""

    def train_loader(self, ctx, num_crops: int, **common):
        from fkd_ffcv.loading.loaders import PlainLoader
        data, t = ctx.opts['data'], ctx.opts['training']
        return PlainLoader(data['train_dataset'], t['batch_size'],
                           scale=(data['crop_scale_min'], data['crop_scale_max']),
                           device=ctx.device, labels=self.reads_labels, **common)

    def unpack(self, batch):
        images, labels = batch
        return images, labels, labels

    def loss(self, ctx, logits, labels, images255, perm, lam):
        import torch.nn.functional as F
        from fkd_ffcv.training.losses import mixed
        smoothing = ctx.opts['training']['label_smoothing']
        return mixed(lambda i: F.cross_entropy(logits.float(), labels[i],
                                               label_smoothing=smoothing), perm, lam)


class RunsTeacher:
    """A mode whose teacher (--fkd.teacher) runs on every batch, on the student's crops
    resized to its input, on this process's device, threads and precision."""
    needs_teacher = True

    def __init__(self):
        super().__init__()
        self.spec = self.teacher = None  # setup: --fkd.teacher and the model it names

    def load_teacher(self, ctx, **options) -> None:
        from fkd_ffcv.labeling.teachers import Teacher
        self.spec = ctx.opts['fkd']['teacher']
        try:
            self.teacher = Teacher(self.spec, device=ctx.device, precision=ctx.precision,
                                   cpu_threads=ctx.process.threads, **options)
        except (ValueError, FileNotFoundError) as e:
            raise TrainingError(f"--fkd.teacher: {e}") from None

    def forwards(self):
        return [(f"the teacher {self.spec}", self.teacher.forward)]


@MODES.register('online_kd')
class OnlineKD(RunsTeacher, Plain):
    """Classic distillation: soft cross-entropy against the teacher's full distribution."""

    def setup(self, ctx):
        self.load_teacher(ctx, temperature=ctx.opts['fkd']['temperature'])
        if self.teacher.num_classes != ctx.num_classes:
            raise TrainingError(f"--fkd.teacher {self.spec} predicts "
                                f"{self.teacher.num_classes} classes; the data set has "
                                f"{ctx.num_classes}")

    def distribution(self, ctx, labels, images255, perm, lam):
        """The teacher's probabilities (N, C) on the (mixed) images themselves."""
        import torch
        with torch.no_grad():
            return self.teacher.forward(images255)

    def loss(self, ctx, logits, labels, images255, perm, lam):
        from fkd_ffcv.training.losses import dense_cross_entropy
        q = self.distribution(ctx, labels, images255, perm, lam)
        return dense_cross_entropy(logits, q, ctx.opts['fkd']['temperature'])


@MODES.register('fkd')
class FKD(Mode):
    """Soft labels replayed from the beton: each decoded image gives K recorded crops
    (FKDLoader) with the teacher's stored top-k; soft cross-entropy against their recovery."""
    reads_records = True

    def __init__(self):
        super().__init__()
        self.num_records = None  # check_data: records per image in the beton
        self.label_spec = None  # check_data: the records' LabelSpec

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

    def check_data(self, ctx):
        """option_checks.check has seen the manifest's word on these; the beton's own is final."""
        from fkd_ffcv.data.manifest import check_records, records_missing
        from fkd_ffcv.records.soft_labels import LabelSpec
        beton, path = ctx.train_beton, ctx.opts['data']['train_dataset']
        if CLASSES_FIELD not in beton.fields:
            raise TrainingError(records_missing('fkd', path, beton.field_names, CLASSES_FIELD))
        info = beton.manifest.soft_labels
        if not info:
            raise TrainingError(f"{path}: its manifest does not describe the soft labels "
                                f"(label type); rewrite the labels with write_dataset.py")
        if info.num_classes != ctx.num_classes:
            raise TrainingError(f"{path}: the soft labels cover {info.num_classes} classes, "
                                f"the data set has {ctx.num_classes}")
        self.num_records = info.num_records
        check_records(self.crops_per_image(ctx.opts), self.num_records, path)
        self.label_spec = LabelSpec.parse(info.label_type, info.num_classes)

    def note_reuse(self, ctx, num_crops: int) -> None:
        """Say once when the run uses more crops per image than the beton holds records."""
        import sys
        epochs = ctx.opts['training']['epochs']  # one crop per image and epoch
        if epochs > self.num_records and ctx.is_main and num_crops == max(ctx.plan):
            print(f"note: {epochs} epochs use {epochs} crops per image; "
                  f"{ctx.opts['data']['train_dataset']} holds {self.num_records} records "
                  f"per image, so records are reused", file=sys.stderr)

    def train_loader(self, ctx, num_crops: int, **common):
        from fkd_ffcv.loading.loaders import FKDLoader
        data, t = ctx.opts['data'], ctx.opts['training']
        self.note_reuse(ctx, num_crops)
        return FKDLoader(data['train_dataset'], t['batch_size'], num_crops,
                         device=ctx.device, **common)

    def unpack(self, batch):
        images, classes, probs, hard = batch
        return images, (classes, probs), hard

    def distribution(self, ctx, targets, images255, perm, lam):
        """The recovered soft labels (N, C), mixed as the images were."""
        from fkd_ffcv.records.soft_labels import recover
        classes, probs = targets
        q = recover(classes, probs, self.label_spec)  # on the labels' device
        return q if perm is None else lam * q + (1 - lam) * q[perm]

    def loss(self, ctx, logits, targets, images255, perm, lam):
        from fkd_ffcv.training.losses import mixed, soft_cross_entropy
        classes, probs = targets
        temperature = ctx.opts['fkd']['temperature']
        return mixed(lambda i: soft_cross_entropy(logits, classes[i], probs[i],
                                                  self.label_spec, temperature), perm, lam)
