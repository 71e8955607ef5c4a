"""Training modes: what a run needs from the beton, its training loader, how it reads a batch,
its loss, and any state it checkpoints. `MODES` holds them by name (`training.mode`); a new
mode is a new class registered here, and the trainer needs no new branch. A mode reads the run
through its `RunContext` (context.py: device, precision, plan, betons, classes, options), never
the trainer; the losses are losses.py's.

Nothing heavy is imported at module level: options.py reads the modes' facts (crops per image,
a teacher needed, crop records read) to check a command line before torch is loaded.
"""
from __future__ import annotations

import math

from fkd_ffcv.defaults import CLASSES_FIELD, EMBEDDING_FIELD
from fkd_ffcv.errors import TrainingError
from fkd_ffcv.registry import Registry

MODES = Registry('training mode')


class Mode:
    """What every mode has unless it says otherwise: one crop per image, no teacher, no crop
    records, no state of its own. The facts are class-level, read by options.check without
    making a mode; the trainer makes one per run (no arguments) and passes every method the
    run's context (`ctx`)."""
    needs_teacher = False  # the mode runs a teacher (--fkd.teacher)
    reads_records = False  # the mode replays the beton's crop records
    record_field = CLASSES_FIELD  # the record field it reads (with boxes and flags)
    starts_from_weights = False  # needs --model.weights, of the data set's class count
    sections = ()  # option sections only this mode may set (options.check refuses them elsewhere)
    reads_labels = True  # the training batches carry hard labels (train_top1 is logged)
    probes = False  # validation measures frozen features (k-NN, linear probe), not top-1
    metrics = ()  # names of the step means `loss` leaves in `step_metrics`, logged per epoch
    step_metrics = None

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

    def check_data(self, ctx) -> None:
        """Raise TrainingError where the training beton lacks what the mode reads."""

    def setup(self, ctx) -> None:
        """Load what the mode needs besides the student (a teacher)."""

    def student(self, ctx, model):
        """The student as the mode trains it, from the model build_model gave (the mode may
        replace its classifier)."""
        return model

    def probe_scores(self, ctx, model, normalise):
        """The validation line's numbers when the mode measures the student (`model`, in eval
        mode; `normalise` its input normalisation) by probing its features (a dict), or None
        for top-1/top-5 of its classifier."""
        return None

    def forwards(self) -> list:
        """(who, forward) of the models besides the student that see the training crops, for
        the trainer's check of every input side."""
        return []

    def parameter_groups(self, ctx) -> list:
        """Optimiser groups of the mode's own trained modules (a discriminator), after the
        student's; a group's 'lr_scale' multiplies the scheduled learning rate, and one marked
        'always' learns in model.head_epochs too, while the student's body waits."""
        return []

    def train_loader(self, ctx, num_crops: int, **common):
        """The training loader for passes of `num_crops` crops per image; `common` holds
        resolution, seed, workers and distributed."""
        raise NotImplementedError

    def unpack(self, batch) -> tuple:
        """A loader batch -> (uint8 images, targets for `loss`, hard labels for accuracy, or
        None in a mode that reads no labels)."""
        raise NotImplementedError

    def loss(self, ctx, logits, targets, images255, perm, lam):
        """The loss of a step. With mixing (perm is not None), images255 holds the mixed
        images, and `lam` is the weight of the unpermuted targets. A mode with `metrics` sets
        `self.step_metrics` to a tensor of their step means."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Extra state to checkpoint (a discriminator, an optimiser of its own, ...)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


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
        """options.check has seen the manifest's word on these; the beton's own is final."""
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


class WithDiscriminator:
    """MEAL V2 (discriminator.py) on top of a distillation mode that gives the teacher's
    distribution: the student starts from --model.weights, learns the soft cross-entropy to
    the teacher's distribution (no hard labels) plus --meal.disc_weight x the discriminator's
    BCE, and the discriminator is a second optimiser group at --meal.disc_lr_ratio x the
    student's learning rate, checkpointed with the run."""
    starts_from_weights = True
    sections = ('meal',)

    def check_teacher_count(self, ctx, specs, where: str) -> None:
        """Warn when the labels come from another number of teachers than --meal.teachers
        asks for (`specs`: the teachers' specs, None where they were not recorded)."""
        import sys
        wanted = ctx.opts['meal']['teachers']
        if not wanted or (specs and len(specs) == wanted) or not ctx.is_main:
            return
        came = (f"{len(specs)} teacher(s) ({', '.join(specs)})" if specs else
                "teachers that were not recorded (imported labels)")
        print(f"warning: {where} come from {came}; the recipe asks for an ensemble of "
              f"{wanted} (--meal.teachers)", file=sys.stderr)

    def setup(self, ctx):
        super().setup(ctx)
        import torch
        from fkd_ffcv.training.discriminator import Discriminator
        meal = ctx.opts['meal']
        self.discriminator = None
        if not meal['discriminator']:
            return
        with torch.random.fork_rng(devices=[]):  # its own seed, whatever ran before
            torch.manual_seed(ctx.opts['training']['seed'] + 7919)
            self.discriminator = Discriminator(ctx.num_classes,
                                               meal['disc_last_relu']).to(ctx.device)
        self.train_discriminator = ctx.parallel(self.discriminator)
        self.metrics = ('kd_loss', 'disc_loss', 'disc_right')

    def parameter_groups(self, ctx):
        return [] if self.discriminator is None else [
            {'params': list(self.discriminator.parameters()), 'weight_decay': 0.0,
             'always': True, 'lr_scale': ctx.opts['meal']['disc_lr_ratio']}]

    def loss(self, ctx, logits, targets, images255, perm, lam):
        import torch
        from fkd_ffcv.training.discriminator import discriminator_loss
        from fkd_ffcv.training.losses import dense_cross_entropy
        q = self.distribution(ctx, targets, images255, perm, lam)
        loss = dense_cross_entropy(logits, q, ctx.opts['fkd']['temperature'])
        if self.discriminator is None:
            return loss
        meal = ctx.opts['meal']
        bce, right = discriminator_loss(self.train_discriminator,
                                        torch.softmax(logits.float(), dim=-1), q,
                                        meal['disc_gradient'])
        self.step_metrics = torch.stack([loss.detach(), bce.detach(), right])
        return loss + meal['disc_weight'] * bce

    def state_dict(self):
        return {} if self.discriminator is None else \
            {'discriminator': self.discriminator.state_dict()}

    def load_state_dict(self, state):
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state['discriminator'])


@MODES.register('meal_v2')
class FastMealV2(WithDiscriminator, FKD):
    """Fast MEAL V2: MEAL V2 on the soft labels an ensemble stored in the beton (FKD's
    variant): K recorded crops per decoded image, the discriminator on the recovered labels."""

    def check_data(self, ctx):
        super().check_data(ctx)
        info = ctx.train_beton.manifest.soft_labels
        self.check_teacher_count(ctx, (info.teacher or {}).get('specs'),
                                 f"the soft labels of {ctx.opts['data']['train_dataset']}")


@MODES.register('online_meal_v2')
class OnlineMealV2(WithDiscriminator, OnlineKD):
    """MEAL V2 as published: the ensemble (--fkd.teacher, comma-separated) runs on every batch,
    on the student's crops; the baseline Fast MEAL V2 is timed against."""

    def setup(self, ctx):
        super().setup(ctx)
        self.check_teacher_count(ctx, self.teacher.specs, "the online distributions")


class EmbeddingDistillation:
    """Self-supervised distillation (S2-BNN's distillation-only recipe, FKD's SSL variant;
    embeddings.py): the student is its backbone with a projection head of the teacher's D
    dimensions instead of a classifier, and learns the soft cross-entropy between the
    teacher's and its own L2-normalised outputs over --ssl.temperature. No hard label is read
    in training; the validation measures the frozen features by k-NN and a linear probe
    (probes.py)."""
    sections = ('ssl',)
    reads_labels = False
    probes = True

    def set_dim(self, ctx, dim: int, where: str) -> None:
        """The head's width: the teacher's D; --ssl.dim, when given, must agree."""
        wanted, dim = ctx.opts['ssl']['dim'], int(dim)  # a beton's shapes are numpy's
        if wanted and wanted != dim:
            raise TrainingError(f"--ssl.dim={wanted}: the student's projection head must have "
                                f"the {dim} dimensions of {where}")
        self.dim = dim

    def check_probe_labels(self, ctx) -> None:
        """The validations read both betons' hard labels (k-NN, probe): a beton without them
        is named now, not after the training."""
        from fkd_ffcv.training.probes import require_labels
        for key in ('train_dataset', 'val_dataset'):
            require_labels(ctx.opts['data'][key])

    def student(self, ctx, model):
        from fkd_ffcv.models.heads import with_projection
        try:
            return with_projection(model, self.dim, ctx.opts['ssl']['head_hidden'])
        except ValueError as e:
            raise TrainingError(f"--model.arch={ctx.opts['model']['arch']}: {e}") from None

    def loss(self, ctx, logits, targets, images255, perm, lam):
        """Against the stored embeddings (N, D) of the crops, mixed as the images were."""
        from fkd_ffcv.training.losses import embedding_loss, mixed
        temperature = ctx.opts['ssl']['temperature']
        return mixed(lambda i: embedding_loss(logits, targets[i], temperature), perm, lam)

    def probe_scores(self, ctx, model, normalise):
        import torch
        from fkd_ffcv.models.heads import feature_model
        from fkd_ffcv.training.probes import knn_and_probe_top1
        features = feature_model(model, 'the student').eval()

        def forward(images):
            with torch.autocast(**ctx.autocast):
                return features(normalise(images.float()))

        s, v, d = ctx.opts['ssl'], ctx.opts['validation'], ctx.opts['data']
        return knn_and_probe_top1(
            forward, d['train_dataset'], d['val_dataset'], ctx.num_classes,
            resolution=v['resolution'], ratio=v['ratio'], knn_k=s['knn_k'],
            knn_temperature=s['knn_temperature'], probe_epochs=s['probe_epochs'],
            probe_lr=s['probe_lr'], seed=ctx.opts['training']['seed'],
            batch_size=v['batch_size'], num_workers=ctx.process.workers, device=ctx.device,
            rank=ctx.rank, world_size=ctx.world_size, resize=d['resize'],
            progress=ctx.progress)


@MODES.register('ssl')
class SelfSupervisedFKD(EmbeddingDistillation, FKD):
    """Self-supervised FKD: K recorded crops per decoded image (FKDLoader's decoders) with the
    teacher embedding each record stores (write_dataset.py --labels.embedding=...)."""
    record_field = EMBEDDING_FIELD

    def check_data(self, ctx):
        beton, path = ctx.train_beton, ctx.opts['data']['train_dataset']
        info = beton.manifest.embeddings
        from fkd_ffcv.data.manifest import check_records, records_missing
        if EMBEDDING_FIELD not in beton.fields:
            raise TrainingError(records_missing('ssl', path, beton.field_names,
                                                EMBEDDING_FIELD))
        if not info:
            raise TrainingError(f"{path}: its manifest does not describe the embedding records "
                                f"(records per image, teacher); label it again with "
                                f"write_dataset.py --labels.embedding=...")
        self.num_records = info.num_records
        check_records(self.crops_per_image(ctx.opts), self.num_records, path)
        self.set_dim(ctx, beton.fields[EMBEDDING_FIELD].shape[1],
                     f"the teacher embeddings in {path}")
        self.check_probe_labels(ctx)

    def train_loader(self, ctx, num_crops: int, **common):
        from fkd_ffcv.loading.loaders import EmbeddingLoader
        t = ctx.opts['training']
        self.note_reuse(ctx, num_crops)
        return EmbeddingLoader(ctx.opts['data']['train_dataset'], t['batch_size'],
                               num_crops, device=ctx.device, **common)

    def unpack(self, batch):
        images, embeddings = batch
        return images, embeddings, None


@MODES.register('online_ssl')
class OnlineSelfSupervised(EmbeddingDistillation, RunsTeacher, Plain):
    """The baseline self-supervised FKD is timed against: the embedding teacher
    (--fkd.teacher, --ssl.embedding) runs on every batch, on the student's random crops (the
    plain loader's, label field unread)."""

    def check_data(self, ctx):
        self.check_probe_labels(ctx)

    def setup(self, ctx):
        self.load_teacher(ctx, embedding=ctx.opts['ssl']['embedding'])
        self.set_dim(ctx, self.teacher.dim, f"the embeddings of --fkd.teacher {self.spec}")

    def unpack(self, batch):
        images, _ = batch
        return images, None, None

    def loss(self, ctx, logits, targets, images255, perm, lam):
        """Against the teacher's embeddings of the (mixed) images themselves."""
        import torch
        from fkd_ffcv.training.losses import embedding_loss
        with torch.no_grad():
            t = self.teacher.forward(images255)
        return embedding_loss(logits, t, ctx.opts['ssl']['temperature'])
