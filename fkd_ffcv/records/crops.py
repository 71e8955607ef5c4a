"""Crop records: RandomResizedCrop boxes and flips, their stored form, and replaying them.

A box is stored as FKD normalises it, (i/H, j/W, h/H, w/W) with i the top row and j the left
column, each quantised to int16 units of 1/32767 of the stored image's side. The box is
quantised *before* the teacher's crop is cut, and `box_pixels` turns the stored form back into
the same pixel box on any replay (for sides up to 32767 px it is exactly the sampled box), so a
student crop covers exactly the pixels the teacher saw.

Boxes and flips come from `seeded_crop`, torchvision's RandomResizedCrop algorithm on a
splitmix64 stream seeded by (seed, draw, sample): generation draws record r with draw = r, the
plain training loader draws pass p's crop with draw = p (decoders.py), one implementation.
`record_index` picks the record a loader replays in a given epoch and crop slot.

Order of operations on replay, for teacher and student alike: crop the box from the decoded
stored image, resize to the output size with the named interpolation, then mirror if flipped.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from fkd_ffcv.defaults import DEFAULT_RESIZE
from fkd_ffcv.numba_cache import on_disk

BOX_UNITS = 32767
# FKD's scale range for ImageNet (the upper bound matched its teacher's training); small images
# such as 32 px ones get a larger minimum by default, so no crop is a few pixels.
IMAGENET_SCALE = (0.08, 0.936)
SMALL_IMAGE_SCALE = (0.35, 1.0)
SMALL_IMAGE_SIDE = 64
RATIO = (3 / 4, 4 / 3)


@nb.njit(cache=on_disk())
def mix64(x):
    """splitmix64 finaliser: a well-spread 64-bit hash of x."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@nb.njit(cache=on_disk())
def _uniform(state):
    """(next state, uniform float in [0, 1)) of a splitmix64 stream."""
    state = state + np.uint64(0x9E3779B97F4A7C15)
    return state, np.float64(mix64(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@nb.njit(cache=on_disk())
def seeded_crop(seed, draw, sample, height, width, scale_lo, scale_hi, ratio_lo, ratio_hi):
    """(i, j, h, w, flip) of a sample's crop number `draw`: torchvision's RandomResizedCrop
    (10 tries, then a centre crop clipped to the ratio range) and a flip with p = 1/2."""
    state = mix64(np.uint64(seed) * np.uint64(0xD1B54A32D192ED03) + mix64(
        np.uint64(draw) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(sample)))
    area = height * width
    log_lo, log_hi = np.log(ratio_lo), np.log(ratio_hi)
    for _ in range(10):
        state, u = _uniform(state)
        target = area * (scale_lo + (scale_hi - scale_lo) * u)
        state, u = _uniform(state)
        aspect = np.exp(log_lo + (log_hi - log_lo) * u)
        w = np.int64(np.round(np.sqrt(target * aspect)))
        h = np.int64(np.round(np.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            state, u = _uniform(state)
            i = np.int64(u * (height - h + 1))
            state, u = _uniform(state)
            j = np.int64(u * (width - w + 1))
            state, u = _uniform(state)
            return i, j, h, w, u < 0.5
    in_ratio = width / height
    if in_ratio < ratio_lo:
        w, h = width, np.int64(np.round(width / ratio_lo))
    elif in_ratio > ratio_hi:
        h, w = height, np.int64(np.round(height * ratio_hi))
    else:
        w, h = width, height
    state, u = _uniform(state)
    return (height - h) // 2, (width - w) // 2, h, w, u < 0.5


@nb.njit(cache=on_disk())
def seeded_colour(seed, draw, sample, jitter_p, brightness, contrast, saturation, hue,
                  grayscale_p, blur_p, sigma_lo, sigma_hi, code):
    """Fill `code` (uint8[6], colour.py's form) with the colour augmentation of a sample's crop
    number `draw`, drawn as torchvision's RandomApply(ColorJitter) (a random order of the four
    adjustments, each factor uniform in [1 - x, 1 + x], the hue shift in [-hue, hue]),
    RandomGrayscale and a RandomApply'd blur of sigma uniform in [sigma_lo, sigma_hi]. The
    stream is not seeded_crop's: the colour is independent of the box."""
    state = mix64(np.uint64(seed) * np.uint64(0xD1B54A32D192ED03) + mix64(
        np.uint64(draw) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(sample)) ^
        np.uint64(0x5851F42D4C957F2D))
    flags, rank = 0, 0
    code[1], code[2], code[3], code[4], code[5] = 128, 128, 128, 128, 0
    state, u = _uniform(state)
    if u < jitter_p:
        flags |= 1
        order = np.arange(4)
        for position in range(3, 0, -1):  # Fisher-Yates
            state, u = _uniform(state)
            k = np.int64(u * (position + 1))
            order[position], order[k] = order[k], order[position]
        for position in range(4):  # its lexicographic index (colour.permutation's inverse)
            smaller = 0
            for later in range(position + 1, 4):
                smaller += order[later] < order[position]
            rank += smaller * (6, 2, 1, 1)[position]
        for byte, strength in ((1, brightness), (2, contrast), (3, saturation)):
            state, u = _uniform(state)
            factor = max(0.0, 1.0 - strength) + (1.0 + strength - max(0.0, 1.0 - strength)) * u
            code[byte] = min(255, max(0, np.int64(np.round(factor * 127.5))))
        state, u = _uniform(state)
        code[4] = min(255, max(0, np.int64(np.round((2.0 * u - 1.0) * hue * 255.0)) + 128))
    state, u = _uniform(state)
    if u < grayscale_p:
        flags |= 2
    state, u = _uniform(state)
    if u < blur_p:
        flags |= 4
        state, u = _uniform(state)
        code[5] = min(255, max(1, np.int64(np.round((sigma_lo + (sigma_hi - sigma_lo) * u)
                                                     * 63.75))))
    code[0] = flags | (rank << 3)


@nb.njit(cache=on_disk())
def record_index(seed, epoch, sample, slot, n):
    """Record used by `sample` in slot `slot` of the pass that starts at `epoch` (one draw per
    epoch: a pass of K crops spans K epochs).

    Draw t = epoch + slot belongs to cycle t // n; within a cycle the records are visited in
    the order of a bijection a * pos + b (mod n), a coprime to n, seeded by (seed, cycle,
    sample): every record once per cycle, a different order each cycle."""
    t = epoch + slot
    cycle, pos = t // n, t % n
    h = mix64(np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + mix64(
        np.uint64(cycle) * np.uint64(0xD1B54A32D192ED03) + np.uint64(sample)))
    if n == 1:
        return 0
    a = np.int64(h % np.uint64(n - 1)) + 1
    while _gcd(a, n) != 1:
        a = a % (n - 1) + 1
    b = np.int64((h >> np.uint64(32)) % np.uint64(n))
    return (a * pos + b) % n


@nb.njit(cache=on_disk())
def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


def default_scale(height: int, width: int):
    return SMALL_IMAGE_SCALE if max(height, width) <= SMALL_IMAGE_SIDE else IMAGENET_SCALE


def quantize_boxes(boxes, height: int, width: int) -> np.ndarray:
    """Pixel boxes (n, 4) -> stored int16 (n, 4) normalised boxes."""
    sides = np.array([height, width, height, width], np.float64)
    return np.round(np.asarray(boxes, np.float64) / sides * BOX_UNITS).astype(np.int16)


@nb.njit(cache=on_disk())
def box_pixels(stored, height, width):
    """One stored box (an integer array of 4, as stored: int16) -> (i, j, h, w) pixels inside a
    height x width image, integer arithmetic only. Compiled: the numba decoders and Python code
    (labelling, tests) share this one formula."""
    qi, qj = np.int64(stored[0]), np.int64(stored[1])
    qh, qw = np.int64(stored[2]), np.int64(stored[3])
    height, width = np.int64(height), np.int64(width)
    half = BOX_UNITS // 2
    i = (qi * height + half) // BOX_UNITS
    j = (qj * width + half) // BOX_UNITS
    h = max(1, (qh * height + half) // BOX_UNITS)
    w = max(1, (qw * width + half) // BOX_UNITS)
    return min(i, height - h), min(j, width - w), h, w


def sample_records(seed: int, index: int, height: int, width: int, n: int, scale=None,
                   ratio=RATIO):
    """The n crop records of sample `index`: stored boxes (n, 4) int16 and flips (n,) bool.

    Record r is `seeded_crop(seed, r, index, ...)`, the draw the plain training loader makes
    for pass r: records depend on (seed, index, image size) only, so any shard, rerun or
    resume draws the same ones."""
    scale = scale or default_scale(height, width)
    boxes = np.empty((n, 4), np.int64)
    flips = np.empty(n, bool)
    for r in range(n):
        i, j, h, w, flips[r] = seeded_crop(seed, r, index, height, width, scale[0], scale[1],
                                           ratio[0], ratio[1])
        boxes[r] = (i, j, h, w)
    return quantize_boxes(boxes, height, width), flips


def colour_codes(seed: int, index: int, n: int, augmentation: str = 'moco_v2') -> np.ndarray:
    """The colour codes (n, 6) uint8 of sample `index`'s n records: record r's is
    `seeded_colour(seed, r, index, ...)` with the named augmentation's settings
    (colour.AUGMENTATIONS)."""
    from fkd_ffcv.records.colour import AUGMENTATIONS, COLOUR_BYTES
    a = AUGMENTATIONS[augmentation]
    codes = np.zeros((n, COLOUR_BYTES), np.uint8)
    for r in range(n):
        seeded_colour(seed, r, index, a['jitter_p'], a['brightness'], a['contrast'],
                      a['saturation'], a['hue'], a['grayscale_p'], a['blur_p'], a['sigma_lo'],
                      a['sigma_hi'], codes[r])
    return codes


def cut_crops(pixels: np.ndarray, stored_boxes, flips, size: int,
              interpolation: str = DEFAULT_RESIZE) -> np.ndarray:
    """Replay records on a decoded image (H, W, 3) -> uint8 crops (n, size, size, 3)."""
    # an unknown interpolation is refused there, named
    from fkd_ffcv.records.resample import resize_box
    height, width = pixels.shape[:2]
    out = np.empty((len(stored_boxes), size, size, 3), np.uint8)
    for r, (stored, flip) in enumerate(zip(stored_boxes, flips)):
        out[r] = resize_box(pixels, box_pixels(stored, height, width), size, interpolation,
                            flip)
    return out
