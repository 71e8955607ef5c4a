"""Data-path throughput: the multi-crop FKD loader against stock FFCV, the original FKD data
path and the machine's ceiling, all on the same photos in one run.

    python -m benchmarks.loader [--records 32] [--workers 2] [--repeats 7] [--photos N]

Photos: the photo set of benchmarks/common.py (the endless-sky-data landscapes in four
variants, stored at 500 px longest side, JPEG quality 90; --photos N takes the first N
landscapes); 224 px output, uint8. Crop records are drawn as for generation with random soft
labels (a loader's speed does not depend on their values).

- fkd_ffcv FKDLoader, K = 1, 2, 4, 8 crops per decoded image;
- stock FFCV: RandomResizedCropRGBImageDecoder + RandomHorizontalFlip, one crop per image;
- the original FKD path: PIL decode of a JPEG file, one soft-label file per image
  (torch.load), per-crop torchvision resized_crop (bilinear) and flip, torch DataLoader with
  one worker process per core, K = 1 and 4;
- ceiling = cores / (t_decode / K + t_crop_resize): single-thread full-size libjpeg-turbo
  decode (FFCV's decoder) and one crop + INTER_AREA resize (the loader's), measured here.
Every path and both ceiling timings run in the same interleaved rounds, after a warm-up each.
"""
import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import cv2

from benchmarks.common import (IMAGES_PER_BATCH, SIDE, export_original_files, interleaved_times,
                               labelled_photos, one_pass, original_path, versions)
from fkd_ffcv.beton import Beton
from fkd_ffcv.crops import box_pixels, sample_records
from fkd_ffcv.devices import machine
from fkd_ffcv.loaders import FKDLoader, OrderOption


def ceiling_runs(beton):
    """The ceiling's two timings as interleaved_times entries: a single-thread decode of every
    stored image (FFCV's libjpeg-turbo call), and 200 crop + INTER_AREA resizes of one image."""
    pixels = beton.image(0)
    boxes, _ = sample_records(0, 0, *pixels.shape[:2], 200)

    def decode():
        for i in range(len(beton)):
            beton.image(i)

    def resize():
        for box in boxes:
            i, j, h, w = box_pixels(box, *pixels.shape[:2])
            cv2.resize(pixels[i:i + h, j:j + w], (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    return {'decode': (decode, len(beton)), 'resize': (resize, len(boxes))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--records', type=int, default=32)
    parser.add_argument('--workers', type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--photos', type=int, default=0,
                        help='landscapes used, 16 or more (4 variants each: one batch of 64 '
                             'images); 0: all 273')
    args = parser.parse_args()
    if 0 < args.photos < IMAGES_PER_BATCH // 4:
        parser.error(f'--photos {args.photos}: a batch needs {IMAGES_PER_BATCH // 4} or more')
    work = Path(tempfile.mkdtemp(prefix='fkd-bench-loader-'))
    try:
        n_images, images, labelled = labelled_photos(work, args.records, args.photos)
        beton = Beton(images)
        paths = {}
        for k in (1, 2, 4, 8):
            loader = FKDLoader(labelled, batch_size=IMAGES_PER_BATCH * k, num_crops=k,
                               resolution=SIDE, num_workers=args.workers,
                               order=OrderOption.RANDOM)
            paths[f'fkd_ffcv FKDLoader, K={k}'] = (
                loader.__iter__, len(loader) * IMAGES_PER_BATCH * k)

        from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
        from ffcv.loader import Loader
        from ffcv.transforms import RandomHorizontalFlip, ToTensor
        stock = Loader(str(images), batch_size=IMAGES_PER_BATCH, num_workers=args.workers,
                       order=OrderOption.RANDOM,
                       pipelines={'image': [RandomResizedCropRGBImageDecoder((SIDE, SIDE)),
                                            RandomHorizontalFlip(), ToTensor()],
                                  'label': None, 'path': None})
        paths['stock FFCV RandomResizedCrop + flip, 1 crop per image'] = (
            stock.__iter__, len(stock) * IMAGES_PER_BATCH)

        # The original path reads a JPEG file and a soft-label file per image, exported from
        # the same labelled beton.
        files = export_original_files(labelled, work / 'jpg')
        for k in (1, 4):
            paths[f'original FKD path (PIL, label files, DataLoader), K={k}'] = original_path(
                files, k, args.workers)

        ceiling_parts = ceiling_runs(beton)
        times = interleaved_times({**{name: one_pass(make_iter)
                                      for name, (make_iter, _) in paths.items()},
                                   **{name: run for name, (run, _) in ceiling_parts.items()}},
                                  args.repeats)
        rows = {name: statistics.median(crops / t for t in times[name])
                for name, (_, crops) in paths.items()}
        t_decode, t_resize = (statistics.median(times[name]) / count
                              for name, (_, count) in ceiling_parts.items())
        cores = len(os.sched_getaffinity(0))
        ceiling = {k: cores / (t_decode / k + t_resize) for k in (1, 2, 4, 8)}

        print(f"{n_images} photos at <= 500 px (JPEG 90), {SIDE} px crops, {args.records} "
              f"records per image, {args.workers} loader threads/processes, median of "
              f"{args.repeats} interleaved rounds. {machine()}; "
              f"{versions('ffcv', 'numba', 'torch')}")
        print(f"single-thread decode {t_decode * 1e3:.2f} ms/image, crop+resize "
              f"{t_resize * 1e3:.2f} ms/crop")
        print("\n| data path | crops/s | vs ceiling (same K) | vs original FKD path (same K) |"
              "\n|---|---|---|---|")
        original = {1: rows['original FKD path (PIL, label files, DataLoader), K=1'],
                    4: rows['original FKD path (PIL, label files, DataLoader), K=4']}
        for name, rate in rows.items():
            k = int(name.rsplit('K=', 1)[1]) if 'K=' in name else 1
            vs_original = f"{rate / original[k]:.2f}x" if k in original else ''
            print(f"| {name} | {rate:,.0f} | {rate / ceiling[k]:.0%} | {vs_original} |")
        for k, c in ceiling.items():
            print(f"| ceiling, K={k} | {c:,.0f} | 100% | |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
