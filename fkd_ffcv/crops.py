"""Crop records: RandomResizedCrop boxes and flips, their stored form, and replaying them.

A box is stored as FKD normalises it, (i/H, j/W, h/H, w/W) with i the top row and j the left
column, each quantised to int16 units of 1/32767 of the stored image's side. The box is
quantised *before* the teacher's crop is cut, and `box_pixels` turns the stored form back into
the same pixel box on any replay (for sides up to 32767 px it is exactly the sampled box), so a
student crop covers exactly the pixels the teacher saw.

Order of operations on replay, for teacher and student alike: crop the box from the decoded
stored image, resize to the output size with the named interpolation, then mirror if flipped.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

BOX_UNITS = 32767
INTERPOLATIONS = {'bilinear': cv2.INTER_LINEAR, 'bicubic': cv2.INTER_CUBIC,
                  'area': cv2.INTER_AREA}
# FKD's scale range for ImageNet (the upper bound matched its teacher's training); small images
# such as 32 px ones get a larger minimum by default, so no crop is a few pixels.
IMAGENET_SCALE = (0.08, 0.936)
SMALL_IMAGE_SCALE = (0.35, 1.0)
SMALL_IMAGE_SIDE = 64
RATIO = (3 / 4, 4 / 3)


def default_scale(height: int, width: int):
    return SMALL_IMAGE_SCALE if max(height, width) <= SMALL_IMAGE_SIDE else IMAGENET_SCALE


def sample_boxes(rng: np.random.Generator, height: int, width: int, n: int, scale, ratio=RATIO):
    """n RandomResizedCrop boxes (i, j, h, w) in pixels, as torchvision draws them: up to 10
    tries for an area in `scale` and a log-uniform aspect ratio in `ratio`, else the whole
    image's centre crop clipped to `ratio`."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    boxes = np.empty((n, 4), np.int64)
    for r in range(n):
        for _ in range(10):
            target = area * rng.uniform(scale[0], scale[1])
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                i = int(rng.integers(0, height - h + 1))
                j = int(rng.integers(0, width - w + 1))
                break
        else:
            in_ratio = width / height
            if in_ratio < min(ratio):
                w, h = width, int(round(width / min(ratio)))
            elif in_ratio > max(ratio):
                h, w = height, int(round(height * max(ratio)))
            else:
                w, h = width, height
            i, j = (height - h) // 2, (width - w) // 2
        boxes[r] = (i, j, h, w)
    return boxes


def quantize_boxes(boxes, height: int, width: int) -> np.ndarray:
    """Pixel boxes (n, 4) -> stored int16 (n, 4) normalised boxes."""
    sides = np.array([height, width, height, width], np.float64)
    return np.round(np.asarray(boxes, np.float64) / sides * BOX_UNITS).astype(np.int16)


def box_pixels(stored, height: int, width: int):
    """One stored box -> (i, j, h, w) pixels inside a height x width image, integer arithmetic
    only (the numba decoders use the same formula)."""
    qi, qj, qh, qw = (int(v) for v in stored)
    half = BOX_UNITS // 2
    i = (qi * height + half) // BOX_UNITS
    j = (qj * width + half) // BOX_UNITS
    h = max(1, (qh * height + half) // BOX_UNITS)
    w = max(1, (qw * width + half) // BOX_UNITS)
    i, j = min(i, height - h), min(j, width - w)
    return i, j, h, w


def sample_records(seed: int, index: int, height: int, width: int, n: int, scale=None,
                   ratio=RATIO):
    """The n crop records of sample `index`: stored boxes (n, 4) int16 and flips (n,) bool.

    They depend on (seed, index, image size) only, so any shard, rerun or resume draws the
    same records for the same sample."""
    rng = np.random.default_rng([seed, index])
    boxes = sample_boxes(rng, height, width, n, scale or default_scale(height, width), ratio)
    flips = rng.random(n) < 0.5
    return quantize_boxes(boxes, height, width), flips


def cut_crops(pixels: np.ndarray, stored_boxes, flips, size: int,
              interpolation: str = 'bicubic') -> np.ndarray:
    """Replay records on a decoded image (H, W, 3) -> uint8 crops (n, size, size, 3)."""
    height, width = pixels.shape[:2]
    mode = INTERPOLATIONS[interpolation]
    out = np.empty((len(stored_boxes), size, size, 3), np.uint8)
    for r, (stored, flip) in enumerate(zip(stored_boxes, flips)):
        i, j, h, w = box_pixels(stored, height, width)
        crop = cv2.resize(pixels[i:i + h, j:j + w], (size, size), interpolation=mode)
        out[r] = crop[:, ::-1] if flip else crop
    return out
