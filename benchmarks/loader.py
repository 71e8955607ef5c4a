"""Data-path throughput: the project's loaders against stock FFCV, the original FKD data path
and the machine's ceiling, all on the same photos in one run, per photo set.

    python -m benchmarks.loader [--sets imagenet,panoramas] [--resize antialias] [--records 32]
                                [--workers 2] [--repeats 7] [--photos N] [--out FILE.md]

Photos: the photo sets of benchmarks/common.py (the endless-sky-data landscapes in four
variants, stored at 500 px longest side, JPEG 90): `imagenet`, 500 x 375 and 375 x 500 as
ImageNet is stored (most 224 px crops are downscaled), and `panoramas`, 500 x 250 (most are
upscaled); --photos N takes the first N landscapes. 224 px output, uint8. Crop records are
drawn as for generation with random soft labels (a loader's speed does not depend on them).

Rows, each a full pass per round:
- fkd_ffcv FKDLoader, K = 1, 2, 4, 8 crops per decoded image, resized with --resize; and
  K = 4 with `area` (OpenCV INTER_AREA, the loaders' resize before resample.py);
- fkd_ffcv PlainLoader (one seeded RandomResizedCrop per image) with --resize;
- stock FFCV: RandomResizedCropRGBImageDecoder (INTER_AREA) + RandomHorizontalFlip;
- the original FKD path: PIL decode of a JPEG file, one soft-label file per image
  (torch.load), per-crop torchvision resized_crop (antialiased bilinear) and flip, torch
  DataLoader with one worker process per core, K = 1 and 4.
Ceiling = threads / (t_decode / K + t_crop), with the loaders' thread count: single-thread libjpeg-turbo decode (FFCV's call)
and one crop's resize with its flip, for --resize (flip folded into the resize) and for
`area` (a mirror pass after it: the old ceiling). All rows and the ceiling's timings run in the
same interleaved rounds, after a warm-up each. Per-crop breakdown: the ceiling's parts against
the loader's measured core time per crop (cores / crops per second); the rest is the loader's
own work (reading records, batching, threads, the write into the batch buffer).

Cores per GPU (derived, not measured on a GPU): a published training rate per A100 divided by
a loader's crops/s per core (threads / crops per second). Rates from ffcv-imagenet's tables
(1,281,167 images x 16 epochs over the wall time): ResNet-50, 8 A100s, 14.9 min: 2,866 img/s
per GPU; ResNet-18, one A100, 35.0 min: 9,761 img/s. Those runs trained at 160-192 px
(progressive resizing) and their wall time includes validation, while the loaders here cut
224 px crops: the GPU rates are low for 224 px and the crop costs high for 160-192 px, so the
core counts are an upper estimate for those recipes.
"""
import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import (IMAGES_PER_BATCH, PHOTO_SETS, SIDE, export_original_files,
                               interleaved_times, labelled_photos, one_pass, original_path,
                               versions)
from fkd_ffcv.data.beton import Beton
from fkd_ffcv.records.crops import box_pixels, sample_records
from fkd_ffcv.defaults import DEFAULT_RESIZE, RESIZE_FILTERS
from fkd_ffcv.reporting import machine
from fkd_ffcv.loading.loaders import FKDLoader, OrderOption, PlainLoader
from fkd_ffcv.records.resample import filter_code, make_resize

# (model, GPUs, wall minutes for 16 epochs of ImageNet) in ffcv-imagenet's published tables
GPU_RATES = {'ResNet-50': 1_281_167 * 16 / (14.9 * 60) / 8,
             'ResNet-18': 1_281_167 * 16 / (35.0 * 60)}
KS = (1, 2, 4, 8)


def ceiling_runs(beton, resize: str):
    """The ceiling's timings as interleaved_times entries (single thread): a decode of every
    stored image, and 200 crops' resize with their flips, with `resize` and with `area`."""
    import numpy as np
    pixels = beton.image(0)
    boxes, flips = sample_records(0, 0, *pixels.shape[:2], 200)
    jobs = [(*box_pixels(b, *pixels.shape[:2]), bool(f)) for b, f in zip(boxes, flips)]
    out = np.empty((SIDE, SIDE, 3), np.uint8)

    def decode():
        for i in range(len(beton)):
            beton.image(i)

    def cropper(name):
        resize_c = make_resize(filter_code(name))

        def run():
            for i, j, h, w, flip in jobs:
                resize_c(pixels, i, j, h, w, out, flip)
        return run
    parts = {'decode': (decode, len(beton)), f'crop {resize}': (cropper(resize), len(jobs))}
    if resize != 'area':
        parts['crop area'] = (cropper('area'), len(jobs))
    return parts


def one_set(shape: str, args, work: Path) -> str:
    n_images, images, labelled = labelled_photos(work / shape, args.records, args.photos, shape)
    beton = Beton(images)
    new, old = args.resize, 'area'
    paths, ks = {}, {}

    def add(name, loader, k):
        paths[name], ks[name] = (loader.__iter__, len(loader) * IMAGES_PER_BATCH * k), k
    for k in KS:
        add(f'FKDLoader, K={k}, {new}', FKDLoader(
            labelled, batch_size=IMAGES_PER_BATCH * k, num_crops=k, resolution=SIDE,
            num_workers=args.workers, order=OrderOption.RANDOM, resize=new), k)
    if new != old:
        add(f'FKDLoader, K=4, {old}', FKDLoader(
            labelled, batch_size=IMAGES_PER_BATCH * 4, num_crops=4, resolution=SIDE,
            num_workers=args.workers, order=OrderOption.RANDOM, resize=old), 4)
    add(f'PlainLoader, {new}', PlainLoader(
        labelled, batch_size=IMAGES_PER_BATCH, resolution=SIDE, num_workers=args.workers,
        order=OrderOption.RANDOM, resize=new), 1)

    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader
    from ffcv.transforms import RandomHorizontalFlip, ToTensor
    stock = Loader(str(images), batch_size=IMAGES_PER_BATCH, num_workers=args.workers,
                   order=OrderOption.RANDOM,
                   pipelines={'image': [RandomResizedCropRGBImageDecoder((SIDE, SIDE)),
                                        RandomHorizontalFlip(), ToTensor()],
                              'label': None, 'path': None})
    add('stock FFCV RandomResizedCrop + flip (area)', stock, 1)
    # The original path reads a JPEG file and a soft-label file per image, exported from the
    # same labelled beton.
    files = export_original_files(labelled, work / shape / 'jpg')
    for k in (1, 4):
        name = f'original FKD path (PIL, label files, DataLoader), K={k}'
        paths[name], ks[name] = original_path(files, k, args.workers), k

    parts = ceiling_runs(beton, new)
    times = interleaved_times({**{name: one_pass(make_iter)
                                  for name, (make_iter, _) in paths.items()},
                               **{name: run for name, (run, _) in parts.items()}},
                              args.repeats)
    rates = {name: statistics.median(crops / t for t in times[name])
             for name, (_, crops) in paths.items()}
    per = {name: statistics.median(times[name]) / count for name, (_, count) in parts.items()}
    t_decode = per['decode']

    def ceiling(k, name):  # as many cores as the loaders have threads
        return args.workers / (t_decode / k + per[f'crop {name}'])
    original = {k: rates[f'original FKD path (PIL, label files, DataLoader), K={k}']
                for k in (1, 4)}
    stock_rate = rates['stock FFCV RandomResizedCrop + flip (area)']
    lines = [f"**{shape}**: {n_images} photos ({'500 x 375 / 375 x 500' if shape == 'imagenet' else '500 x 250'}, "
             f"JPEG 90), {SIDE} px crops, {args.records} records per image, {args.workers} "
             f"loader threads/processes, median of {args.repeats} interleaved rounds. "
             f"{machine()}; {versions('ffcv', 'numba', 'torch')}", '',
             f"Single thread: decode {t_decode * 1e3:.3f} ms per image; crop + resize + flip "
             + ', '.join(f"{n.split()[1]} {v * 1e3:.3f} ms" for n, v in per.items()
                         if n.startswith('crop')) + " per crop.", '',
             f"| data path | crops/s | per core | vs ceiling, {new} (same K) | vs old ceiling, "
             f"area (same K) | vs stock FFCV | vs original FKD path (same K) |",
             '|---|---|---|---|---|---|---|']
    for name, rate in rates.items():
        k = ks[name]
        vs_original = f"{rate / original[k]:.2f}x" if k in original else ''
        lines.append(f"| {name} | {rate:,.0f} | {rate / args.workers:,.0f} | "
                     f"{rate / ceiling(k, new):.0%} | {rate / ceiling(k, old):.2f}x | "
                     f"{rate / stock_rate:.2f}x | {vs_original} |")
    for k in KS:
        lines.append(f"| ceiling, K={k}, {new} (old: area) | {ceiling(k, new):,.0f} "
                     f"({ceiling(k, old):,.0f}) | | 100% | {ceiling(k, new) / ceiling(k, old):.2f}x"
                     f" | | |")

    lines += ['', f"Per crop, core-milliseconds: the ceiling's parts against the loader's "
                  f"measured time ({args.workers} threads / crops per second):", '',
              '| loader | decode / K | crop + resize + flip | ceiling sum | measured | rest |',
              '|---|---|---|---|---|---|']
    for name, rate in rates.items():
        if not name.startswith('FKDLoader'):
            continue
        k, filt = ks[name], name.rsplit(', ', 1)[1]
        crop = per[f'crop {filt}']
        measured = args.workers / rate
        lines.append(f"| {name} | {t_decode / k * 1e3:.3f} | {crop * 1e3:.3f} | "
                     f"{(t_decode / k + crop) * 1e3:.3f} | {measured * 1e3:.3f} | "
                     f"{(measured - t_decode / k - crop) * 1e3:.3f} |")

    lines += ['', "Cores to feed one A100 (derived: a published training rate over the crops/s "
                  "per core measured here):", '',
              '| loader | crops/s per core | ' + ' | '.join(
                  f'{model} ({rate:,.0f} img/s)' for model, rate in GPU_RATES.items()) + ' |',
              '|---|---|' + '---|' * len(GPU_RATES)]
    for name, rate in rates.items():
        if name.startswith('original'):
            continue
        per_core = rate / args.workers
        lines.append(f"| {name} | {per_core:,.0f} | " + ' | '.join(
            f"{gpu / per_core:.1f}" for gpu in GPU_RATES.values()) + ' |')
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sets', default=','.join(PHOTO_SETS),
                        help=f"photo sets, comma-separated: {', '.join(PHOTO_SETS)}")
    parser.add_argument('--resize', choices=RESIZE_FILTERS, default=DEFAULT_RESIZE,
                        help="the project loaders' filter (K = 4 also runs with area)")
    parser.add_argument('--records', type=int, default=32)
    parser.add_argument('--workers', type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--photos', type=int, default=0,
                        help='landscapes used, 16 or more (4 variants each: one batch of 64 '
                             'images); 0: all 273')
    parser.add_argument('--out', default='', help='also write the tables here')
    args = parser.parse_args()
    sets = [s for s in args.sets.split(',') if s]
    unknown = [s for s in sets if s not in PHOTO_SETS]
    if unknown or not sets:
        parser.error(f"--sets {args.sets}: choose from {', '.join(PHOTO_SETS)}")
    if 0 < args.photos < IMAGES_PER_BATCH // 4:
        parser.error(f'--photos {args.photos}: a batch needs {IMAGES_PER_BATCH // 4} or more')
    work = Path(tempfile.mkdtemp(prefix='fkd-bench-loader-'))
    try:
        tables = []
        for shape in sets:
            tables.append(one_set(shape, args, work))
            print(tables[-1], flush=True)
        if args.out:
            Path(args.out).write_text('\n\n'.join(tables) + '\n')
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
