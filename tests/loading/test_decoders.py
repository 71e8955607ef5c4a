"""Multi-crop replay of recorded crops, and the soft labels that go with them."""
import math
import warnings

import numpy as np
import pytest
import torch

from conftest import LABELLED_RECORDS as N
from fkd_ffcv.data.beton import Beton
from fkd_ffcv.records.crops import box_pixels
from fkd_ffcv.records.crops import record_index
from fkd_ffcv.data.fields import BOXES_FIELD, CLASSES_FIELD, CODES_FIELD, FLAGS_FIELD
from fkd_ffcv.loading.loaders import FKDLoader, OrderOption
from fkd_ffcv.records.resample import resize_box
from fkd_ffcv.records.soft_labels import FLAG_FLIP, FLAG_P1_STORED, decode_probs

K = 2


@pytest.mark.parametrize('n, k', [(6, 2), (5, 2), (500, 4), (1, 1), (7, 7)])
def test_every_record_once_per_cycle(n, k):
    for sample in (0, 3, 12345):
        draws = [record_index(0, p * k, sample, s, n) for p in range(2 * n) for s in range(k)]
        for cycle in range(len(draws) // n):
            assert sorted(draws[cycle * n:(cycle + 1) * n]) == list(range(n))
    first = [record_index(0, 0, 1, s, 500) for s in range(4)]
    assert first != [record_index(1, 0, 1, s, 500) for s in range(4)]  # the seed matters


@pytest.fixture(scope='module')
def labelled(labelled_jpeg_beton):
    return labelled_jpeg_beton


def reference(beton, sample, record, size, resize):
    """The record's box and flip on the stored image, through resample.py's Python entry."""
    pixels = beton.image(sample)
    box = box_pixels(beton.array(BOXES_FIELD, sample)[record], *pixels.shape[:2])
    flip = bool(beton.array(FLAGS_FIELD, sample)[record] & FLAG_FLIP)
    return resize_box(pixels, box, size, resize, flip)


# 1 image per batch: fewer images than threads; area: FFCV's C resize, the other branch
@pytest.mark.parametrize('images_per_batch, resize', [(5, 'antialias'), (1, 'area')])
def test_crops_and_labels_replay_the_records(labelled, images_per_batch, resize):
    beton = Beton(labelled)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        loader = FKDLoader(labelled, batch_size=images_per_batch * K, num_crops=K,
                           resolution=24, num_workers=2, order=OrderOption.SEQUENTIAL,
                           drop_last=False, resize=resize)
    # the records' torchvision teacher resized with antialias: only another filter warns
    assert [str(w.message).count("resized with 'antialias'") for w in caught] == (
        [] if resize == 'antialias' else [1])
    for p, size in enumerate((24, 16)):  # progressive resizing between passes
        loader.set_resolution(size)
        batches = [[x.clone() for x in batch] for batch in loader]  # slots are reused
        images = torch.cat([b[0] for b in batches])
        classes = torch.cat([b[1] for b in batches])
        probs = torch.cat([b[2] for b in batches])
        hard = torch.cat([b[3] for b in batches])
        assert images.shape == (len(beton) * K, 3, size, size)
        assert images.is_contiguous(memory_format=torch.channels_last)
        assert hard.tolist() == np.repeat(beton.field_metadata('label'), K).tolist()
        for sample in range(len(beton)):
            for slot in range(K):
                r = record_index(0, p * K, sample, slot, N)
                row = sample * K + slot
                got = images[row].permute(1, 2, 0).numpy()
                assert np.array_equal(got, reference(beton, sample, r, size, resize))
                assert classes[row].tolist() == beton.array(CLASSES_FIELD, sample)[r].tolist()
                stored = decode_probs(torch.from_numpy(beton.array(CODES_FIELD, sample)[r:r + 1]),
                                      torch.tensor([bool(beton.array(FLAGS_FIELD, sample)[r]
                                                         & FLAG_P1_STORED)]))
                assert torch.allclose(probs[row], stored[0], atol=1e-6)
    assert math.isclose(loader.passes, 2)


def test_a_one_crop_pass_continues_the_draws_where_it_starts(labelled):
    """FKD's single-crop phases: a K = 1 pass placed at epoch 5 replays draw 5 of each image,
    the record a K = 4 pass starting at epoch 4 uses in its second slot."""
    beton = Beton(labelled)
    loader = FKDLoader(labelled, batch_size=5, num_crops=1, resolution=16, num_workers=2,
                       order=OrderOption.SEQUENTIAL, drop_last=False)
    loader.start_at(3, epoch=5)
    images = torch.cat([batch[0].clone() for batch in loader])
    for sample in range(len(beton)):
        r = record_index(0, 5, sample, 0, N)
        assert r == record_index(0, 4, sample, 1, N)
        got = images[sample].permute(1, 2, 0).numpy()
        assert np.array_equal(got, reference(beton, sample, r, 16, 'antialias'))


def test_batch_size_counts_crops(labelled):
    with pytest.raises(ValueError, match='not a multiple of num_crops'):
        FKDLoader(labelled, batch_size=7, num_crops=2)


def test_a_corrupt_stored_image_raises(labelled, tmp_path):
    import shutil
    from fkd_ffcv.loading.ffcv_loader import LoaderError
    # A copy of the labelled beton with garbage over one stored JPEG's bytes.
    jpeg = tmp_path / 'jpeg.beton'
    shutil.copy(labelled, jpeg)
    shutil.copy(str(labelled) + '.json', str(jpeg) + '.json')
    beton = Beton(jpeg)
    meta = beton.field_metadata('image')[5]
    assert meta['mode'] == 0, 'this test needs JPEG-stored images'
    with open(jpeg, 'r+b') as f:
        f.seek(int(meta['data_ptr']) + 20)
        f.write(bytes(range(256)) * 4)
    loader = FKDLoader(jpeg, batch_size=4 * K, num_crops=K, resolution=16, num_workers=1,
                       order=OrderOption.SEQUENTIAL)
    with pytest.raises(LoaderError, match='could not be decoded'):
        list(loader)


def test_same_seed_same_batches_in_random_order(labelled):
    def run(seed):
        loader = FKDLoader(labelled, batch_size=4 * K, num_crops=K, resolution=16, seed=seed,
                           num_workers=2)
        return [torch.cat([b[0] for b in loader]) for _ in range(2)]

    a, b, c = run(3), run(3), run(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_distributed_ranks_share_a_pass(labelled, monkeypatch):
    """Two ranks of a distributed run (FFCV's DistributedSampler, told the rank and world size
    as a process group would): together they get every image's K crops once."""
    import torch.distributed as dist
    ranks = []
    for rank in range(2):
        monkeypatch.setattr(dist, 'get_world_size', lambda *args: 2)
        monkeypatch.setattr(dist, 'get_rank', lambda *args, rank=rank: rank)
        loader = FKDLoader(labelled, batch_size=4, num_crops=K, resolution=16, num_workers=1,
                           order=OrderOption.RANDOM, distributed=True, drop_last=False)
        ranks.append([(int(lab), int(im.long().sum())) for images, _, _, labels in loader
                      for im, lab in zip(images, labels)])
    assert [len(r) for r in ranks] == [len(Beton(labelled)) // 2 * K] * 2
    single = FKDLoader(labelled, batch_size=4, num_crops=K, resolution=16, num_workers=1,
                       order=OrderOption.SEQUENTIAL, drop_last=False)
    everything = sorted((int(lab), int(im.long().sum())) for images, _, _, labels in single
                        for im, lab in zip(images, labels))
    assert sorted(ranks[0] + ranks[1]) == everything


@pytest.fixture(scope='module')
def coloured(labelled_jpeg_beton, tmp_path_factory):
    """The labelled beton's images labelled again by its teacher, with MoCo v2's colour
    augmentation drawn per record (--labels.colour=moco_v2)."""
    from fkd_ffcv.labeling.label import LabelingSettings, label_beton
    from fkd_ffcv.labeling.teachers import Teacher
    made = labelled_jpeg_beton.parent
    teacher = Teacher(f'torchvision:resnet18:{made}/t.pt', input_size=32)
    out = tmp_path_factory.mktemp('colour')
    label_beton(made / 'images.beton', out / 'coloured.beton', teacher,
                LabelingSettings(num_records=N, label_type='marginal_smoothing_k2',
                                 colour='moco_v2'), out / 'work', progress=False)
    return out / 'coloured.beton'


def test_a_record_replays_the_colour_its_teacher_saw(coloured):
    """Each crop is the record's box and flip, then its stored colour code, as torchvision
    applies it to the same crop (the blur scaled from the teacher's 32 px to 24)."""
    from colour_reference import assert_within_rounding, torchvision_colour
    from fkd_ffcv.data.fields import COLOUR_FIELD
    from fkd_ffcv.records.crops import colour_codes
    beton = Beton(coloured)
    info = beton.manifest.soft_labels
    assert (info.colour, info.colour_side, info.bytes_per_record) == ('moco_v2', 32, 9 + 3 * 2 + 6)
    from fkd_ffcv.commands.inspect_beton import describe
    assert 'colour replayed: moco_v2 (each record\'s colour augmentation, drawn for 32 px' \
        in describe(beton)
    loader = FKDLoader(coloured, batch_size=4 * K, num_crops=K, resolution=24, num_workers=2,
                       order=OrderOption.SEQUENTIAL, drop_last=False)
    images = torch.cat([batch[0].clone() for batch in loader])
    drawn = 0
    for sample in range(len(beton)):
        codes = beton.array(COLOUR_FIELD, sample)
        assert np.array_equal(codes, colour_codes(0, sample, N))  # the seeded draw
        for slot in range(K):
            r = record_index(0, 0, sample, slot, N)
            want = torchvision_colour(reference(beton, sample, r, 24, 'antialias'), codes[r],
                                      sigma_scale=24 / 32)
            assert_within_rounding(images[sample * K + slot].permute(1, 2, 0).numpy(), want)
            drawn |= int(codes[r][0])
    assert drawn & 7 == 7  # jitter, grayscale and blur each replayed somewhere


def test_the_stored_labels_are_the_teachers_view_of_the_coloured_crops(labelled_jpeg_beton,
                                                                       coloured):
    """Each record's stored top-k is the teacher's on its crop with the record's colour (the
    crop the student replays), not on the crop without it."""
    from fkd_ffcv.data.fields import COLOUR_FIELD
    from fkd_ffcv.labeling.teachers import Teacher
    from fkd_ffcv.records.colour import apply_colour
    from fkd_ffcv.records.crops import cut_crops
    teacher = Teacher(f'torchvision:resnet18:{labelled_jpeg_beton.parent}/t.pt', input_size=32)
    beton = Beton(coloured)
    differs = 0
    for sample in range(3):
        pixels = beton.image(sample)
        flips = (beton.array(FLAGS_FIELD, sample) & FLAG_FLIP) != 0
        crops = cut_crops(pixels, beton.array(BOXES_FIELD, sample), flips, 32,
                          teacher.interpolation)
        plain = teacher.outputs(crops.copy()).topk(2).indices
        for crop, code in zip(crops, beton.array(COLOUR_FIELD, sample)):
            apply_colour(crop, code, 1.0)
        seen = teacher.outputs(crops).topk(2).indices
        assert seen.tolist() == beton.array(CLASSES_FIELD, sample).tolist()
        differs += int((plain != seen).any(1).sum())
    assert differs > 0  # the colour changed what the teacher saw, so the check could fail
