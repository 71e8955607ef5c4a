"""Numba-compiled FFCV decoders that replay FKD crop records, and a seeded random crop.

`MultiCropDecoder` decodes each image once and cuts K recorded crops from it (box, resize,
flip), one (K, S, S, 3) uint8 array per image; `RecordLabelDecoder` gives the same K records'
stored labels (classes, probability codes, flags). Both pick the records of pass p with `record_index`, a
function of (seed, pass, sample, slot) only, so the two pipelines agree without talking.
`SeededRandomResizedCropDecoder` is the plain (hard-label) training crop: `crops.seeded_crop`
(torchvision's RandomResizedCrop and a flip) drawn from (seed, pass, sample), so runs and
resumes repeat (FFCV's own draws from numba's unseeded generator).

Runtime state without recompiling: FFCV compiles a pipeline once, and values captured by the
compiled code are frozen then; but it re-declares every operation's memory at the start of each
pass and hands the buffers to the compiled code. So the output side S is the output buffer's
shape, and the pass number travels as the shape of a small tag buffer, (1 + p // 256,
1 + p % 256) per sample.

Cross-field reads: a decoder only sees its own field's metadata, so the decoders capture the
per-sample file offsets of the record fields they read (8 B per image per field) and read the
records through FFCV's memory reader.
"""
from __future__ import annotations

from dataclasses import replace

import numba as nb
import numpy as np
from ffcv.fields.rgb_image import IMAGE_MODES
from ffcv.libffcv import imdecode, resize_crop
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation

from .crops import BOX_UNITS, mix64, seeded_crop
from .soft_labels import FLAG_FLIP


@nb.njit(cache=False)
def record_index(seed, pass_index, sample, slot, n, k):
    """Record used by `sample` in slot `slot` of pass `pass_index` (K = k crops per pass).

    Draw t = pass * k + slot belongs to cycle t // n; within a cycle the records are visited in
    the order of a bijection a * pos + b (mod n), a coprime to n, seeded by (seed, cycle,
    sample): every record once per cycle, a different order each cycle."""
    t = pass_index * k + slot
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


@nb.njit(cache=False)
def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


@nb.njit(cache=False)
def _box_pixels(qi, qj, qh, qw, height, width):
    """crops.box_pixels, in numba (the same integer formula)."""
    half = BOX_UNITS // 2
    i = (qi * height + half) // BOX_UNITS
    j = (qj * width + half) // BOX_UNITS
    h = max(1, (qh * height + half) // BOX_UNITS)
    w = max(1, (qw * width + half) // BOX_UNITS)
    return min(i, height - h), min(j, width - w), h, w


@nb.njit(cache=False)
def _mirror(image):
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


def _stored_image_reader(memory_read):
    """A compiled (image metadata row, decode buffer, storage state) -> (pixels (H, W, 3),
    decoded ok): JPEGs are decoded by FFCV's libjpeg-turbo call into the buffer, raw images
    are read in place."""
    imdecode_c = Compiler.compile(imdecode)
    jpg = IMAGE_MODES['jpg']

    def read(field, temp, storage_state):
        data = memory_read(field['data_ptr'], storage_state)
        height, width = np.uint32(field['height']), np.uint32(field['width'])
        if field['mode'] == jpg:
            ok = imdecode_c(data, temp, height, width, height, width, 0, 0, 1, 1, False,
                            False) == 0
            return temp.reshape(-1)[:3 * height * width].reshape(height, width, 3), ok
        return data.reshape(height, width, 3), True

    return Compiler.compile(read)


@nb.njit(cache=False)
def scratch_row(dst, per_thread):
    """The row of the decode buffers that image `dst` of the batch decodes into: the calling
    thread's own when the batch has at least one image per thread, else the image's own.
    Reusing one buffer per thread keeps it in the core's cache between the decode and the
    crops (with the loader's kept buffers: +11% crops/s at K = 4, docs/benchmarks.md)."""
    return np.int64(nb.get_thread_id()) if per_thread else np.int64(dst)


@nb.njit(cache=False)
def _raise_if_failed(failed):
    """Raise for images that did not decode. Kept out of the parallel loop: a raise inside a
    prange loop makes numba run the whole loop on one thread."""
    for i in range(failed.shape[0]):
        if failed[i, 0]:
            raise ValueError("a stored JPEG image could not be decoded (corrupt?)")


def pass_tag_query(pass_index: int) -> AllocationQuery:
    """The tag buffer whose shape, (1 + p // 256, 1 + p % 256) per sample, carries pass p."""
    return AllocationQuery((1 + pass_index // 256, 1 + pass_index % 256), np.dtype('u1'))


@nb.njit(cache=False)
def pass_of(tag):
    """The pass number carried by a batch of tag buffers (see pass_tag_query)."""
    return (tag.shape[1] - 1) * 256 + (tag.shape[2] - 1)


def image_decode_queries(metadata):
    """Per image: a buffer for the largest stored image, decoded, and a decode-failure flag.
    The decoders use only one decode buffer per thread (see `scratch_row`)."""
    largest = np.uint64(metadata['height'].max()) * np.uint64(metadata['width'].max())
    return (AllocationQuery((largest * np.uint64(3),), np.dtype('u1')),
            AllocationQuery((1,), np.dtype('u1')))


class _RecordReader(Operation):
    """Shared plumbing: record-field offsets, pass number, record counts."""

    def __init__(self, beton, num_crops: int, seed: int):
        super().__init__()
        from .fields import BOXES_FIELD, CLASSES_FIELD, CODES_FIELD, FLAGS_FIELD
        if CLASSES_FIELD not in beton.fields:
            raise ValueError(f"{beton.path} has no crop records (write them with "
                             f"write_dataset.py --labels.*)")
        self.num_records, self.k = beton.fields[CLASSES_FIELD].shape
        if not 1 <= num_crops:
            raise ValueError(f"num_crops must be positive, not {num_crops}")
        self.num_crops, self.seed = num_crops, seed
        self.ptrs = {name: np.ascontiguousarray(beton.field_metadata(name), dtype=np.uint64)
                     for name in (BOXES_FIELD, FLAGS_FIELD, CLASSES_FIELD, CODES_FIELD)}
        self.pass_index = 0


class MultiCropDecoder(_RecordReader):
    """Image field -> (K, S, S, 3) uint8 per image: the K records of this pass replayed on the
    decoded stored image (crop, INTER_AREA resize with FFCV's resize_crop, then mirror)."""

    def __init__(self, beton, num_crops: int, output_size: int, seed: int = 0):
        super().__init__(beton, num_crops, seed)
        self.output_size = output_size

    def declare_state_and_memory(self, previous_state):
        shape = (self.num_crops, self.output_size, self.output_size, 3)
        return (replace(previous_state, jit_mode=True, shape=shape, dtype=np.dtype('u1')),
                (AllocationQuery(shape, np.dtype('u1')), *image_decode_queries(self.metadata),
                 pass_tag_query(self.pass_index)))

    def generate_code(self):
        from .fields import BOXES_FIELD, FLAGS_FIELD
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        read_image = _stored_image_reader(mem_read)
        resize_crop_c = Compiler.compile(resize_crop)
        box_ptrs, flag_ptrs = self.ptrs[BOXES_FIELD], self.ptrs[FLAGS_FIELD]
        n, k_crops, seed = self.num_records, self.num_crops, self.seed

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage, failed, tag = my_storage
            pass_index = pass_of(tag)
            per_thread = len(batch_indices) >= nb.get_num_threads()
            chunk = nb.set_parallel_chunksize(1)  # images cost unequal time: hand them out singly
            for dst in my_range(len(batch_indices)):
                sample = batch_indices[dst]
                pixels, ok = read_image(metadata[sample],
                                        temp_storage[scratch_row(dst, per_thread)], storage_state)
                failed[dst, 0] = not ok
                if not ok:
                    continue
                height, width = pixels.shape[0], pixels.shape[1]
                boxes = mem_read(box_ptrs[sample], storage_state).view(np.int16)
                flags = mem_read(flag_ptrs[sample], storage_state)
                for slot in range(k_crops):
                    r = record_index(seed, pass_index, sample, slot, n, k_crops)
                    i, j, h, w = _box_pixels(np.int64(boxes[4 * r]), np.int64(boxes[4 * r + 1]),
                                             np.int64(boxes[4 * r + 2]),
                                             np.int64(boxes[4 * r + 3]),
                                             np.int64(height), np.int64(width))
                    out = destination[dst, slot]
                    resize_crop_c(pixels, i, i + h, j, j + w, out)
                    if flags[r] & FLAG_FLIP:
                        _mirror(out)
            nb.set_parallel_chunksize(chunk)
            _raise_if_failed(failed[:len(batch_indices)])
            return destination[:len(batch_indices)]

        decode.is_parallel = True
        return decode


class RecordLabelDecoder(_RecordReader):
    """Class-indices field -> (K, 2k + 1) int16 per image for the same K records that
    MultiCropDecoder cut (same seed and pass): the top-k classes, the k probability codes and
    the flags byte, as stored. soft_labels.decode_probs turns the codes into probabilities on
    the training device (one implementation of the coding)."""

    def declare_state_and_memory(self, previous_state):
        shape = (self.num_crops, 2 * self.k + 1)
        return (replace(previous_state, jit_mode=True, shape=shape, dtype=np.dtype('<i2')),
                (AllocationQuery(shape, np.dtype('<i2')), pass_tag_query(self.pass_index)))

    def generate_code(self):
        from .fields import CLASSES_FIELD, CODES_FIELD, FLAGS_FIELD
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        class_ptrs = self.ptrs[CLASSES_FIELD]
        code_ptrs, flag_ptrs = self.ptrs[CODES_FIELD], self.ptrs[FLAGS_FIELD]
        n, k_crops, k, seed = self.num_records, self.num_crops, self.k, self.seed

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, tag = my_storage
            pass_index = pass_of(tag)
            for dst in my_range(len(batch_indices)):
                sample = batch_indices[dst]
                classes = mem_read(class_ptrs[sample], storage_state).view(np.int16)
                codes = mem_read(code_ptrs[sample], storage_state)
                flags = mem_read(flag_ptrs[sample], storage_state)
                for slot in range(k_crops):
                    r = record_index(seed, pass_index, sample, slot, n, k_crops)
                    for c in range(k):
                        destination[dst, slot, c] = classes[r * k + c]
                        destination[dst, slot, k + c] = codes[r * k + c]
                    destination[dst, slot, 2 * k] = flags[r]
            return destination[:len(batch_indices)]

        decode.is_parallel = True
        return decode


class SeededRandomResizedCropDecoder(Operation):
    """Image field -> (S, S, 3) uint8: a RandomResizedCrop and flip drawn from (seed, pass,
    sample), resized with INTER_AREA; S and the pass change at run time as above."""

    def __init__(self, output_size: int, seed: int = 0, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        super().__init__()
        self.output_size, self.seed, self.scale, self.ratio = output_size, seed, scale, ratio
        self.pass_index = 0

    def declare_state_and_memory(self, previous_state):
        shape = (self.output_size, self.output_size, 3)
        return (replace(previous_state, jit_mode=True, shape=shape, dtype=np.dtype('u1')),
                (AllocationQuery(shape, np.dtype('u1')), *image_decode_queries(self.metadata),
                 pass_tag_query(self.pass_index)))

    def generate_code(self):
        my_range = Compiler.get_iterator()
        read_image = _stored_image_reader(self.memory_read)
        resize_crop_c = Compiler.compile(resize_crop)
        seed = self.seed
        (scale_lo, scale_hi), (ratio_lo, ratio_hi) = self.scale, self.ratio

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage, failed, tag = my_storage
            pass_index = pass_of(tag)
            per_thread = len(batch_indices) >= nb.get_num_threads()
            chunk = nb.set_parallel_chunksize(1)  # as in MultiCropDecoder
            for dst in my_range(len(batch_indices)):
                sample = batch_indices[dst]
                pixels, ok = read_image(metadata[sample],
                                        temp_storage[scratch_row(dst, per_thread)], storage_state)
                failed[dst, 0] = not ok
                if not ok:
                    continue
                height, width = pixels.shape[0], pixels.shape[1]
                i, j, h, w, flip = seeded_crop(seed, pass_index, sample, np.int64(height),
                                               np.int64(width), scale_lo, scale_hi, ratio_lo,
                                               ratio_hi)
                resize_crop_c(pixels, i, i + h, j, j + w, destination[dst])
                if flip:
                    _mirror(destination[dst])
            nb.set_parallel_chunksize(chunk)
            _raise_if_failed(failed[:len(batch_indices)])
            return destination[:len(batch_indices)]

        decode.is_parallel = True
        return decode
