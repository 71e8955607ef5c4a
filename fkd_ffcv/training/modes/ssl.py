"""The self-supervised modes: a student learns a teacher's embeddings, stored in the beton (ssl)
or computed on every batch (online_ssl), and is measured by k-NN and a linear probe."""
from __future__ import annotations

from fkd_ffcv.defaults import EMBEDDING_FIELD
from fkd_ffcv.errors import TrainingError
from fkd_ffcv.training.modes.base import MODES
from fkd_ffcv.training.modes.classification import FKD, Plain, RunsTeacher


class EmbeddingDistillation:
    """Self-supervised distillation (S2-BNN's distillation-only recipe, FKD's SSL variant):
    the student is its backbone with a projection head of the teacher's D dimensions instead
    of a classifier (models/heads.py), and learns the soft cross-entropy between the teacher's
    and its own L2-normalised outputs over --ssl.temperature (training/losses.py). No hard
    label is read in training; the validation measures the frozen features by k-NN and a
    linear probe (training/probes.py)."""
    sections = ('ssl',)
    reads_labels = False
    probes = True

    def __init__(self):
        super().__init__()
        self.dim = None  # check_data (ssl) or setup (online_ssl): the projection head's width

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
    plain loader's, label field unread), coloured as --ssl.colour says."""

    def check_data(self, ctx):
        self.check_probe_labels(ctx)

    def train_loader(self, ctx, num_crops: int, **common):
        from fkd_ffcv.records.colour import AUGMENTATIONS
        return super().train_loader(ctx, num_crops, **common,
                                    colour=AUGMENTATIONS.get(ctx.opts['ssl']['colour']))

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
