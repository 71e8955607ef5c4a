"""torchvision's colour augmentation of a crop, written out from a records/colour.py code: the
reference the numba implementation is compared with (tests/records/test_colour.py, and the
decoders' replay in tests/loading/test_decoders.py)."""
import math

import numpy as np
import torch
import torchvision.transforms.functional as TF

from fkd_ffcv.records.colour import BLUR, GRAYSCALE, JITTER, permutation


def decoded(c):
    """The values the code stands for, as torchvision's arguments."""
    return dict(brightness=c[1] / 127.5, contrast=c[2] / 127.5, saturation=c[3] / 127.5,
                hue=(int(c[4]) - 128) / 255, sigma=c[5] / 63.75)


def torchvision_colour(pixels, c, sigma_scale=1.0):
    """The augmentation of code `c` by torchvision, on a float image, rounded at the end;
    the blur's sigma times `sigma_scale`."""
    x = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    v = decoded(c)
    ops = [lambda t: TF.adjust_brightness(t, v['brightness']),
           lambda t: TF.adjust_contrast(t, v['contrast']),
           lambda t: TF.adjust_saturation(t, v['saturation']),
           lambda t: TF.adjust_hue(t, v['hue'])]
    if c[0] & JITTER:
        for op in permutation(c[0] >> 3):
            x = ops[op](x)
    if c[0] & GRAYSCALE:
        x = TF.rgb_to_grayscale(x, 3)
    if c[0] & BLUR:
        sigma = float(np.float32(v['sigma'] * sigma_scale))
        size = 2 * math.ceil(3 * sigma) + 1
        x = TF.gaussian_blur(x, [size, size], [sigma, sigma])
    return (x * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def assert_within_rounding(got, want):
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1, f"{(diff > 1).sum()} pixels differ by more than 1 (max {diff.max()})"
