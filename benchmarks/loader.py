"""Data-path throughput: the multi-crop FKD loader against stock FFCV, the original FKD data
path and the machine's ceiling, all on the same photos in one run.

    python benchmarks/loader.py [--records 32] [--workers 2]

Photos: the endless-sky-data landscapes in four variants (as benchmarks/writer.py makes them),
stored at 500 px longest side, JPEG quality 90; 224 px output, uint8. Crop records are drawn
as for generation with random soft labels (a loader's speed does not depend on their values).

- fkd_ffcv FKDLoader, K = 1, 2, 4, 8 crops per decoded image;
- stock FFCV: RandomResizedCropRGBImageDecoder + RandomHorizontalFlip, one crop per image;
- the original FKD path: PIL decode of a JPEG file, one soft-label file per image
  (torch.load), per-crop torchvision resized_crop (bilinear) and flip, torch DataLoader with
  one worker process per core, K = 1 and 4;
- ceiling = cores / (t_decode / K + t_crop_resize): single-thread full-size libjpeg-turbo
  decode (FFCV's decoder) and one crop + INTER_AREA resize (the loader's), measured here.
"""
import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from original_fkd import OriginalFKDData, export_original_files  # noqa: E402
from writer import make_photo_tree  # noqa: E402
from fkd_ffcv.beton import Beton  # noqa: E402
from fkd_ffcv.crops import box_pixels, sample_records  # noqa: E402
from fkd_ffcv.fields import image_fields, soft_label_fields  # noqa: E402
from fkd_ffcv.loaders import FKDLoader, OrderOption  # noqa: E402
from fkd_ffcv.sources import ImageFolderSource  # noqa: E402
from fkd_ffcv.writer import copy_beton, write_beton  # noqa: E402

SIZE = 224
IMAGES_PER_BATCH = 64  # every path decodes this many images per batch


class RandomRecords:
    """Crop records as generation draws them, with random top-5 labels of 1000 classes."""

    def __init__(self, beton, n):
        self.sizes = [(int(m['height']), int(m['width'])) for m in beton.field_metadata('image')]
        self.n = n

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, i):
        boxes, flips = sample_records(0, i, *self.sizes[i], self.n)
        rng = np.random.default_rng(i)
        return (boxes, flips.astype(np.uint8),
                rng.integers(0, 1000, (self.n, 5)).astype(np.int16),
                rng.integers(0, 256, (self.n, 5)).astype(np.uint8))


def labelled_photos(work: Path, records: int):
    """(photo count, images beton, labelled beton) in `work`: the photo variants stored at
    500 px longest side, JPEG 90, then copied with `records` random crop records per image."""
    n_images = make_photo_tree(work / 'photos')
    images, labelled = work / 'images.beton', work / 'fkd.beton'
    write_beton(images, image_fields('jpg', max_resolution=500),
                ImageFolderSource(work / 'photos', 'train', max_resolution=500),
                manifest={'classes': [str(i) for i in range(1000)]}, progress=False)
    copy_beton(images, labelled, soft_label_fields(records, 5),
               RandomRecords(Beton(images), records), progress=False,
               manifest_updates={'soft_labels': {'num_records': records}})
    return n_images, images, labelled


def original_path(files, k: int, workers: int):
    """FKD's own data path over `files` = export_original_files(...), as an interleaved_rates
    entry: (make_iter, crops per pass)."""
    data = torch.utils.data.DataLoader(OriginalFKDData(*files, k, SIZE),
                                       batch_size=IMAGES_PER_BATCH, shuffle=True,
                                       num_workers=workers, persistent_workers=True)
    return data.__iter__, len(data.dataset) * k


def interleaved_rates(paths, repeats):
    """Median crops/s per path over `repeats` rounds of one full pass of every path, after one
    warm-up pass each (compilation, worker start): interleaving makes a change in the machine's
    load hit every path alike. `paths` maps a name to (make_iter, crops per pass)."""
    for make_iter, _ in paths.values():
        for _ in make_iter():
            pass
    rates = {name: [] for name in paths}
    for _ in range(repeats):
        for name, (make_iter, crops) in paths.items():
            start = time.perf_counter()
            for _ in make_iter():
                pass
            rates[name].append(crops / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def ceiling_times(beton, repeats):
    """Median over `repeats` rounds of the single-thread decode time per image (FFCV's
    libjpeg-turbo call, every stored image) and of one crop + INTER_AREA resize (200 records)."""
    pixels = beton.image(0)
    boxes, _ = sample_records(0, 0, *pixels.shape[:2], 200)
    decode, resize = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(len(beton)):
            beton.image(i)
        decode.append((time.perf_counter() - start) / len(beton))
        start = time.perf_counter()
        for box in boxes:
            i, j, h, w = box_pixels(box, *pixels.shape[:2])
            cv2.resize(pixels[i:i + h, j:j + w], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        resize.append((time.perf_counter() - start) / len(boxes))
    return statistics.median(decode), statistics.median(resize)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--records', type=int, default=32)
    parser.add_argument('--workers', type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument('--repeats', type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix='fkd-bench-loader-'))
    try:
        n_images, images, labelled = labelled_photos(work, args.records)
        beton = Beton(images)
        paths = {}
        for k in (1, 2, 4, 8):
            loader = FKDLoader(labelled, batch_size=IMAGES_PER_BATCH * k, num_crops=k,
                               resolution=SIZE, num_workers=args.workers,
                               order=OrderOption.RANDOM)
            paths[f'fkd_ffcv FKDLoader, K={k}'] = (
                loader.__iter__, len(loader) * IMAGES_PER_BATCH * k)

        from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
        from ffcv.loader import Loader
        from ffcv.transforms import RandomHorizontalFlip, ToTensor
        stock = Loader(str(images), batch_size=IMAGES_PER_BATCH, num_workers=args.workers,
                       order=OrderOption.RANDOM,
                       pipelines={'image': [RandomResizedCropRGBImageDecoder((SIZE, SIZE)),
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

        rows = interleaved_rates(paths, args.repeats)
        t_decode, t_resize = ceiling_times(beton, args.repeats)
        cores = len(os.sched_getaffinity(0))
        ceiling = {k: cores / (t_decode / k + t_resize) for k in (1, 2, 4, 8)}

        print(f"{n_images} photos at <= 500 px (JPEG 90), {SIZE} px crops, {args.records} records "
              f"per image, {args.workers} loader threads/processes, median of {args.repeats} "
              f"interleaved rounds; {platform.machine()}, {cores} cores, "
              f"Python {platform.python_version()}, ffcv {version('ffcv')}, numba {version('numba')}, torch {torch.__version__}")
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
