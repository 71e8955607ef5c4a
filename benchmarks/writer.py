"""Writer throughput on real photos: fkd_ffcv's writer vs FFCV's stock DatasetWriter.

    python benchmarks/writer.py [--repeats 3] [--workers 2]

Photos: the landscapes of Debian's endless-sky-data (720x360 JPEG), four variants each (as is,
mirrored, 2x enlarged, centre crop), about 1,100 images in one class folder per scene. Every
row writes the same files to the same fields (JPEG quality 90, longest side 500, label, path)
with the same number of worker processes, in the same run:

- stock DatasetWriter, torchvision-style loading (PIL decode at full size, convert to RGB): the
  ffcv-imagenet recipe;
- stock DatasetWriter with this project's loader (`load_rgb`, DCT-domain downscale of large
  JPEGs);
- fkd_ffcv's `write_beton` (fail-fast workers, atomic output) with the same loader.
"""
import argparse
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fkd_ffcv.fields import image_fields  # noqa: E402
from fkd_ffcv.sources import ImageFolderSource  # noqa: E402
from fkd_ffcv.writer import write_beton  # noqa: E402

LANDSCAPES = Path('/usr/share/games/endless-sky/images/land')


def make_photo_tree(root: Path) -> int:
    """Four variants of each landscape, class = scene name (the file name without digits)."""
    photos = sorted(LANDSCAPES.glob('*.jpg'))
    if not photos:
        sys.exit(f"no photos in {LANDSCAPES}: apt-get install endless-sky-data (make setup does)")
    for photo in photos:
        scene = re.sub(r'[\d+-].*', '', photo.stem) or 'misc'
        out = root / 'train' / scene
        out.mkdir(parents=True, exist_ok=True)
        im = Image.open(photo).convert('RGB')
        w, h = im.size
        variants = {
            'a': im,
            'b': im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            'c': im.resize((2 * w, 2 * h), Image.Resampling.BICUBIC),
            'd': im.crop((w // 8, h // 8, w - w // 8, h - h // 8)),
        }
        for tag, variant in variants.items():
            variant.save(out / f'{photo.stem}-{tag}.jpg', quality=92)
    return 4 * len(photos)


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
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix='fkd-bench-writer-'))
    try:
        n = make_photo_tree(work / 'photos')
        ours_loader = ImageFolderSource(work / 'photos', 'train', max_resolution=500)
        tv_loader = TorchvisionStyle(work / 'photos', 'train')
        rows = [
            ('stock DatasetWriter, torchvision-style PIL loading', stock_write, tv_loader),
            ('stock DatasetWriter, fkd_ffcv load_rgb', stock_write, ours_loader),
            ('fkd_ffcv write_beton, fkd_ffcv load_rgb', ours_write, ours_loader),
        ]
        times = {name: [] for name, _, _ in rows}
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits every row
            for name, write, source in rows:
                out = work / 'out.beton'
                start = time.perf_counter()
                write(out, source, args.workers)
                times[name].append(time.perf_counter() - start)
                size = out.stat().st_size
                out.unlink()
        versions = ', '.join(f"{p} {version(p)}" for p in ('ffcv', 'numba', 'pillow',
                                                             'opencv-python'))
        print(f"{n} photos, {args.workers} worker processes, median of {args.repeats} runs; "
              f"{platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}, {versions}; beton {size / 2**20:.0f} MiB")
        reference = statistics.median(times[rows[0][0]])
        print("\n| writer | images/s | vs ffcv-imagenet recipe |\n|---|---|---|")
        for name, _, _ in rows:
            t = statistics.median(times[name])
            print(f"| {name} | {n / t:,.0f} | {reference / t:.2f}x |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
