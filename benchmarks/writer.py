"""Writer throughput on real photos: fkd_ffcv's writer vs FFCV's stock DatasetWriter.

    python -m benchmarks.writer [--repeats 3] [--workers 2] [--photos N]

Photos: the photo set of benchmarks/common.py (the landscapes of Debian's endless-sky-data,
720x360 JPEG, four variants each: about 1,100 images in one class folder per scene; --photos N
takes the first N landscapes). Every row writes the same files to the same fields (JPEG
quality 90, longest side 500, label, path) with the same number of worker processes, in
interleaved rounds of the same run:

- stock DatasetWriter, torchvision-style loading (PIL decode at full size, convert to RGB): the
  ffcv-imagenet recipe;
- stock DatasetWriter with this project's loader (`load_rgb`, DCT-domain downscale of large
  JPEGs);
- fkd_ffcv's `write_beton` (fail-fast workers, atomic output) with the same loader.
"""
import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import interleaved_times, make_photo_tree, versions
from fkd_ffcv.reporting import machine
from fkd_ffcv.data.fields import image_fields
from fkd_ffcv.data.sources import ImageFolderSource
from fkd_ffcv.data.writer import write_beton


class TorchvisionStyle(ImageFolderSource):
    """Same files and labels, loaded as torchvision's ImageFolder does (full-size PIL decode)."""

    def __getitem__(self, index):
        rel, label = self.samples[index]
        with Image.open(self.root / rel) as im:
            pixels = np.asarray(im.convert('RGB'))
        return pixels, label, np.frombuffer(os.fsencode(rel), dtype=np.uint8)


def stock_write(path, source, workers):
    from ffcv.writer import DatasetWriter
    DatasetWriter(str(path), image_fields('jpg', max_resolution=500, jpeg_quality=90),
                  num_workers=workers).from_indexed_dataset(source, chunksize=100)


def ours_write(path, source, workers):
    write_beton(path, image_fields('jpg', max_resolution=500, jpeg_quality=90), source,
                num_workers=workers, progress=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--workers', type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument('--photos', type=int, default=0, help='landscapes used (0: all 273)')
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix='fkd-bench-writer-'))
    try:
        n = make_photo_tree(work / 'photos', args.photos)
        ours_loader = ImageFolderSource(work / 'photos', 'train', max_resolution=500)
        tv_loader = TorchvisionStyle(work / 'photos', 'train')
        rows = [
            ('stock DatasetWriter, torchvision-style PIL loading', stock_write, tv_loader),
            ('stock DatasetWriter, fkd_ffcv load_rgb', stock_write, ours_loader),
            ('fkd_ffcv write_beton, fkd_ffcv load_rgb', ours_write, ours_loader),
        ]
        out = work / 'out.beton'

        def writing(write, source):
            def run():
                out.unlink(missing_ok=True)
                write(out, source, args.workers)
            return run

        times = interleaved_times({name: writing(write, source) for name, write, source in rows},
                                  args.repeats, warm_up=False)
        print(f"{n} photos, {args.workers} worker processes, median of {args.repeats} "
              f"interleaved rounds; beton {out.stat().st_size / 2**20:.0f} MiB. {machine()}; "
              f"{versions('ffcv', 'numba', 'pillow', 'opencv-python')}")
        reference = statistics.median(times[rows[0][0]])
        print("\n| writer | images/s | vs ffcv-imagenet recipe |\n|---|---|---|")
        for name, _, _ in rows:
            t = statistics.median(times[name])
            print(f"| {name} | {n / t:,.0f} | {reference / t:.2f}x |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
