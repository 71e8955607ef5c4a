"""Loaders: in-order evaluation reads, and worker-thread failures that raise instead of hang."""
import time

import numpy as np
import pytest
from ffcv.fields import NDArrayField
from ffcv.fields.ndarray import NDArrayDecoder
from ffcv.loader import OrderOption

from fkd_ffcv.data.beton import Beton
from fkd_ffcv.loading.ffcv_loader import Loader, LoaderError
from fkd_ffcv.loading.loaders import eval_loader
from fkd_ffcv.data.writer import write_beton


def test_eval_loader_reads_every_sample_once_in_order(raw_tree_beton, image_tree):
    path, _ = raw_tree_beton
    _, _, expected = image_tree
    loader = eval_loader(path, batch_size=5, resolution=48, ratio=1.0, num_workers=2)
    images, labels = zip(*[(im.clone(), lab.clone()) for im, lab in loader])
    assert [len(lab) for lab in labels] == [5, 5, 2]  # the last, short batch is kept
    assert np.concatenate(labels).tolist() == [label for _, label, _ in expected['train']]
    assert images[0].shape == (5, 3, 48, 48) and images[0].is_contiguous(
        memory_format=__import__('torch').channels_last)
    assert len(Beton(path)) == 12


def test_the_eval_crop_is_ffcvs_centre_box_through_the_chosen_filter(raw_tree_beton):
    from fkd_ffcv.records.resample import resize_box
    path, _ = raw_tree_beton
    images = next(iter(eval_loader(path, batch_size=4, resolution=20, ratio=0.875,
                                   num_workers=1, resize='bicubic')))[0]
    for sample in range(4):
        pixels = Beton(path).image(sample)
        height, width = pixels.shape[:2]
        side = int(0.875 * min(height, width))
        box = ((height - side) // 2, (width - side) // 2, side, side)
        assert np.array_equal(images[sample].permute(1, 2, 0).numpy(),
                              resize_box(pixels, box, 20, 'bicubic'))
    with pytest.raises(ValueError, match=r'\(0, 1\], not 1.5'):
        eval_loader(path, ratio=1.5)


def test_a_failing_loader_thread_raises_instead_of_hanging(tmp_path):
    class Halves:
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return (np.full(3, i, np.float16),)

    path = tmp_path / 'f16.beton'  # numba cannot compile float16 arrays: the thread fails
    write_beton(path, {'x': NDArrayField(np.dtype('float16'), (3,))}, Halves(), progress=False)
    loader = Loader(str(path), batch_size=4, num_workers=1, order=OrderOption.SEQUENTIAL,
                    pipelines={'x': [NDArrayDecoder()]})
    started = time.monotonic()
    with pytest.raises(LoaderError, match="f16.beton: the loader's thread failed"):
        for _ in loader:
            pass
    assert time.monotonic() - started < 60


def test_eval_shards_cover_every_sample_exactly_once(raw_tree_beton):
    path, _ = raw_tree_beton
    seen = []
    for rank in range(3):
        loader = eval_loader(path, batch_size=2, resolution=16, ratio=1.0, num_workers=1,
                             rank=rank, world_size=3)
        seen += [lab for _, labels in loader for lab in labels.tolist()]
    stored = Beton(path).field_metadata('label')
    assert len(seen) == len(stored) and sorted(seen) == sorted(stored.tolist())


def test_plain_loader_crops_are_seeded_and_replayable(raw_tree_beton):
    from fkd_ffcv.records.resample import resize_box
    import torch
    from fkd_ffcv.records.crops import seeded_crop
    from fkd_ffcv.loading.loaders import PlainLoader
    path, _ = raw_tree_beton
    beton = Beton(path)

    def passes(seed):
        loader = PlainLoader(path, batch_size=4, resolution=20, seed=seed, num_workers=2,
                             order=OrderOption.SEQUENTIAL, drop_last=False)
        return [torch.cat([im.clone() for im, _ in loader]) for _ in range(2)]

    first, again, other = passes(5), passes(5), passes(6)
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # same seed, same batches
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[0], other[0])
    for sample in (0, 7):
        pixels = beton.image(sample)
        i, j, h, w, flip = seeded_crop(5, 1, sample, *pixels.shape[:2], 0.08, 1.0, 3 / 4, 4 / 3)
        expected = resize_box(pixels, (i, j, h, w), 20, 'antialias', flip)  # the default
        assert np.array_equal(first[1][sample].permute(1, 2, 0).numpy(), expected)


def test_plain_loader_colours_each_crop_as_drawn_for_it(raw_tree_beton):
    """With `colour` (online_ssl's --ssl.colour), the crop of sample s in pass e gets the colour
    augmentation crops.seeded_colour draws for (seed, e, s), as torchvision applies it."""
    import torch
    from colour_reference import assert_within_rounding, torchvision_colour
    from fkd_ffcv.loading.loaders import PlainLoader
    from fkd_ffcv.records.colour import COLOUR_BYTES, JITTER, MOCO_V2
    from fkd_ffcv.records.crops import seeded_colour, seeded_crop
    from fkd_ffcv.records.resample import resize_box
    path, _ = raw_tree_beton
    beton = Beton(path)
    loader = PlainLoader(path, batch_size=4, resolution=20, seed=5, num_workers=2,
                         order=OrderOption.SEQUENTIAL, drop_last=False, labels=False,
                         colour=MOCO_V2)
    jittered = 0
    for epoch in (0, 1):
        images = torch.cat([im.clone() for im, labels in loader if labels is None])
        assert len(images) == len(beton)
        for sample in range(len(beton)):
            pixels = beton.image(sample)
            i, j, h, w, flip = seeded_crop(5, epoch, sample, *pixels.shape[:2], 0.08, 1.0,
                                           3 / 4, 4 / 3)
            code = np.zeros(COLOUR_BYTES, np.uint8)
            seeded_colour(5, epoch, sample, *MOCO_V2.values(), code)
            jittered += bool(code[0] & JITTER)
            want = torchvision_colour(resize_box(pixels, (i, j, h, w), 20, 'antialias', flip),
                                      code)
            assert_within_rounding(images[sample].permute(1, 2, 0).numpy(), want)
    assert jittered  # the draws did colour some crops


def test_buffers_outlive_a_pass_and_an_abandoned_pass_is_finished(raw_tree_beton):
    import torch
    from fkd_ffcv.loading.loaders import PlainLoader
    path, _ = raw_tree_beton

    def loader():
        return PlainLoader(path, batch_size=4, resolution=20, seed=1, num_workers=2,
                           order=OrderOption.SEQUENTIAL, drop_last=False)

    steady = loader()
    passes = [[im.clone() for im, _ in steady] for _ in range(2)]
    abandoned = loader()
    first = next(iter(abandoned))[0]  # pass 0 left after one batch, its thread still busy
    pointer = first.data_ptr()
    again = [im.clone() for im, _ in abandoned]  # pass 1 reuses pass 0's buffers
    assert next(iter(abandoned))[0].data_ptr() == pointer
    assert all(torch.equal(a, b) for a, b in zip(again, passes[1]))
    abandoned.set_resolution(12)  # a new output size gets a new buffer
    assert next(iter(abandoned))[0].shape[-1] == 12
