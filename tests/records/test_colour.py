"""MoCo v2's colour augmentation in numba (records/colour.py) against torchvision's functional
ops on the same crop, and its seeded draw (records/crops.seeded_colour)."""
import itertools

import numpy as np
import pytest

from colour_reference import assert_within_rounding, torchvision_colour
from conftest import smooth_image
from fkd_ffcv.records.colour import (BLUR, COLOUR_BYTES, GRAYSCALE, JITTER, MOCO_V2,
                                     apply_colour, factor_code, hue_code, permutation,
                                     permutation_index, sigma_code)
from fkd_ffcv.records.crops import seeded_colour


def crop(seed=3, side=24):
    """A photo-like crop with saturated and gray areas (hue has its corner cases there)."""
    pixels = smooth_image(seed, side, side + 5)
    pixels[:4, :4] = 200  # gray: max == min
    pixels[-3:, -3:] = (255, 0, 0)
    return pixels


def code(flags=0, order=(0, 1, 2, 3), brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0,
         sigma=1.0):
    return np.array([flags | permutation_index(order) << 3, factor_code(brightness),
                     factor_code(contrast), factor_code(saturation), hue_code(hue),
                     sigma_code(sigma)], np.uint8)


def ours(pixels, c):
    out = pixels.copy()
    apply_colour(out, c, 1.0)
    return out


@pytest.mark.parametrize('name, c', [
    ('brightness 1.3', code(JITTER, (0, 1, 2, 3), brightness=1.3)),
    ('brightness 0.6', code(JITTER, brightness=0.6)),
    ('contrast 1.4', code(JITTER, (1, 0, 2, 3), contrast=1.4)),
    ('contrast 0.6', code(JITTER, contrast=0.6)),
    ('saturation 1.4', code(JITTER, (2, 0, 1, 3), saturation=1.4)),
    ('saturation 0.6', code(JITTER, saturation=0.6)),
    ('hue +0.1', code(JITTER, (3, 2, 1, 0), hue=0.1)),
    ('hue -0.1', code(JITTER, hue=-0.1)),
    ('hue -0.45', code(JITTER, hue=-0.45)),
    ('grayscale', code(GRAYSCALE)),
    ('blur 0.1', code(BLUR, sigma=0.1)),
    ('blur 2.0', code(BLUR, sigma=2.0)),
    ('all, one order', code(JITTER | GRAYSCALE | BLUR, (3, 1, 0, 2), 1.2, 0.7, 1.35, 0.08, 1.4)),
    ('jitter, another order', code(JITTER, (2, 3, 1, 0), 0.8, 1.3, 0.65, -0.07)),
])
def test_each_step_is_torchvisions_within_rounding(name, c):
    pixels = crop()
    assert_within_rounding(ours(pixels, c), torchvision_colour(pixels, c))


def test_nothing_drawn_leaves_the_crop_as_it_is():
    pixels = crop()
    assert np.array_equal(ours(pixels, code(0, brightness=1.4, sigma=2.0)), pixels)


def test_the_blur_reflects_at_the_borders_of_crops_near_its_kernels_size():
    pixels = crop(side=8)  # 15 taps for sigma 2, on an 8 x 13 crop: torch's reflection limit
    c = code(BLUR, sigma=2.0)
    assert_within_rounding(ours(pixels, c), torchvision_colour(pixels, c))


def test_the_blur_reflects_again_on_crops_smaller_than_its_radius():
    """torch refuses to reflect further than the side; numpy's reflection repeats (as ours)."""
    pixels = crop(side=3)
    sigma = np.float32(code(BLUR, sigma=2.0)[5] / 63.75)
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(pixels.astype(float), ((radius, radius), (radius, radius), (0, 0)),
                    mode='reflect')
    rows = sum(t * padded[:, k:k + pixels.shape[1]] for k, t in enumerate(taps))
    want = sum(t * rows[k:k + pixels.shape[0]] for k, t in enumerate(taps))
    assert_within_rounding(ours(pixels, code(BLUR, sigma=2.0)), np.round(want).astype(np.uint8))


def test_orders_round_trip():
    orders = list(itertools.permutations(range(4)))
    assert [permutation_index(o) for o in orders] == list(range(24))  # lexicographic
    assert [tuple(permutation(i)) for i in range(24)] == orders


def draws(n=4000, seed=0, **settings):
    settings = {**MOCO_V2, **settings}
    codes = np.zeros((n, COLOUR_BYTES), np.uint8)
    for sample in range(n):
        seeded_colour(seed, 7, sample, settings['jitter_p'], settings['brightness'],
                      settings['contrast'], settings['saturation'], settings['hue'],
                      settings['grayscale_p'], settings['blur_p'], settings['sigma_lo'],
                      settings['sigma_hi'], codes[sample])
    return codes


def test_the_draw_follows_moco_v2s_probabilities_and_ranges():
    codes = draws()
    flags = codes[:, 0]
    jitter, gray, blur = (flags & JITTER) > 0, (flags & GRAYSCALE) > 0, (flags & BLUR) > 0
    # 4,000 draws: 4 standard deviations of each share are under 0.032
    assert abs(jitter.mean() - 0.8) < 0.03 and abs(gray.mean() - 0.2) < 0.03
    assert abs(blur.mean() - 0.5) < 0.035
    assert set(flags[jitter] >> 3) == set(range(24))  # every order drawn
    factors = codes[jitter][:, 1:4] / 127.5
    assert factors.min() >= 0.6 - 1 / 127.5 and factors.max() <= 1.4 + 1 / 127.5  # a step
    assert abs(factors.mean() - 1.0) < 0.01
    shifts = (codes[jitter][:, 4].astype(int) - 128) / 255
    assert shifts.min() >= -0.1 - 1 / 255 and shifts.max() <= 0.1 + 1 / 255
    sigmas = codes[blur][:, 5] / 63.75
    assert sigmas.min() >= 0.1 - 1 / 63.75 and sigmas.max() <= 2.0 + 1 / 63.75
    assert (codes[~jitter][:, 1:5] == 128).all() and (codes[~blur][:, 5] == 0).all()


def test_the_draw_is_a_function_of_seed_draw_and_sample():
    assert np.array_equal(draws(300), draws(300))
    assert not np.array_equal(draws(300), draws(300, seed=1))
    codes = draws(300)
    assert len({bytes(c) for c in codes}) > 250  # samples differ


def test_colour_replay_is_asked_for_with_a_teacher_and_a_known_name():
    from fkd_ffcv.errors import OptionError
    from fkd_ffcv.labeling.label import LabelingSettings
    from fkd_ffcv.training.write_options import check_writing
    data = {'source': 'fashion-mnist', 'root': '', 'split': 'all'}
    labels = {'beton': 'x.beton', 'out': '', 'teacher': '', 'import_root': 'tree',
              'scale_min': 0.0, 'scale_max': 0.0, 'label_type': '', 'embedding': '',
              'colour': 's2bnn'}
    with pytest.raises(OptionError, match='--labels.colour=s2bnn draws .* give --labels.teacher'):
        check_writing(data, {}, labels)
    with pytest.raises(ValueError, match="colour must be one of .*'moco_v2'.* not 'simclr'"):
        LabelingSettings(colour='simclr')


def test_a_labelling_without_colour_records_its_settings_as_before():
    """A work folder begun before --labels.colour existed still resumes: its run.json has no
    colour, and neither has a run without one."""
    from fkd_ffcv.labeling.label import LabelingSettings
    assert 'colour' not in LabelingSettings().recorded()
    assert LabelingSettings(colour='s2bnn').recorded()['colour'] == 's2bnn'
