"""FFCV loaders that turn a beton into batches of channels-last uint8 images and labels."""
from __future__ import annotations

import os

import torch
from ffcv.fields.basics import IntDecoder
from ffcv.fields.rgb_image import CenterCropRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.transforms import Squeeze, ToTensor, ToTorchImage

from .beton import Beton
from .fields import IMAGE_FIELD, LABEL_FIELD


def eval_loader(path, batch_size: int = 256, resolution: int = 224, ratio: float = 224 / 256,
                num_workers: int = -1, device: str = 'cpu') -> Loader:
    """Every sample once, in order: centre crop of side `ratio` x the shorter side, resized to
    `resolution`, as (N, 3, H, W) channels-last uint8, and int64 labels."""
    if num_workers < 1:
        num_workers = len(os.sched_getaffinity(0))
    device = torch.device(device)
    image_pipeline = [CenterCropRGBImageDecoder((resolution, resolution), ratio), ToTensor(),
                      ToTorchImage(channels_last=True)]
    label_pipeline = [IntDecoder(), ToTensor(), Squeeze()]
    if device.type == 'cuda':
        from ffcv.transforms import ToDevice
        image_pipeline.append(ToDevice(device, non_blocking=True))
        label_pipeline.append(ToDevice(device, non_blocking=True))
    pipelines = {name: None for name in Beton(path).field_names}  # other fields: not decoded
    pipelines.update({IMAGE_FIELD: image_pipeline, LABEL_FIELD: label_pipeline})
    return Loader(str(path), batch_size=batch_size, num_workers=num_workers,
                  order=OrderOption.SEQUENTIAL, drop_last=False, pipelines=pipelines)
