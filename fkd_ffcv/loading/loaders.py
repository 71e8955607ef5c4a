"""The project's pipelines: FFCV loaders that turn a beton into batches of channels-last uint8
images and labels (the Loader itself, with its buffer and CUDA handling, is ffcv_loader.py)."""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from ffcv.fields.basics import IntDecoder
from ffcv.loader import OrderOption
from ffcv.transforms import Squeeze, ToTensor, ToTorchImage

from fkd_ffcv.data.beton import Beton
from fkd_ffcv.defaults import DEFAULT_RESIZE, IMAGENET_CROP
from fkd_ffcv.loading.ffcv_loader import Loader
from fkd_ffcv.data.fields import IMAGE_FIELD, LABEL_FIELD


def _to_device(device) -> list:
    """FFCV's ToDevice for CUDA (copies on the loader's own stream from pinned buffers, in step
    with FFCV's buffer reuse), nothing for the CPU."""
    from ffcv.transforms import ToDevice
    device = torch.device(device)
    return [ToDevice(device, non_blocking=True)] if device.type == 'cuda' else []


def only(path, pipelines: dict) -> dict:
    """`pipelines`, plus None for every other field of the beton (FFCV would decode those with
    their default pipelines)."""
    return {**{name: None for name in Beton(path).field_names}, **pipelines}


def eval_loader(path, batch_size: int = 256, resolution: int = 224,
                ratio: float = IMAGENET_CROP, num_workers: int = -1, device: str = 'cpu',
                rank: int = 0, world_size: int = 1, resize: str = DEFAULT_RESIZE) -> Loader:
    """Every sample once, in order: centre crop of side `ratio` x the shorter side, resized to
    `resolution` with the filter `resize` (resample.py), as (N, 3, H, W) channels-last uint8,
    and int64 labels.

    With world_size > 1, rank r reads samples r, r + world_size, ...: together the ranks read
    each sample exactly once (FFCV's distributed mode pads the last batch with repeats)."""
    if not 0 < ratio <= 1:
        raise ValueError(f"the centre crop's ratio to the shorter side must be in (0, 1], not "
                         f"{ratio}")
    if num_workers < 1:
        num_workers = len(os.sched_getaffinity(0))
    from ffcv.pipeline import PipelineSpec
    from fkd_ffcv.loading.decoders import CenterCropDecoder
    device = torch.device(device)
    image_pipeline = PipelineSpec(IMAGE_FIELD, decoder=CenterCropDecoder(resolution, ratio,
                                                                         resize),
                                  transforms=[ToTensor(), *_to_device(device),
                                              ToTorchImage(channels_last=True)])
    label_pipeline = [IntDecoder(), ToTensor(), Squeeze(1), *_to_device(device)]
    pipelines = only(path, {IMAGE_FIELD: image_pipeline, LABEL_FIELD: label_pipeline})
    indices = np.arange(rank, len(Beton(path)), world_size) if world_size > 1 else None
    return Loader(str(path), batch_size=batch_size, num_workers=num_workers,
                  order=OrderOption.SEQUENTIAL, drop_last=False, pipelines=pipelines,
                  indices=indices)


class _PassLoader:
    """An FFCV loader whose decoders learn the first epoch of each pass before it (their tag
    buffer, ffcv_loader.first_epoch_tag). A pass of K crops per image spans K epochs; by
    default pass p starts at epoch p * K."""

    def __init__(self, loader: Loader, decoders, num_crops: int = 1):
        self.loader, self.decoders, self.num_crops = loader, decoders, num_crops
        self.passes, self.epoch = 0, 0

    def __len__(self):
        return len(self.loader)

    def start_at(self, pass_index: int, epoch: int = None) -> None:
        """Make the next iteration pass `pass_index` (its order), starting at `epoch` (its
        records and crops; default pass_index * K), as an uninterrupted run would have it: how
        a resumed run continues, and how a run whose passes hold different K (FKD's
        single-crop phases) places each pass."""
        self.passes = pass_index
        self.epoch = pass_index * self.num_crops if epoch is None else epoch
        self.loader.next_epoch = pass_index

    def _next_pass(self):
        for decoder in self.decoders:
            decoder.epoch = self.epoch
        self.passes += 1
        self.epoch += self.num_crops
        return self.loader


def warn_if_resized_otherwise(beton: Beton, resize: str) -> None:
    """Warn when the records' teacher crops were resized with another filter than `resize`:
    the student then sees its crops' pixels other than the teacher did. The labelling run and
    fkd-import record theirs as `crop_resize`; older betons have only the teacher's
    interpolation, or for imports nothing (FKD's crops were PIL's antialiased bilinear). Under
    DDP only rank 0 warns."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return
    manifest = beton.manifest
    for info in (manifest.soft_labels, manifest.embeddings):
        if not info:
            continue
        recorded = (info.crop_resize or (info.teacher or {}).get('interpolation')
                    or ('antialias' if info.source == 'fkd-import' else None))
        if not recorded:
            continue
        if info.crop_resize is None and recorded == 'bicubic':  # labelled before resample.py
            fix = "OpenCV's INTER_CUBIC then, which no filter reproduces"
        elif recorded != resize:
            fix = f"--data.resize={recorded} replays them as the teacher saw them"
        else:
            continue
        warnings.warn(f"{beton.path}: its records were labelled on crops resized with "
                      f"{recorded!r}, and this loader resizes with {resize!r}: student and "
                      f"teacher see the crops differently resampled ({fix})", stacklevel=3)


class _RecordLoader(_PassLoader):
    """B images per step, each decoded once, with K recorded crops cut from each
    (MultiCropDecoder), plus the record fields a subclass reads (`target_pipelines`)."""

    def __init__(self, path, batch_size: int, num_crops: int, resolution: int = 224,
                 seed: int = 0, num_workers: int = -1, order=OrderOption.RANDOM,
                 distributed: bool = False, drop_last: bool = True, device='cpu',
                 resize: str = DEFAULT_RESIZE):
        from ffcv.pipeline import PipelineSpec
        from fkd_ffcv.loading.decoders import MultiCropDecoder
        if batch_size % num_crops:
            raise ValueError(f"batch_size counts crops: {batch_size} is not a multiple of "
                             f"num_crops {num_crops}")
        beton = Beton(path)
        self.num_crops, self.device = num_crops, torch.device(device)
        self.images = MultiCropDecoder(beton, num_crops, resolution, seed, resize)
        warn_if_resized_otherwise(beton, resize)
        to_device = _to_device(self.device)
        decoders, targets = self.target_pipelines(beton, num_crops, seed, to_device)
        pipelines = only(path, {
            IMAGE_FIELD: PipelineSpec(IMAGE_FIELD, decoder=self.images,
                                      transforms=[ToTensor(), *to_device]),
            **targets})
        super().__init__(Loader(str(path), batch_size=batch_size // num_crops,
                                num_workers=num_workers, order=order, seed=seed,
                                distributed=distributed, drop_last=drop_last,
                                pipelines=pipelines), [self.images, *decoders], num_crops)

    def target_pipelines(self, beton, num_crops: int, seed: int, to_device: list) -> tuple:
        """(the decoders that replay records, {name: pipeline}) of the record fields read."""
        raise NotImplementedError

    def set_resolution(self, resolution: int) -> None:
        self.images.output_size = resolution

    def crops(self, images):
        """(B, K, S, S, 3) per image -> (B*K, 3, S, S) channels-last, crops of an image
        adjacent."""
        b, _, s = images.shape[:3]
        return images.reshape(b * self.num_crops, s, s, 3).permute(0, 3, 1, 2)


class FKDLoader(_RecordLoader):
    """Batches of B*K crops with their soft labels: each of B images is decoded once and its K
    records for the current pass are replayed (see decoders.py).

    Iterating yields (images uint8 (B*K, 3, S, S) channels-last, classes int64 (B*K, k),
    probabilities float32 (B*K, k), hard labels int64 (B*K,)) on `device`; crops of one image
    are adjacent. The probabilities are decoded from their stored codes on `device`, batched,
    by soft_labels.decode_probs. Each iteration is one pass; `set_resolution` before a pass
    changes S without recompiling.
    """

    def target_pipelines(self, beton, num_crops, seed, to_device):
        from ffcv.pipeline import PipelineSpec
        from fkd_ffcv.loading.decoders import RecordLabelDecoder
        from fkd_ffcv.data.fields import CLASSES_FIELD
        labels = RecordLabelDecoder(beton, num_crops, seed)
        return [labels], {
            LABEL_FIELD: [IntDecoder(), ToTensor(), Squeeze(1), *to_device],
            'soft_labels': PipelineSpec(CLASSES_FIELD, decoder=labels,
                                        transforms=[ToTensor(), *to_device])}

    def __iter__(self):
        from fkd_ffcv.records.soft_labels import FLAG_P1_STORED, decode_probs
        k = self.num_crops
        for images, hard, stored in self._next_pass():  # on the device already (ToDevice)
            stored = stored.reshape(images.shape[0] * k, -1)
            top = (stored.shape[1] - 1) // 2
            codes = stored[:, top:2 * top].to(torch.uint8)
            probs = decode_probs(codes, (stored[:, -1] & FLAG_P1_STORED) != 0)
            yield (self.crops(images), stored[:, :top].long(), probs,
                   hard.long().repeat_interleave(k))


class EmbeddingLoader(_RecordLoader):
    """Self-supervised FKD's batches: as FKDLoader's, with each crop's stored teacher
    embedding instead of soft labels, and no hard labels (the label field is not read).

    Iterating yields (images uint8 (B*K, 3, S, S) channels-last, unit embeddings float32
    (B*K, D)) on `device`."""

    def target_pipelines(self, beton, num_crops, seed, to_device):
        from ffcv.pipeline import PipelineSpec
        from fkd_ffcv.loading.decoders import RecordEmbeddingDecoder
        from fkd_ffcv.data.fields import EMBEDDING_FIELD
        targets = RecordEmbeddingDecoder(beton, num_crops, seed)
        return [targets], {EMBEDDING_FIELD: PipelineSpec(EMBEDDING_FIELD, decoder=targets,
                                                         transforms=[ToTensor(), *to_device])}

    def __iter__(self):
        from fkd_ffcv.records.embeddings import decode
        for images, stored in self._next_pass():
            yield self.crops(images), decode(stored.reshape(images.shape[0] * self.num_crops,
                                                            -1))


class PlainLoader(_PassLoader):
    """Hard-label training batches: a seeded RandomResizedCrop and flip per image and pass,
    (images uint8 (B, 3, S, S) channels-last, labels int64 (B,)) on `device`; reproducible
    from `seed`. With `labels=False` the label field is not read, and the labels are None
    (online self-supervised distillation); with `colour` (a records/colour.AUGMENTATIONS
    entry) each crop gets its own colour augmentation."""

    def __init__(self, path, batch_size: int, resolution: int = 224, seed: int = 0,
                 num_workers: int = -1, order=OrderOption.RANDOM, distributed: bool = False,
                 drop_last: bool = True, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 device='cpu', labels: bool = True, resize: str = DEFAULT_RESIZE,
                 colour: dict = None):
        from ffcv.pipeline import PipelineSpec
        from fkd_ffcv.loading.decoders import SeededRandomResizedCropDecoder
        self.images = SeededRandomResizedCropDecoder(resolution, seed, scale, ratio, resize,
                                                     colour=colour)
        to_device = _to_device(device)
        pipelines = only(path, {
            IMAGE_FIELD: PipelineSpec(IMAGE_FIELD, decoder=self.images,
                                      transforms=[ToTensor(), *to_device,
                                                  ToTorchImage(channels_last=True)]),
            **({LABEL_FIELD: [IntDecoder(), ToTensor(), Squeeze(1), *to_device]}
               if labels else {}),
        })
        super().__init__(Loader(str(path), batch_size=batch_size, num_workers=num_workers,
                                order=order, seed=seed, distributed=distributed,
                                drop_last=drop_last, pipelines=pipelines), [self.images])
        self.labels = labels

    def set_resolution(self, resolution: int) -> None:
        self.images.output_size = resolution

    def __iter__(self):
        for batch in self._next_pass():
            yield (batch[0], batch[1].long()) if self.labels else (batch[0], None)


class ViewsLoader(_PassLoader):
    """Contrastive training batches (MoCo): `views` seeded RandomResizedCrops of each image,
    decoded once, each with its own flip and, with `colour` (a records/colour.AUGMENTATIONS
    entry), its own colour augmentation; no label is read. Iterating yields a tuple of `views`
    uint8 (B, 3, S, S) channels-last batches on `device`, view v of image b at row b of each;
    reproducible from `seed` (decoders.SeededRandomResizedCropDecoder)."""

    def __init__(self, path, batch_size: int, views: int = 2, resolution: int = 224,
                 seed: int = 0, num_workers: int = -1, order=OrderOption.RANDOM,
                 distributed: bool = False, drop_last: bool = True, scale=(0.2, 1.0),
                 ratio=(3 / 4, 4 / 3), colour: dict = None, device='cpu',
                 resize: str = DEFAULT_RESIZE):
        from ffcv.pipeline import PipelineSpec
        from fkd_ffcv.loading.decoders import SeededRandomResizedCropDecoder
        self.images = SeededRandomResizedCropDecoder(resolution, seed, scale, ratio, resize,
                                                     views=views, colour=colour)
        pipelines = only(path, {IMAGE_FIELD: PipelineSpec(
            IMAGE_FIELD, decoder=self.images, transforms=[ToTensor(), *_to_device(device)])})
        super().__init__(Loader(str(path), batch_size=batch_size, num_workers=num_workers,
                                order=order, seed=seed, distributed=distributed,
                                drop_last=drop_last, pipelines=pipelines), [self.images])
        self.views = views

    def set_resolution(self, resolution: int) -> None:
        self.images.output_size = resolution

    def __iter__(self):
        for (images,) in self._next_pass():
            yield tuple(images[:, v].permute(0, 3, 1, 2).contiguous(
                memory_format=torch.channels_last) for v in range(self.views))
