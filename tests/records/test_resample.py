"""The crop resize filters against references written here from their definitions, and the
checks around the filter choice. (That the decoders replay exactly `resize_box` is tested in
test_decoders.py and test_loaders.py, on their loaders.)"""
import cv2
import numpy as np
import pytest

from fkd_ffcv.records.resample import filter_code, resize_box

# (image height, width, box i, j, h, w, output side): downscales by integer and non-integer
# factors, upscales, a box at the image's edge, a one-pixel-wide box
CASES = [(23, 31, 2, 3, 19, 26, 8), (23, 31, 0, 0, 23, 31, 10), (40, 37, 5, 1, 33, 29, 11),
         (23, 31, 4, 6, 9, 7, 16), (12, 12, 0, 0, 12, 12, 29), (30, 30, 3, 0, 27, 1, 5),
         (64, 48, 10, 8, 50, 40, 16)]


def triangle_weights(size_in, size_out, widen):
    """(size_out, size_in) weights of a triangle filter at pixel centres (o + 1/2) x scale,
    support widened by the downscale factor when `widen` (PIL's antialiased bilinear)."""
    scale = size_in / size_out
    support = max(scale, 1.0) if widen else 1.0
    centres = (np.arange(size_out) + 0.5) * scale
    distance = np.abs(np.arange(size_in)[None, :] + 0.5 - centres[:, None]) / support
    weights = np.clip(1 - distance, 0, None)
    return weights / weights.sum(1, keepdims=True)


def cubic(t):
    """Keys' cubic with a = -0.5 (PIL's and torch's bicubic) at distances t >= 0."""
    return np.where(t < 1, (1.5 * t - 2.5) * t * t + 1,
                    np.where(t < 2, ((-0.5 * t + 2.5) * t - 4) * t + 2, 0.0))


def cubic_weights(size_in, size_out):
    """PIL's antialiased bicubic: the cubic stretched by the downscale factor, normalised."""
    stretch = max(size_in / size_out, 1.0)
    centres = (np.arange(size_out) + 0.5) * size_in / size_out
    weights = cubic(np.abs(np.arange(size_in)[None, :] + 0.5 - centres[:, None]) / stretch)
    return weights / weights.sum(1, keepdims=True)


def linear_weights(size_in, size_out):
    """OpenCV INTER_LINEAR: the two neighbours of (o + 1/2) x scale - 1/2, edges replicated."""
    weights = np.zeros((size_out, size_in))
    for o in range(size_out):
        src = (o + 0.5) * size_in / size_out - 0.5
        left = int(np.floor(src))
        frac = src - left
        weights[o, min(max(left, 0), size_in - 1)] += 1 - frac
        weights[o, min(max(left + 1, 0), size_in - 1)] += frac
    return weights


def area_weights(size_in, size_out):
    """INTER_AREA on a downscale: each output pixel the mean of the input interval
    [o, o + 1) x scale, pixels weighted by their covered fraction."""
    scale = size_in / size_out
    weights = np.zeros((size_out, size_in))
    for o in range(size_out):
        lo, hi = o * scale, (o + 1) * scale
        for x in range(size_in):
            weights[o, x] = max(0.0, min(hi, x + 1) - max(lo, x)) / scale
    return weights


def reference(pixels, box, side, weights_of):
    i, j, h, w = box
    crop = pixels[i:i + h, j:j + w].astype(np.float64)
    rows, cols = weights_of(h, side), weights_of(w, side)
    return np.clip(np.einsum('yh,hwc,xw->yxc', rows, crop, cols), 0, 255)


REFERENCES = {'antialias': lambda n, s: triangle_weights(n, s, True),
              'bilinear': linear_weights, 'bicubic': cubic_weights}


@pytest.mark.parametrize('name', ['antialias', 'bilinear', 'bicubic'])
@pytest.mark.parametrize('case', CASES)
def test_triangle_filters_match_their_definition(name, case):
    height, width, *box, side = case
    pixels = np.random.default_rng(sum(case)).integers(0, 256, (height, width, 3), np.uint8)
    expected = reference(pixels, box, side, REFERENCES[name])
    got = resize_box(pixels, box, side, name)
    assert np.abs(got - expected).max() <= 0.5 + 2e-3  # float32 sums, rounded once
    assert np.array_equal(resize_box(pixels, box, side, name, flip=True), got[:, ::-1])


@pytest.mark.parametrize('case', [c for c in CASES if c[4] >= c[6] and c[5] >= c[6]])
def test_area_matches_its_definition_on_downscales(case):
    height, width, *box, side = case
    pixels = np.random.default_rng(sum(case)).integers(0, 256, (height, width, 3), np.uint8)
    expected = reference(pixels, box, side, area_weights)
    assert np.abs(resize_box(pixels, box, side, 'area') - expected).max() <= 1


@pytest.mark.parametrize('case', CASES)
def test_area_is_opencvs_inter_area_and_bilinear_within_rounding_of_inter_linear(case):
    height, width, i, j, h, w, side = case
    pixels = np.random.default_rng(sum(case)).integers(0, 256, (height, width, 3), np.uint8)
    crop = pixels[i:i + h, j:j + w]
    area = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    assert np.abs(resize_box(pixels, (i, j, h, w), side, 'area').astype(int) - area).max() <= 1
    linear = cv2.resize(crop, (side, side), interpolation=cv2.INTER_LINEAR)
    assert np.abs(resize_box(pixels, (i, j, h, w), side, 'bilinear').astype(int)
                  - linear).max() <= 1  # OpenCV sums in 11-bit fixed point


def test_antialias_filters_what_bilinear_aliases():
    """Stripes 1.5 px apart, downscaled 5.3x: the antialiased filter averages them to an
    even grey; bilinear samples them into a false pattern."""
    stripes = np.where((np.arange(160) // 1.5) % 2 == 0, 255, 0).astype(np.uint8)
    pixels = np.repeat(np.tile(stripes, (160, 1))[:, :, None], 3, axis=2)
    antialiased = resize_box(pixels, (0, 0, 160, 160), 30, 'antialias').astype(float)
    aliased = resize_box(pixels, (0, 0, 160, 160), 30, 'bilinear').astype(float)
    assert antialiased.std() < 15 < aliased.std()
    assert abs(antialiased.mean() - pixels.mean()) < 3


@pytest.mark.parametrize('name, pil_filter', [('antialias', 'BILINEAR'),
                                              ('bicubic', 'BICUBIC')])
def test_antialiased_filters_match_pil_and_teacher_cuts_match_the_loaders(name, pil_filter):
    from PIL import Image

    from fkd_ffcv.records.crops import box_pixels, cut_crops, sample_records
    pixels = np.random.default_rng(3).integers(0, 256, (75, 100, 3), np.uint8)
    pixels = cv2.GaussianBlur(pixels, (5, 5), 1.0)  # photo-like, so PIL's rounding is small
    boxes, flips = sample_records(0, 0, 75, 100, 6)
    crops = cut_crops(pixels, boxes, flips, 32, name)
    for crop, stored, flip in zip(crops, boxes, flips):
        i, j, h, w = box_pixels(stored, 75, 100)
        assert np.array_equal(crop, resize_box(pixels, (i, j, h, w), 32, name, flip))
        pil = np.asarray(Image.fromarray(pixels[i:i + h, j:j + w]).resize(
            (32, 32), getattr(Image.Resampling, pil_filter)))  # rounds between its passes
        assert np.abs(crop.astype(int) - (pil[:, ::-1] if flip else pil)).max() <= 1


def test_unknown_filters_are_refused_with_the_choices():
    from fkd_ffcv.records.crops import cut_crops
    from fkd_ffcv.loading.decoders import SeededRandomResizedCropDecoder
    from fkd_ffcv.training.options import options
    with pytest.raises(ValueError, match="'lanczos'.*antialias, bilinear, bicubic, area"):
        filter_code('lanczos')
    with pytest.raises(ValueError, match="'lanczos'"):
        SeededRandomResizedCropDecoder(32, resize='lanczos')
    with pytest.raises(ValueError, match="'lanczos'.*antialias, bilinear, bicubic, area"):
        cut_crops(np.zeros((8, 8, 3), np.uint8), np.zeros((1, 4), np.int16), [False], 4,
                  'lanczos')
    with pytest.raises(Exception, match='resize'):
        options({'data.resize': 'lanczos'})
    with pytest.raises(ValueError, match='not inside'):
        resize_box(np.zeros((8, 8, 3), np.uint8), (4, 4, 5, 2), 4)


class _Manifested:
    def __init__(self, manifest):
        from fkd_ffcv.data.manifest import Manifest
        self.manifest, self.path = Manifest.from_json(manifest), 'data.beton'


def test_loaders_warn_when_they_resize_otherwise_than_the_records_teacher(recwarn):
    from fkd_ffcv.loading.loaders import warn_if_resized_otherwise
    with pytest.warns(UserWarning, match="data.beton.*'area'.*'antialias'"):
        warn_if_resized_otherwise(_Manifested({'soft_labels': {'crop_resize': 'area'}}),
                                  'antialias')
    with pytest.warns(UserWarning, match="'area'.*--data.resize=area"):  # before crop_resize
        warn_if_resized_otherwise(_Manifested({'embeddings': {
            'teacher': {'interpolation': 'area'}}}), 'antialias')
    with pytest.warns(UserWarning, match="INTER_CUBIC then, which no filter reproduces"):
        warn_if_resized_otherwise(_Manifested({'soft_labels': {   # OpenCV's bicubic then
            'teacher': {'interpolation': 'bicubic'}}}), 'bicubic')
    with pytest.warns(UserWarning, match="'antialias'.*'area'"):  # an import before crop_resize
        warn_if_resized_otherwise(_Manifested({'soft_labels': {'source': 'fkd-import'}}), 'area')
    recwarn.clear()
    warn_if_resized_otherwise(_Manifested({'soft_labels': {'crop_resize': 'bilinear'}}),
                              'bilinear')
    warn_if_resized_otherwise(_Manifested({}), 'area')  # no records: nothing to compare
    assert not recwarn.list
