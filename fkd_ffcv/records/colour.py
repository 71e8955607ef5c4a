"""MoCo v2's colour augmentation of a crop, as six stored bytes and the numba code that applies
them: colour jitter (brightness, contrast, saturation, hue, in a drawn order), grayscale and a
Gaussian blur, each drawn on or off. A stored record carries the code its teacher saw
(`crops.seeded_colour` draws one), so a student replaying the record sees the same image.

The arithmetic is torchvision's on float images (transforms.functional: adjust_brightness,
adjust_contrast, adjust_saturation, adjust_hue, rgb_to_grayscale, gaussian_blur with reflected
borders) in float32 on 0..255, rounded to uint8 once at the end; tests compare it with
torchvision pixel by pixel. The blur's kernel spans 3 sigma each side (2 * ceil(3 sigma) + 1
taps); MoCo v2 blurred with PIL's filter of radius sigma, which approximates the same Gaussian.

The code (uint8[6]):
  0: bit 0 jitter on, bit 1 grayscale on, bit 2 blur on; bits 3-7 the jitter's order, an index
     0..23 of the permutations of (brightness, contrast, saturation, hue) in lexicographic order
  1, 2, 3: brightness, contrast and saturation factors, q / 127.5 (0 .. 2)
  4: hue shift, (q - 128) / 255 (-0.5 .. 0.5, in turns)
  5: blur sigma, q / 63.75 (0 .. 4 px)
A factor is drawn, then quantised, and the quantised value is what any crop gets.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from fkd_ffcv.defaults import COLOUR_BYTES  # noqa: F401 (the code's length, re-exported)
from fkd_ffcv.numba_cache import on_disk

JITTER, GRAYSCALE, BLUR = 1, 2, 4  # bits of byte 0
FACTOR_STEP = 1 / 127.5
HUE_STEP = 1 / 255
SIGMA_STEP = 1 / 63.75
# MoCo v2's augmentation (moco/main_moco.py, --aug-plus): ColorJitter(0.4, 0.4, 0.4, 0.1)
# with p = 0.8, RandomGrayscale(p = 0.2), GaussianBlur(sigma in [0.1, 2]) with p = 0.5.
MOCO_V2 = dict(jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
               grayscale_p=0.2, blur_p=0.5, sigma_lo=0.1, sigma_hi=2.0)
# S2-BNN's distillation (Distillation_only/step1/main_moco.py, --aug-plus): the same jitter,
# applied with p = 0.6, and the blur with p = 0.2.
S2BNN = {**MOCO_V2, 'jitter_p': 0.6, 'blur_p': 0.2}
AUGMENTATIONS = {'moco_v2': MOCO_V2, 's2bnn': S2BNN}  # by --labels.colour's name


def factor_code(factor: float) -> int:
    return int(min(255, max(0, round(factor / FACTOR_STEP))))


def hue_code(shift: float) -> int:
    return int(min(255, max(0, round(shift / HUE_STEP) + 128)))


def sigma_code(sigma: float) -> int:
    return int(min(255, max(1, round(sigma / SIGMA_STEP))))


def permutation_index(order) -> int:
    """The index 0..23 of a permutation of range(4) in lexicographic order."""
    rest, index = list(range(4)), 0
    for position, op in enumerate(order):
        index += rest.index(op) * (6, 2, 1, 1)[position]
        rest.remove(op)
    return index


@nb.njit(cache=on_disk())
def permutation(index):
    """The permutation of range(4) with lexicographic index `index` (permutation_index's
    inverse)."""
    rest = [0, 1, 2, 3]
    order = np.empty(4, np.int64)
    for position in range(4):
        step = (6, 2, 1, 1)[position]
        k = index // step
        index -= k * step
        order[position] = rest.pop(k)
    return order


@nb.njit(cache=on_disk())
def _gray(r, g, b):
    return np.float32(0.2989) * r + np.float32(0.587) * g + np.float32(0.114) * b


@nb.njit(cache=on_disk())
def _clip(x):
    return min(max(x, np.float32(0.0)), np.float32(255.0))


@nb.njit(cache=on_disk())
def _brightness(x, f):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            for c in range(3):
                x[i, j, c] = _clip(f * x[i, j, c])


@nb.njit(cache=on_disk())
def _contrast(x, f):
    total = 0.0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            total += _gray(x[i, j, 0], x[i, j, 1], x[i, j, 2])
    mean = np.float32(total / (x.shape[0] * x.shape[1]))
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            for c in range(3):
                x[i, j, c] = _clip(f * x[i, j, c] + (np.float32(1.0) - f) * mean)


@nb.njit(cache=on_disk())
def _saturation(x, f):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            gray = _gray(x[i, j, 0], x[i, j, 1], x[i, j, 2])
            for c in range(3):
                x[i, j, c] = _clip(f * x[i, j, c] + (np.float32(1.0) - f) * gray)


@nb.njit(cache=on_disk())
def _hue(x, shift):
    """torchvision's _rgb2hsv, h shifted by `shift` turns (mod 1), then _hsv2rgb, on 0..1."""
    scale = np.float32(255.0)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            r, g, b = x[i, j, 0] / scale, x[i, j, 1] / scale, x[i, j, 2] / scale
            maxc, minc = max(r, g, b), min(r, g, b)
            same = maxc == minc
            cr = maxc - minc
            s = cr / (np.float32(1.0) if same else maxc)
            div = np.float32(1.0) if same else cr
            rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
            if maxc == r:
                h = bc - gc
            elif maxc == g:
                h = np.float32(2.0) + rc - bc
            else:
                h = np.float32(4.0) + gc - rc
            h = np.fmod(h / np.float32(6.0) + np.float32(1.0), np.float32(1.0))
            h = np.fmod(h + shift, np.float32(1.0))
            if h < 0:
                h += np.float32(1.0)
            v = maxc
            h6 = h * np.float32(6.0)
            k = np.floor(h6)
            f = h6 - k
            p = min(max(v * (np.float32(1.0) - s), np.float32(0.0)), np.float32(1.0))
            q = min(max(v * (np.float32(1.0) - s * f), np.float32(0.0)), np.float32(1.0))
            t = min(max(v * (np.float32(1.0) - s * (np.float32(1.0) - f)), np.float32(0.0)),
                    np.float32(1.0))
            sector = np.int64(k) % 6
            if sector == 0:
                r, g, b = v, t, p
            elif sector == 1:
                r, g, b = q, v, p
            elif sector == 2:
                r, g, b = p, v, t
            elif sector == 3:
                r, g, b = p, q, v
            elif sector == 4:
                r, g, b = t, p, v
            else:
                r, g, b = v, p, q
            x[i, j, 0], x[i, j, 1], x[i, j, 2] = r * scale, g * scale, b * scale


@nb.njit(cache=on_disk())
def _grayscale(x):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            gray = _gray(x[i, j, 0], x[i, j, 1], x[i, j, 2])
            x[i, j, 0] = x[i, j, 1] = x[i, j, 2] = gray


@nb.njit(cache=on_disk())
def _reflect(index, n):
    """torch's reflect padding: -1 -> 1, n -> n - 2 (the edge is not repeated)."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    index = abs(index) % period
    return period - index if index >= n else index


@nb.njit(cache=on_disk())
def _blur(x, sigma):
    """Separable Gaussian, 2 * ceil(3 sigma) + 1 taps, borders reflected: rows, then columns."""
    radius = np.int64(np.ceil(np.float32(3.0) * sigma))
    taps = np.empty(2 * radius + 1, np.float32)
    for t in range(-radius, radius + 1):
        u = np.float32(t) / sigma
        taps[t + radius] = np.exp(np.float32(-0.5) * u * u)
    taps /= taps.sum()
    height, width = x.shape[0], x.shape[1]
    rows = np.empty_like(x)
    for i in range(height):
        for j in range(width):
            for c in range(3):
                acc = np.float32(0.0)
                for t in range(-radius, radius + 1):
                    acc += taps[t + radius] * x[i, _reflect(j + t, width), c]
                rows[i, j, c] = acc
    for i in range(height):
        for j in range(width):
            for c in range(3):
                acc = np.float32(0.0)
                for t in range(-radius, radius + 1):
                    acc += taps[t + radius] * rows[_reflect(i + t, height), j, c]
                x[i, j, c] = acc


@nb.njit(cache=on_disk())
def colour_float(x, code, sigma_scale):
    """Apply `code` to a float32 (H, W, 3) image on 0..255, in place; the blur's sigma is
    multiplied by `sigma_scale` (a crop cut at another side than the code was drawn for)."""
    flags = code[0] & 7
    if flags & 1:
        order = permutation(np.int64(code[0] >> 3))
        for op in order:
            if op == 0:
                _brightness(x, np.float32(code[1] / 127.5))
            elif op == 1:
                _contrast(x, np.float32(code[2] / 127.5))
            elif op == 2:
                _saturation(x, np.float32(code[3] / 127.5))
            else:
                _hue(x, np.float32((np.int64(code[4]) - 128) / 255.0))
    if flags & 2:
        _grayscale(x)
    if flags & 4:
        _blur(x, np.float32(code[5] / 63.75 * sigma_scale))


@nb.njit(cache=on_disk(), nogil=True)
def apply_colour(image, code, sigma_scale):
    """Apply `code` to a uint8 (H, W, 3) image in place (one rounding, at the end); see
    colour_float for `sigma_scale`."""
    if code[0] & 7 == 0:
        return
    x = image.astype(np.float32)
    colour_float(x, code, sigma_scale)
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            for c in range(3):
                image[i, j, c] = np.uint8(min(max(np.floor(x[i, j, c] + 0.5), 0.0), 255.0))
