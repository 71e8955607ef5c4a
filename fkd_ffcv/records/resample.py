"""The crop resize of the loaders and of labelling: one box of a decoded (H, W, 3) uint8 image
-> an (S, S, 3) uint8 crop, optionally mirrored, with a named filter.

- `antialias`: a separable triangle (bilinear) filter whose support widens with the downscale
  factor, PIL's antialiased bilinear and torchvision's `antialias=True` (what FKD's original
  data path and torchvision-trained teachers saw). Each output sample is the weighted mean of
  the input pixels under its footprint, so a downscale does not alias; an upscale is plain
  bilinear.
- `bicubic`: the same with the cubic kernel (a = -0.5), PIL's antialiased bicubic (what timm's
  bicubic teachers were trained on); twice the taps.
- `bilinear`: the triangle at a fixed support of one pixel: OpenCV's INTER_LINEAR (to within
  rounding), which samples without filtering and aliases on downscales.
- `area`: OpenCV's INTER_AREA through FFCV's `resize_crop`, the loaders' filter before these
  (slow on the non-integer downscales that dominate ImageNet-shaped images, docs/benchmarks.md).

The first three share one implementation: per axis, taps computed once per crop (first input
index and normalised weights of every output index), then a vertical pass over whole rows of
the box (contiguous, so it vectorises) and a horizontal pass that writes the output, mirrored
when asked (at mirrored positions: no separate pass). Pixel centres sit at half-integers, as in
OpenCV, PIL and torchvision; taps never reach outside the box (crop, then resize). Each filter
is a C function that the pipelines call (`_c_resize`), kept in numba's disk cache.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from ffcv.libffcv import resize_crop

from fkd_ffcv.defaults import DEFAULT_RESIZE, RESIZE_FILTERS
from fkd_ffcv.numba_cache import on_disk

_CODES = {name: code for code, name in enumerate(RESIZE_FILTERS)}
_FIXED, _TRIANGLE, _CUBIC = 0, 1, 2  # the separable filters' kernels (_taps)
_KERNELS = {'bilinear': _FIXED, 'antialias': _TRIANGLE, 'bicubic': _CUBIC}


def filter_code(name: str) -> int:
    """The compiled code's number for a filter name; an unknown name is refused with the
    choices listed."""
    if name not in _CODES:
        raise ValueError(f"unknown resize filter {name!r}: choose one of "
                         f"{', '.join(RESIZE_FILTERS)}")
    return _CODES[name]


@nb.njit(cache=on_disk())
def _kernel(kernel, t):
    """The triangle (support 1) or the cubic of a = -0.5 (support 2) at distance t >= 0."""
    if kernel == _CUBIC:
        if t < 1.0:
            return (1.5 * t - 2.5) * t * t + 1.0
        return ((-0.5 * t + 2.5) * t - 4.0) * t + 2.0 if t < 2.0 else 0.0
    return 1.0 - t if t < 1.0 else 0.0


@nb.njit(cache=on_disk())
def _taps(size_in, size_out, kernel):
    """Per output index: the first input index, the tap count and the normalised weights.
    _FIXED: OpenCV INTER_LINEAR's two neighbours of the centre (edges replicated); _TRIANGLE
    and _CUBIC: the kernel stretched by the downscale factor (PIL's antialiased filters)."""
    scale = size_in / size_out
    stretch = max(scale, 1.0)
    support = (2.0 if kernel == _CUBIC else 1.0) * (stretch if kernel != _FIXED else 1.0)
    width = int(np.ceil(support)) * 2 + 1
    first = np.empty(size_out, np.int64)
    count = np.empty(size_out, np.int64)
    weights = np.zeros((size_out, width), np.float32)
    for o in range(size_out):
        centre = (o + 0.5) * scale
        if kernel == _FIXED:
            left = int(np.floor(centre - 0.5))
            frac = centre - 0.5 - left
            lo = min(max(left, 0), size_in - 1)
            right = min(max(left + 1, 0), size_in - 1)
            first[o] = lo
            if right == lo:
                count[o], weights[o, 0] = 1, 1.0
            else:
                count[o] = 2
                weights[o, 0], weights[o, 1] = 1.0 - frac, frac
            continue
        lo = max(int(np.floor(centre - support + 0.5)), 0)
        hi = min(int(np.floor(centre + support + 0.5)), size_in)
        total = 0.0
        for x in range(lo, hi):
            w = _kernel(kernel, abs(x + 0.5 - centre) / stretch)
            weights[o, x - lo] = w
            total += w
        first[o], count[o] = lo, hi - lo
        for t in range(hi - lo):
            weights[o, t] /= total
    return first, count, weights


@nb.njit(cache=on_disk(), fastmath=True)
def _two_taps(line, start, second, weights, row, flip):
    """The horizontal pass with two taps per output pixel, unrolled; + 0.5 because the
    conversion to uint8 truncates."""
    out_w = row.shape[0] // 3
    for ox in range(out_w):
        a, b, w0, w1 = start[ox], second[ox], weights[ox, 0], weights[ox, 1]
        col = 3 * (out_w - 1 - ox if flip else ox)
        row[col] = np.float32(0.5) + w0 * line[a] + w1 * line[b]
        row[col + 1] = np.float32(0.5) + w0 * line[a + 1] + w1 * line[b + 1]
        row[col + 2] = np.float32(0.5) + w0 * line[a + 2] + w1 * line[b + 2]


@nb.njit(cache=on_disk(), fastmath=True)
def _many_taps(line, start, taps, weights, row, flip):
    """The horizontal pass with any number of taps per output pixel."""
    out_w = row.shape[0] // 3
    for ox in range(out_w):
        source, kernel = line[start[ox]:], weights[ox]
        r = g = b = np.float32(0.5)
        for t in range(taps[ox]):
            r += kernel[t] * source[3 * t]
            g += kernel[t] * source[3 * t + 1]
            b += kernel[t] * source[3 * t + 2]
        col = 3 * (out_w - 1 - ox if flip else ox)
        row[col], row[col + 1], row[col + 2] = r, g, b


@nb.njit(cache=on_disk(), fastmath=True)
def _separable(pixels, i, j, h, w, out, flip, kernel):
    """The separable filters, one output row at a time, in float32:
    - vertical: the row's input rows (columns j .. j+w) summed into `line`; slices of whole
      rows keep the loop free of index checks, so it vectorises;
    - horizontal: each output pixel's taps of `line` into `row` (at the mirrored position when
      `flip`), then one vectorised rounding pass into the uint8 output row.
    Both buffers stay in the core's cache. Numbers: docs/benchmarks.md."""
    out_h, out_w = out.shape[0], out.shape[1]
    y_first, y_count, y_weights = _taps(h, out_h, kernel)
    x_first, x_count, x_weights = _taps(w, out_w, kernel)
    x_start = x_first.astype(np.uint64) * np.uint64(3)  # unsigned: no negative-index checks
    x_taps = x_count.astype(np.uint64)
    # At most two taps per output pixel (upscales, bilinear): the horizontal pass unrolled,
    # with the second tap's index clamped where there is one tap (its weight is 0 there).
    pairs = x_taps.max() <= 2
    x_next = np.minimum(x_first + 1, w - 1).astype(np.uint64) * np.uint64(3)
    line = np.empty(w * 3, np.float32)
    row = np.empty(out_w * 3, np.float32)
    for oy in range(out_h):
        top = i + y_first[oy]
        source = pixels[top, j:j + w].reshape(-1)
        weight = y_weights[oy, 0]
        for x in range(w * 3):
            line[x] = weight * np.float32(source[x])
        for t in range(1, y_count[oy]):
            source = pixels[top + t, j:j + w].reshape(-1)
            weight = y_weights[oy, t]
            for x in range(w * 3):
                line[x] += weight * np.float32(source[x])
        if pairs:
            _two_taps(line, x_start, x_next, x_weights, row, flip)
        else:
            _many_taps(line, x_start, x_taps, x_weights, row, flip)
        target = out[oy].reshape(-1)
        for x in range(out_w * 3):
            target[x] = np.uint8(min(max(row[x], np.float32(0.0)), np.float32(255.0)))


@nb.njit(cache=on_disk())
def mirror(image):
    """Flip an (H, W, 3) image left-right in place. Whole pixels are swapped with the
    channel loop written out: 3x faster than a loop over channels (0.06 vs 0.18 ms at
    224 px)."""
    width = image.shape[1]
    for row in range(image.shape[0]):
        line = image[row]
        for col in range(width // 2):
            other = width - 1 - col
            r, g, b = line[col, 0], line[col, 1], line[col, 2]
            line[col, 0], line[col, 1] = line[other, 0], line[other, 1]
            line[col, 2] = line[other, 2]
            line[other, 0], line[other, 1], line[other, 2] = r, g, b


_C_RESIZE = {}  # kernel -> (numba cfunc, its ctypes handle), made once per process


def _c_resize(kernel: int):
    """One separable filter as a C-callable function (a numba cfunc with the kernel a
    compile-time constant, compiled on first use) and its ctypes handle. Pipelines call it
    through the handle, as they call FFCV's C resize: numba then links no copy of the filter
    into each pipeline it compiles (that had doubled a loader's compile time, 2.3 -> 4.8 s)."""
    if kernel not in _C_RESIZE:
        import ctypes
        from numba import types
        arg = types.int64

        @nb.cfunc(types.void(types.voidptr, arg, arg, arg, arg, arg, arg, types.voidptr, arg,
                             arg, arg), cache=on_disk())
        def resize_c(source, height, width, i, j, h, w, target, side_h, side_w, flip):
            pixels = nb.carray(source, (height, width, 3), np.uint8)
            out = nb.carray(target, (side_h, side_w, 3), np.uint8)
            _separable(pixels, i, j, h, w, out, flip != 0, kernel)

        handle = ctypes.CFUNCTYPE(None, ctypes.c_void_p, *6 * [ctypes.c_int64],
                                  ctypes.c_void_p, *3 * [ctypes.c_int64])(resize_c.address)
        _C_RESIZE[kernel] = resize_c, handle
    return _C_RESIZE[kernel][1]


def make_resize(code: int):
    """A compiled resize(pixels, i, j, h, w, out, flip) for one filter code: box (i, j, h, w)
    of `pixels` into `out` (S, S, 3) uint8, contiguous, mirrored when `flip`. Both kinds call
    C functions: FFCV's resize for `area`, `_c_resize` for the separable filters."""
    from ffcv.pipeline.compiler import Compiler
    if code == _CODES['area']:
        resize_crop_c = Compiler.compile(resize_crop)

        def resize(pixels, i, j, h, w, out, flip):
            resize_crop_c(pixels, i, i + h, j, j + w, out)
            if flip:
                mirror(out)
        return Compiler.compile(resize)
    resize_c = _c_resize(_KERNELS[RESIZE_FILTERS[code]])

    def resize(pixels, i, j, h, w, out, flip):
        resize_c(pixels.ctypes.data, pixels.shape[0], pixels.shape[1], i, j, h, w,
                 out.ctypes.data, out.shape[0], out.shape[1], 1 if flip else 0)
    return Compiler.compile(resize)


_RESIZERS = {}


def resize_box(pixels: np.ndarray, box, size: int, filter: str = DEFAULT_RESIZE,
               flip: bool = False) -> np.ndarray:
    """Python entry: crop pixel box (i, j, h, w) of `pixels` (H, W, 3) uint8 and resize it to
    (size, size, 3) with `filter`, mirrored when `flip`: exactly what the decoders compute."""
    code = filter_code(filter)
    if code not in _RESIZERS:
        _RESIZERS[code] = make_resize(code)
    i, j, h, w = (int(v) for v in box)
    if not (0 <= i and 0 <= j and 0 < h and 0 < w and i + h <= pixels.shape[0]
            and j + w <= pixels.shape[1]):
        raise ValueError(f"box {(i, j, h, w)} is not inside an image of {pixels.shape[:2]}")
    out = np.empty((size, size, 3), np.uint8)
    _RESIZERS[code](np.ascontiguousarray(pixels), i, j, h, w, out, bool(flip))
    return out
