"""Crop records: seeded sampling, exact replay of quantised boxes, crop cutting."""
import numpy as np
import pytest

from fkd_ffcv.records.crops import (BOX_UNITS, box_pixels, cut_crops, quantize_boxes, sample_records,
                            seeded_crop)


def draws(height, width, n, scale, ratio=(3 / 4, 4 / 3)):
    return np.array([seeded_crop(0, r, 9, height, width, *scale, *ratio)[:4]
                     for r in range(n)])


def test_records_depend_on_seed_and_index_only():
    a = sample_records(7, 123, 375, 500, 50)
    b = sample_records(7, 123, 375, 500, 50)
    c = sample_records(7, 124, 375, 500, 50)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert a[0].dtype == np.int16 and a[1].dtype == bool and 10 < a[1].sum() < 40


@pytest.mark.parametrize('height, width', [(32, 32), (375, 500), (1, 7), (4000, 6000)])
def test_quantised_boxes_replay_exactly(height, width):
    boxes = draws(height, width, 200, (0.08, 1.0))
    assert (boxes[:, 2:] >= 1).all()
    assert (boxes[:, 0] + boxes[:, 2] <= height).all() and (boxes[:, 1] + boxes[:, 3] <= width).all()
    stored = quantize_boxes(boxes, height, width)
    assert stored.min() >= 0 and stored.max() <= BOX_UNITS
    replayed = np.array([box_pixels(s, height, width) for s in stored])
    assert np.array_equal(replayed, boxes)


def test_box_statistics_follow_scale_and_ratio():
    boxes = draws(400, 400, 2000, (0.08, 0.936))
    area = boxes[:, 2] * boxes[:, 3] / 400 ** 2
    ratio = boxes[:, 3] / boxes[:, 2]
    assert 0.07 < area.min() and area.max() < 0.95 and 0.45 < area.mean() < 0.55
    assert 0.7 < ratio.min() and ratio.max() < 1.4


def test_cut_crops_replays_box_resize_and_flip():
    pixels = np.random.default_rng(2).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    whole = quantize_boxes([[0, 0, 40, 60]], 40, 60)
    crops = cut_crops(pixels, np.repeat(whole, 2, 0), np.array([False, True]), 40, 'area')
    assert crops.shape == (2, 40, 40, 3)
    assert np.array_equal(crops[1], crops[0][:, ::-1])
    box = quantize_boxes([[5, 10, 20, 20]], 40, 60)
    same_size = cut_crops(pixels, box, np.array([False]), 20, 'bilinear')[0]
    assert np.array_equal(same_size, pixels[5:25, 10:30])
