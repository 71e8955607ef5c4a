"""The crop resize filters on ImageNet-shaped photos: single-thread time per crop, and quality
against OpenCV's INTER_AREA and PIL's antialiased bilinear (FKD's original resize).

    python -m benchmarks.resize [--photos N] [--crops 4] [--side 224] [--repeats 5] [--out F]

Photos: the `imagenet` set of benchmarks/common.py (4:3 and 3:4 regions of the endless-sky
landscapes at 500 x 375 / 375 x 500, stored as JPEG 90 and decoded once); --crops boxes per
image drawn as labelling draws records (scale 0.08-0.936, ratio 3/4-4/3), resized to --side.

Time: every filter over every box, in interleaved rounds on one thread, median; the flip is
timed apart (the fkd_ffcv filters mirror while they write, INTER_AREA needs a separate pass).
Quality: PSNR and SSIM (11-px Gaussian window, sigma 1.5, on each channel) of each filter's
crops against the two references, median and 5th percentile over the crops.
"""
import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import interleaved_times, make_photo_tree, report, versions
from fkd_ffcv.records.crops import box_pixels, sample_records
from fkd_ffcv.defaults import RESIZE_FILTERS
from fkd_ffcv.reporting import machine
from fkd_ffcv.records.resample import filter_code, make_resize, mirror


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float('inf') if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over pixels and channels (Wang et al. 2004: Gaussian window of 11 px, sigma
    1.5, K1 0.01, K2 0.03)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x):
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    return float(np.mean((2 * mu_a * mu_b + c1) * (2 * cov + c2)
                         / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))))


def imagenet_photos(count: int) -> list:
    """Decoded (H, W, 3) uint8 photos of the `imagenet` set, JPEG 90 as the betons store them."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix='fkd-bench-resize-') as work:
        make_photo_tree(Path(work), count // 4, shape='imagenet')
        photos = []
        for path in sorted(Path(work).rglob('*.jpg')):
            pixels = cv2.imread(str(path))[..., ::-1]
            ok, jpeg = cv2.imencode('.jpg', np.ascontiguousarray(pixels[..., ::-1]),
                                    [cv2.IMWRITE_JPEG_QUALITY, 90])
            photos.append(np.ascontiguousarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1]))
    return photos


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--photos', type=int, default=400, help='images (4 per landscape)')
    parser.add_argument('--crops', type=int, default=4, help='boxes per image')
    parser.add_argument('--side', type=int, default=224)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--out', default='')
    args = parser.parse_args()
    if args.photos < 4:
        parser.error(f"--photos {args.photos}: 4 or more (4 variants per landscape)")
    cv2.setNumThreads(1)
    from PIL import Image
    photos = imagenet_photos(args.photos)
    jobs = []  # (pixels, PIL image, box, flip)
    for n, pixels in enumerate(photos):
        stored, flips = sample_records(0, n, *pixels.shape[:2], args.crops)
        image = Image.fromarray(pixels)
        jobs += [(pixels, image, box_pixels(b, *pixels.shape[:2]), bool(f))
                 for b, f in zip(stored, flips)]
    side = args.side
    out = np.empty((side, side, 3), np.uint8)
    ours = {name: make_resize(filter_code(name)) for name in RESIZE_FILTERS}

    def ours_run(resize, flip):
        def run():
            for pixels, _, (i, j, h, w), f in jobs:
                resize(pixels, i, j, h, w, out, flip and f)
        return run

    def opencv_linear():
        for pixels, _, (i, j, h, w), _ in jobs:
            cv2.resize(pixels[i:i + h, j:j + w], (side, side), interpolation=cv2.INTER_LINEAR)

    def pil_bilinear():  # torchvision's resized_crop on a PIL image: crop, then resize
        for _, image, (i, j, h, w), _ in jobs:
            image.crop((j, i, j + w, i + h)).resize((side, side), Image.Resampling.BILINEAR)

    def flip_pass():
        for *_, f in jobs:
            if f:
                mirror(out)

    runs = {**{f'{name}, no flip': ours_run(resize, False) for name, resize in ours.items()},
            **{f'{name}, with the flips': ours_run(resize, True) for name, resize in ours.items()},
            'OpenCV INTER_LINEAR': opencv_linear, 'PIL antialiased bilinear': pil_bilinear,
            'mirror pass of the flipped crops': flip_pass}
    times = interleaved_times(runs, args.repeats)
    ms = {name: statistics.median(t) / len(jobs) * 1e3 for name, t in times.items()}
    downscaled = np.mean([h > side or w > side for _, _, (_, _, h, w), _ in jobs])

    quality = {name: {'area': ([], []), 'pil': ([], [])} for name in
               (*RESIZE_FILTERS, 'OpenCV INTER_LINEAR')}
    for pixels, image, (i, j, h, w), _ in jobs:
        crops = {}
        for name, resize in ours.items():
            resize(pixels, i, j, h, w, out, False)
            crops[name] = out.copy()
        crops['OpenCV INTER_LINEAR'] = cv2.resize(pixels[i:i + h, j:j + w], (side, side),
                                                  interpolation=cv2.INTER_LINEAR)
        refs = {'area': crops['area'], 'pil': np.asarray(image.crop((j, i, j + w, i + h)).resize(
            (side, side), Image.Resampling.BILINEAR))}
        for name, crop in crops.items():
            for ref_name, ref in refs.items():
                quality[name][ref_name][0].append(psnr(crop, ref))
                quality[name][ref_name][1].append(ssim(crop, ref))

    def spread(values, fmt):  # identical crops count as infinite PSNR (median, percentile)
        if all(np.isinf(values)):
            return 'identical'
        return f"{fmt.format(np.median(values))} / {fmt.format(np.percentile(values, 5))}"

    lines = [f"{len(photos)} ImageNet-shaped photos (500 x 375 / 375 x 500, JPEG 90), "
             f"{args.crops} boxes each ({len(jobs)} crops, {downscaled:.0%} downscaled on a "
             f"side), {side} px; one thread, median of {args.repeats} interleaved rounds. "
             f"{machine()}; {versions('numba', 'opencv-python', 'Pillow')}; "
             f"{time.strftime('%Y-%m-%d')}", '',
             '| resize | ms per crop | vs INTER_AREA + flip pass |', '|---|---|---|']
    old = ms['area, no flip'] + ms['mirror pass of the flipped crops']
    for name, value in ms.items():
        lines.append(f"| {name} | {value:.3f} | {old / value:.2f}x |")
    lines += ['', f"Old path: INTER_AREA then a mirror pass over the flipped crops = "
                  f"{old:.3f} ms per crop.", '',
              '| resize | PSNR vs INTER_AREA, dB (median / 5th pct) | SSIM vs INTER_AREA | '
              'PSNR vs PIL antialiased bilinear, dB | SSIM vs PIL |', '|---|---|---|---|---|']
    for name, refs in quality.items():
        lines.append(f"| {name} | {spread(refs['area'][0], '{:.1f}')} | "
                     f"{spread(refs['area'][1], '{:.4f}')} | {spread(refs['pil'][0], '{:.1f}')} | "
                     f"{spread(refs['pil'][1], '{:.4f}')} |")
    report('\n'.join(lines), args.out)


if __name__ == '__main__':
    main()
