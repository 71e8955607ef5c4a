"""Numba-compiled FFCV decoders that replay FKD crop records, and a seeded random crop.

`MultiCropDecoder` decodes each image once and cuts K recorded crops from it (box, resize,
flip), one (K, S, S, 3) uint8 array per image; `RecordLabelDecoder` gives the same K records'
stored labels (classes, probability codes, flags), `RecordEmbeddingDecoder` their stored
teacher embeddings (self-supervised FKD). All three pick the records of a pass with
`record_index`, a function of (seed, epoch, sample, slot) only, so the pipelines agree
without talking; a pass of K crops that starts at epoch e replays the draws e .. e + K - 1, so
passes of different K (FKD's single-crop phases) continue one sequence of draws.
`SeededRandomResizedCropDecoder` is the plain (hard-label) training crop: `crops.seeded_crop`
(torchvision's RandomResizedCrop and a flip) drawn from (seed, epoch, sample), so runs and
resumes repeat (FFCV's own draws from numba's unseeded generator).

The two image decoders share one decode loop (`ImageDecoder`): decode each image once into a
per-thread buffer, then hand it to the subclass's compiled `cut`. The output side S and the
pass's first epoch reach the compiled code through buffer shapes (ffcv_loader.first_epoch_tag),
so neither progressive resizing nor a new pass recompiles.

Cross-field reads: a decoder only sees its own field's metadata, so the decoders capture the
per-sample file offsets of the record fields they read (8 B per image per field) and read the
records through FFCV's memory reader.
"""
from __future__ import annotations

from dataclasses import replace

import numba as nb
import numpy as np
from ffcv.fields.rgb_image import IMAGE_MODES
from ffcv.libffcv import imdecode
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation

from fkd_ffcv.records.crops import box_pixels, record_index, seeded_colour, seeded_crop
from fkd_ffcv.defaults import (BOXES_FIELD, CLASSES_FIELD, CODES_FIELD, COLOUR_BYTES,
                               COLOUR_FIELD, DEFAULT_RESIZE, EMBEDDING_FIELD, FLAGS_FIELD)
from fkd_ffcv.records.colour import apply_colour
from fkd_ffcv.loading.ffcv_loader import first_epoch_of, first_epoch_tag
from fkd_ffcv.records.resample import filter_code, make_resize
from fkd_ffcv.records.soft_labels import FLAG_FLIP
from fkd_ffcv.numba_cache import on_disk


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


@nb.njit(cache=on_disk())
def scratch_row(dst, per_thread):
    """The row of the decode buffers that image `dst` of the batch decodes into: the calling
    thread's own when the batch has at least one image per thread, else the image's own.
    Reusing one buffer per thread keeps it in the core's cache between the decode and the
    crops (with the loader's kept buffers: +11% crops/s at K = 4, docs/benchmarks.md)."""
    return np.int64(nb.get_thread_id()) if per_thread else np.int64(dst)


@nb.njit(cache=on_disk())
def _raise_if_failed(failed):
    """Raise for images that did not decode. Kept out of the parallel loop: a raise inside a
    prange loop makes numba run the whole loop on one thread."""
    for i in range(failed.shape[0]):
        if failed[i, 0]:
            raise ValueError("a stored JPEG image could not be decoded (corrupt?)")


class ImageDecoder(Operation):
    """The image field -> a uint8 array of `output_shape()` per image: each image decoded once
    (into its thread's buffer), then `cut(out, pixels, sample, epoch, storage_state)` from
    `make_cut()` fills that image's output; `epoch` is the first epoch of the pass. Crops are
    resized with `resize`, a filter of resample.py."""

    def __init__(self, output_size: int, resize: str):
        super().__init__()
        self.output_size, self.epoch = output_size, 0
        self.resize = resize
        self.resize_code = filter_code(resize)  # an unknown name fails here, choices listed

    def output_shape(self) -> tuple:
        raise NotImplementedError

    def make_cut(self):
        raise NotImplementedError

    def declare_state_and_memory(self, previous_state):
        shape = self.output_shape()
        largest = (np.uint64(self.metadata['height'].max()) *
                   np.uint64(self.metadata['width'].max()))  # pixels of the largest image
        return (replace(previous_state, jit_mode=True, shape=shape, dtype=np.dtype('u1')),
                (AllocationQuery(shape, np.dtype('u1')),
                 AllocationQuery((largest * np.uint64(3),), np.dtype('u1')),  # decode buffer
                 AllocationQuery((1,), np.dtype('u1')),  # decode failed
                 first_epoch_tag(self.epoch)))

    def generate_code(self):
        my_range = Compiler.get_iterator()
        read_image = _stored_image_reader(self.memory_read)
        cut = self.make_cut()

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage, failed, tag = my_storage
            epoch = first_epoch_of(tag)
            per_thread = len(batch_indices) >= nb.get_num_threads()
            chunk = nb.set_parallel_chunksize(1)  # images cost unequal time: hand them out singly
            for dst in my_range(len(batch_indices)):
                sample = batch_indices[dst]
                pixels, ok = read_image(metadata[sample],
                                        temp_storage[scratch_row(dst, per_thread)], storage_state)
                failed[dst, 0] = not ok
                if ok:
                    cut(destination[dst], pixels, sample, epoch, storage_state)
            nb.set_parallel_chunksize(chunk)
            _raise_if_failed(failed[:len(batch_indices)])
            return destination[:len(batch_indices)]

        decode.is_parallel = True
        return decode


class _Records:
    """A beton's crop-record fields as the decoders read them: per-sample file offsets of each
    field (`pointers[name]`), records per image N, and what each record holds: soft labels
    (k classes per record) or a teacher embedding (D int8 values, `dim`); where the beton
    replays a colour augmentation, `colour_side` is the crop side its codes were drawn for
    (else 0)."""

    def __init__(self, beton, num_crops: int, seed: int):
        if BOXES_FIELD not in beton.fields:
            raise ValueError(f"{beton.path} has no crop records (write them with "
                             f"write_dataset.py --labels.*)")
        if not 1 <= num_crops:
            raise ValueError(f"num_crops must be positive, not {num_crops}")
        self.num_records = beton.fields[BOXES_FIELD].shape[0]
        self.num_crops, self.seed = num_crops, seed
        held = [name for name in (BOXES_FIELD, FLAGS_FIELD, CLASSES_FIELD, CODES_FIELD,
                                  EMBEDDING_FIELD, COLOUR_FIELD) if name in beton.fields]
        self.pointers = {name: np.ascontiguousarray(beton.field_metadata(name), dtype=np.uint64)
                         for name in held}
        self.k = beton.fields[CLASSES_FIELD].shape[1] if CLASSES_FIELD in held else 0
        self.dim = beton.fields[EMBEDDING_FIELD].shape[1] if EMBEDDING_FIELD in held else 0
        self.colour_side = 0
        if COLOUR_FIELD in held:
            info = beton.manifest.embeddings or beton.manifest.soft_labels
            if not (info and info.colour_side):
                raise ValueError(f"{beton.path} has colour records, but its manifest does not "
                                 f"say the crop side they were drawn for (colour_side): label "
                                 f"it again")
            self.colour_side = int(info.colour_side)


class MultiCropDecoder(ImageDecoder):
    """Image field -> (K, S, S, 3) uint8 per image: the K records of this pass replayed on the
    decoded stored image (crop, resize, mirror, and the record's colour augmentation where the
    beton stores one: records/colour.py, the blur scaled from the side it was drawn for to
    S)."""

    def __init__(self, beton, num_crops: int, output_size: int, seed: int = 0,
                 resize: str = DEFAULT_RESIZE):
        super().__init__(output_size, resize)
        self.records = _Records(beton, num_crops, seed)

    def output_shape(self):
        return (self.records.num_crops, self.output_size, self.output_size, 3)

    def make_cut(self):
        mem_read = self.memory_read
        resize = make_resize(self.resize_code)
        rec = self.records
        box_ptrs, flag_ptrs = rec.pointers[BOXES_FIELD], rec.pointers[FLAGS_FIELD]
        n, k_crops, seed = rec.num_records, rec.num_crops, rec.seed
        colour_side = rec.colour_side
        colour_ptrs = rec.pointers.get(COLOUR_FIELD, box_ptrs)  # the boxes where none

        def cut(out, pixels, sample, epoch, storage_state):
            height, width = pixels.shape[0], pixels.shape[1]
            boxes = mem_read(box_ptrs[sample], storage_state).view(np.int16)
            flags = mem_read(flag_ptrs[sample], storage_state)
            codes = mem_read(colour_ptrs[sample], storage_state)  # read only with colour_side
            for slot in range(k_crops):
                r = record_index(seed, epoch, sample, slot, n)
                i, j, h, w = box_pixels(boxes[4 * r:4 * r + 4], height, width)
                resize(pixels, i, j, h, w, out[slot], (flags[r] & FLAG_FLIP) != 0)
                if colour_side:
                    apply_colour(out[slot], codes[COLOUR_BYTES * r:COLOUR_BYTES * (r + 1)],
                                 out.shape[1] / colour_side)

        return Compiler.compile(cut)


class SeededRandomResizedCropDecoder(ImageDecoder):
    """Image field -> (S, S, 3) uint8: a RandomResizedCrop and flip drawn from (seed, epoch,
    sample); S and the epoch change at run time as above. With `views` V > 1, (V, S, S, 3): V
    such crops of the image decoded once, view v of epoch e drawn as draw e * V + v (MoCo's
    two views). With `colour` (a records/colour.AUGMENTATIONS entry), each crop also gets the
    colour augmentation `crops.seeded_colour` draws for the same draw."""

    def __init__(self, output_size: int, seed: int = 0, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 resize: str = DEFAULT_RESIZE, views: int = 1, colour: dict = None):
        super().__init__(output_size, resize)
        if views < 1:
            raise ValueError(f"views must be positive, not {views}")
        self.seed, self.scale, self.ratio, self.views = seed, scale, ratio, views
        self.colour = colour

    def output_shape(self):
        side = (self.output_size, self.output_size, 3)
        return side if self.views == 1 else (self.views, *side)

    def make_cut(self):
        resize = make_resize(self.resize_code)
        seed, views = self.seed, self.views
        (scale_lo, scale_hi), (ratio_lo, ratio_hi) = self.scale, self.ratio
        c = self.colour or dict(jitter_p=0.0, brightness=0.0, contrast=0.0, saturation=0.0,
                                hue=0.0, grayscale_p=0.0, blur_p=0.0, sigma_lo=0.0, sigma_hi=0.0)
        coloured = self.colour is not None
        jitter_p, brightness, contrast = c['jitter_p'], c['brightness'], c['contrast']
        saturation, hue, grayscale_p = c['saturation'], c['hue'], c['grayscale_p']
        blur_p, sigma_lo, sigma_hi = c['blur_p'], c['sigma_lo'], c['sigma_hi']

        def cut(out, pixels, sample, epoch, storage_state):
            height, width = np.int64(pixels.shape[0]), np.int64(pixels.shape[1])
            crops = out.reshape((views, out.shape[-3], out.shape[-2], 3))
            for v in range(views):
                draw = epoch * views + v
                i, j, h, w, flip = seeded_crop(seed, draw, sample, height, width, scale_lo,
                                               scale_hi, ratio_lo, ratio_hi)
                resize(pixels, i, j, h, w, crops[v], flip)
                if coloured:  # the plain loader draws and allocates nothing here
                    code = np.zeros(COLOUR_BYTES, np.uint8)
                    seeded_colour(seed, draw, sample, jitter_p, brightness, contrast,
                                  saturation, hue, grayscale_p, blur_p, sigma_lo, sigma_hi, code)
                    apply_colour(crops[v], code, 1.0)

        return Compiler.compile(cut)


class CenterCropDecoder(ImageDecoder):
    """Image field -> (S, S, 3) uint8: the evaluation crop, a centred square of side
    int(ratio x the shorter side) (FFCV's CenterCropRGBImageDecoder's box), resized with the
    same filter as the training crops."""

    def __init__(self, output_size: int, ratio: float, resize: str = DEFAULT_RESIZE):
        super().__init__(output_size, resize)
        self.ratio = ratio

    def output_shape(self):
        return (self.output_size, self.output_size, 3)

    def make_cut(self):
        resize = make_resize(self.resize_code)
        ratio = self.ratio

        def cut(out, pixels, sample, epoch, storage_state):
            height, width = pixels.shape[0], pixels.shape[1]
            side = min(max(1, np.int64(ratio * min(height, width))), min(height, width))
            resize(pixels, (height - side) // 2, (width - side) // 2, side, side, out, False)

        return Compiler.compile(cut)


class _RecordDecoder(Operation):
    """A record field -> an array per image for the same K records that MultiCropDecoder cut
    (same seed and epoch). Subclasses say the array (`per_image`) and compile `make_fill`,
    which writes one image's array from its stored records."""
    dtype: np.dtype

    def __init__(self, beton, num_crops: int, seed: int = 0):
        super().__init__()
        self.records, self.epoch = _Records(beton, num_crops, seed), 0

    def per_image(self) -> tuple:
        raise NotImplementedError

    def make_fill(self):
        raise NotImplementedError

    def declare_state_and_memory(self, previous_state):
        shape = self.per_image()
        return (replace(previous_state, jit_mode=True, shape=shape, dtype=self.dtype),
                (AllocationQuery(shape, self.dtype), first_epoch_tag(self.epoch)))

    def generate_code(self):
        my_range = Compiler.get_iterator()
        fill = self.make_fill()

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, tag = my_storage
            epoch = first_epoch_of(tag)
            for dst in my_range(len(batch_indices)):
                fill(destination[dst], batch_indices[dst], epoch, storage_state)
            return destination[:len(batch_indices)]

        decode.is_parallel = True
        return decode


class RecordLabelDecoder(_RecordDecoder):
    """Class-indices field -> (K, 2k + 1) int16 per image: the top-k classes, the k probability
    codes and the flags byte of each record, as stored. soft_labels.decode_probs turns the codes
    into probabilities on the training device (one implementation of the coding)."""
    dtype = np.dtype('<i2')

    def __init__(self, beton, num_crops: int, seed: int = 0):
        super().__init__(beton, num_crops, seed)
        if not self.records.k:
            raise ValueError(f"{beton.path}: its crop records hold no soft labels")

    def per_image(self):
        return (self.records.num_crops, 2 * self.records.k + 1)

    def make_fill(self):
        mem_read = self.memory_read
        rec = self.records
        class_ptrs, code_ptrs, flag_ptrs = (rec.pointers[name] for name in
                                            (CLASSES_FIELD, CODES_FIELD, FLAGS_FIELD))
        n, k_crops, k, seed = rec.num_records, rec.num_crops, rec.k, rec.seed

        def fill(out, sample, epoch, storage_state):
            classes = mem_read(class_ptrs[sample], storage_state).view(np.int16)
            codes = mem_read(code_ptrs[sample], storage_state)
            flags = mem_read(flag_ptrs[sample], storage_state)
            for slot in range(k_crops):
                r = record_index(seed, epoch, sample, slot, n)
                for c in range(k):
                    out[slot, c] = classes[r * k + c]
                    out[slot, k + c] = codes[r * k + c]
                out[slot, 2 * k] = flags[r]

        return Compiler.compile(fill)


class RecordEmbeddingDecoder(_RecordDecoder):
    """Embedding field -> (K, D) int8 per image: the stored teacher embedding of each record;
    embeddings.decode makes them unit vectors on the training device."""
    dtype = np.dtype('i1')

    def __init__(self, beton, num_crops: int, seed: int = 0):
        super().__init__(beton, num_crops, seed)
        if not self.records.dim:
            raise ValueError(f"{beton.path}: its crop records hold no teacher embeddings")

    def per_image(self):
        return (self.records.num_crops, self.records.dim)

    def make_fill(self):
        mem_read = self.memory_read
        rec = self.records
        pointers = rec.pointers[EMBEDDING_FIELD]
        n, k_crops, dim, seed = rec.num_records, rec.num_crops, rec.dim, rec.seed

        def fill(out, sample, epoch, storage_state):
            stored = mem_read(pointers[sample], storage_state).view(np.int8)
            for slot in range(k_crops):
                r = record_index(seed, epoch, sample, slot, n)
                out[slot, :] = stored[r * dim:(r + 1) * dim]

        return Compiler.compile(fill)
