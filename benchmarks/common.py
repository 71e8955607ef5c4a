"""What the benchmark scripts share: the versions line every table carries, the photo set, FKD's
original data path and interleaved timing.

- versions(): the package versions a table was measured with, beside the machine line
  (`fkd_ffcv.reporting.machine`, which says why the machine matters).
- The photo sets: the landscapes of Debian's endless-sky-data (720x360 JPEG), four variants of
  each in one class folder per scene, stored at 500 px longest side, JPEG 90, with random crop
  records (a loader's speed does not depend on the labels' values). `panoramas`: as is,
  mirrored, enlarged 2x, centre crop; `imagenet`: 4:3 and 3:4 regions at 500 x 375 and
  375 x 500, the shapes ImageNet is stored in.
- FKD's original data path, rebuilt (as train_FKD.py reads data; no code of it copied): a JPEG
  file and a `torch.save([coords, flips, labels (N, 2, k)])` soft-label file per image, read
  by DataLoader worker processes with PIL and cut with torchvision. `original_path` feeds
  `interleaved_rates`; `OriginalFKDPath` feeds the trainer (timing_table.py).
- Interleaved timing: every round times every entry once, in turn, so that a change in the
  machine's load hits every entry alike; tables give medians over the rounds.
"""
from __future__ import annotations

import io
import os
import platform
import re
import statistics
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from fkd_ffcv.data.beton import Beton
from fkd_ffcv.records.crops import BOX_UNITS, sample_records
from fkd_ffcv.data.fields import (BOXES_FIELD, CLASSES_FIELD, CODES_FIELD, FLAGS_FIELD, LABEL_FIELD,
                             image_fields, soft_label_fields)
from fkd_ffcv.records.soft_labels import FLAG_FLIP, FLAG_P1_STORED, decode_probs
from fkd_ffcv.data.sources import ImageFolderSource
from fkd_ffcv.data.copying import copy_beton
from fkd_ffcv.data.manifest import Manifest, Records
from fkd_ffcv.data.writer import write_beton

REPO = Path(__file__).resolve().parents[1]
LANDSCAPES = Path('/usr/share/games/endless-sky/images/land')
SIDE = 224             # output side of the loader benchmarks
IMAGES_PER_BATCH = 64  # images decoded per batch, on every path of the loader benchmarks


def seed_table(title: str, results: dict, first: str = 'student') -> list:
    """Markdown lines: per row of `results` (name -> run summaries over seeds), the mean and
    range of top-1 and the mean training seconds."""
    lines = [f'**{title}**', '', f'| {first} | top-1 mean | min - max | training s (mean) |',
             '|---|---|---|---|']
    for name, summaries in results.items():
        top1 = [s['top1'] for s in summaries]
        lines.append(f"| {name} | {statistics.mean(top1):.2%} | {min(top1):.2%} - "
                     f"{max(top1):.2%} | "
                     f"{statistics.mean(s['train_seconds'] for s in summaries):.0f} |")
    return lines


def report(text: str, out=None) -> None:
    """Print a benchmark's table and, given a path `out`, write it there too."""
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + '\n')


# ------------------------------------------------------------------------- other revisions

def extract_revision(revision: str, paths: list, folder: Path) -> Path:
    """The files under `paths` as of git `revision`, extracted into `folder` (a before/after
    comparison runs the old code from there); a revision git does not know exits, named."""
    try:
        tar = subprocess.run(['git', 'archive', '--format=tar', revision, *paths], cwd=REPO,
                             capture_output=True, check=True).stdout
    except subprocess.CalledProcessError as e:
        sys.exit(f"git archive {revision}: {e.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        safe = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}  # Python >= 3.11.4
        archive.extractall(folder, **safe)
    return folder


# ------------------------------------------------------------------------- the machine

def versions(*packages: str) -> str:
    """'Python 3.11.7, torch 2.14.1, ...' for the named distributions."""
    def of(name):
        if name == 'torch':
            return torch.__version__  # with the build's tag (+cu130, +cpu)
        try:
            return version(name)
        except PackageNotFoundError:
            return 'absent'
    return ', '.join([f"Python {platform.python_version()}"]
                     + [f"{name} {of(name)}" for name in packages])


# ------------------------------------------------------------------------- the photo set

def landscapes(count: int = 0) -> list:
    """The first `count` landscape photos of endless-sky-data, sorted (0: all 273); exits
    naming the package when fewer are installed."""
    photos = sorted(LANDSCAPES.glob('*.jpg'))
    if not photos or len(photos) < count:
        sys.exit(f"need {count or 'the'} photos in {LANDSCAPES}: apt-get install "
                 f"endless-sky-data (make setup installs it when it can)")
    return photos[:count] if count else photos


def scene_of(photo: Path) -> str:
    """A landscape's scene: its file name without digits and photographer."""
    return re.sub(r'[\d+-].*', '', photo.stem) or 'misc'


PHOTO_SETS = ('imagenet', 'panoramas')


def _variants(im, shape: str) -> dict:
    """A landscape's four variants in the named photo set:
    - panoramas: as is (720 x 360), mirrored, enlarged 2x, centre crop;
    - imagenet: shaped as ImageNet is stored (500 x 375 and 375 x 500): two 4:3 and two 3:4
      regions of the photo, each resized to 500 px on its longer side (the 360 px high
      originals are enlarged 1.04x and 1.39x: softer than camera photos)."""
    from PIL import Image
    w, h = im.size
    if shape == 'panoramas':
        return {'a': im, 'b': im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                'c': im.resize((2 * w, 2 * h), Image.Resampling.BICUBIC),
                'd': im.crop((w // 8, h // 8, w - w // 8, h - h // 8))}
    wide, tall = 4 * h // 3, 3 * h // 4
    regions = {'a': (0, wide), 'b': (w - wide, w), 'c': ((w - tall) // 2, (w + tall) // 2),
               'd': (w // 8, w // 8 + tall)}
    return {tag: im.crop((left, 0, right, h)).resize(
        (500, 375) if right - left == wide else (375, 500), Image.Resampling.BICUBIC)
        for tag, (left, right) in regions.items()}


def make_photo_tree(root: Path, photos: int = 0, val_every: int = 0,
                    min_photos: int = 0, shape: str = 'panoramas') -> int:
    """Four variants of each landscape (the first `photos`; 0: all) under root/train/<scene>,
    shaped as `shape` of PHOTO_SETS says (`_variants`); returns the number of files. With
    `val_every` n, every n-th photo of a scene goes to root/val/<scene> instead, its four
    variants together (a split by photo, not by file); `min_photos` leaves out scenes with
    fewer photos."""
    chosen = landscapes(photos)
    counts = {}
    for photo in chosen:
        counts[scene_of(photo)] = counts.get(scene_of(photo), 0) + 1
    chosen = [p for p in chosen if counts[scene_of(p)] >= min_photos]
    from PIL import Image
    seen = {}
    for photo in chosen:
        scene = scene_of(photo)
        seen[scene] = seen.get(scene, 0) + 1
        split = 'val' if val_every and seen[scene] % val_every == 0 else 'train'
        out = root / split / scene
        out.mkdir(parents=True, exist_ok=True)
        im = Image.open(photo).convert('RGB')
        for tag, variant in _variants(im, shape).items():
            variant.save(out / f'{photo.stem}-{tag}.jpg', quality=92)
    return 4 * len(chosen)


def photo_betons(work: Path, max_resolution: int = 500) -> tuple:
    """(train, val) betons in `work` of the `imagenet` photo set, one class per scene with 7 or
    more photos, every 4th photo of a scene (its four variants together) for validation,
    stored as JPEG at `max_resolution` px longest side (reused when they exist)."""
    paths = work / 'photos_train.beton', work / 'photos_val.beton'
    if all(p.exists() for p in paths):
        return paths
    make_photo_tree(work / 'photos', val_every=4, min_photos=7, shape='imagenet')
    classes = sorted(p.name for p in (work / 'photos' / 'train').iterdir())
    for path, split in zip(paths, ('train', 'val')):
        write_beton(path, image_fields('jpg', max_resolution=max_resolution),
                    ImageFolderSource(work / 'photos', split, max_resolution=max_resolution),
                    manifest=Manifest(classes=classes), progress=False)
    return paths


class RandomRecords:
    """Crop records as generation draws them, with random top-5 labels of 1000 classes."""

    def __init__(self, beton: Beton, n: int):
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


def labelled_photos(work: Path, records: int, photos: int = 0, shape: str = 'panoramas'):
    """(image count, images beton, labelled beton) in `work`: the photo variants of `shape`
    stored at 500 px longest side, JPEG 90, then copied with `records` random crop records per
    image."""
    work.mkdir(parents=True, exist_ok=True)
    n_images = make_photo_tree(work / 'photos', photos, shape=shape)
    images, labelled = work / 'images.beton', work / 'fkd.beton'
    write_beton(images, image_fields('jpg', max_resolution=500),
                ImageFolderSource(work / 'photos', 'train', max_resolution=500),
                manifest=Manifest(classes=[str(i) for i in range(1000)]), progress=False)
    copy_beton(images, labelled, soft_label_fields(records, 5),
               RandomRecords(Beton(images), records), progress=False,
               manifest_updates={'soft_labels': Records(num_records=records)})
    return n_images, images, labelled


# ------------------------------------------------------------------------- FKD's original path

class OriginalFKDData(torch.utils.data.Dataset):
    """Per image: K random records of its label file cut from its JPEG (resized_crop,
    bilinear with antialias, flip) -> (crops (K, 3, S, S) uint8, classes, probabilities, hard
    label)."""

    def __init__(self, files, label_files, labels, k, side):
        self.files, self.label_files, self.labels = files, label_files, labels
        self.k, self.side = k, side

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        import torchvision.transforms.functional as F
        from PIL import Image
        image = Image.open(self.files[i]).convert('RGB')
        coords, flips, soft = torch.load(self.label_files[i], weights_only=True)
        crops, picks = [], torch.randperm(len(coords))[:self.k]
        for r in picks.tolist():
            scale = torch.tensor([image.height, image.width] * 2)
            top, left, height, width = (coords[r] * scale).tolist()
            crop = F.resized_crop(image, int(top), int(left), max(1, int(height)),
                                  max(1, int(width)), [self.side, self.side], antialias=True)
            crops.append(F.pil_to_tensor(F.hflip(crop) if flips[r] else crop))
        return (torch.stack(crops), soft[picks, 0].long(), soft[picks, 1].float(),
                self.labels[i])


def export_original_files(labelled: Path, folder: Path):
    """The labelled beton as FKD keeps it: a JPEG per image and a `torch.save([coords, flips,
    labels (N, 2, k)])` file per image, written by a thread per core (JPEG decoding and
    encoding release the GIL). Returns (files, label files, hard labels)."""
    beton = Beton(labelled)
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f'{i}.jpg' for i in range(len(beton))]
    label_files = [folder / f'{i}.tar' for i in range(len(beton))]

    def export(i):
        if label_files[i].exists():  # written last: the pair is complete
            return
        cv2.imwrite(str(files[i]), np.ascontiguousarray(beton.image(i)[..., ::-1]),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        flags = np.array(beton.array(FLAGS_FIELD, i))
        probs = decode_probs(torch.from_numpy(np.array(beton.array(CODES_FIELD, i))),
                             torch.from_numpy((flags & FLAG_P1_STORED) != 0))
        classes = torch.from_numpy(np.array(beton.array(CLASSES_FIELD, i))).float()
        coords = torch.from_numpy(np.array(beton.array(BOXES_FIELD, i)) / BOX_UNITS)
        torch.save([coords, torch.from_numpy((flags & FLAG_FLIP) != 0),
                    torch.stack([classes, probs], dim=1)], label_files[i])

    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(export, range(len(beton))))
    return files, label_files, [int(x) for x in beton.field_metadata(LABEL_FIELD)]


def original_path(files, k: int, workers: int):
    """FKD's data path alone over `files` (export_original_files' result), as an
    interleaved_rates entry: (make_iter, crops per pass); workers persist between passes."""
    data = torch.utils.data.DataLoader(OriginalFKDData(*files, k, SIDE),
                                       batch_size=IMAGES_PER_BATCH, shuffle=True,
                                       num_workers=workers, persistent_workers=workers > 0)
    return data.__iter__, len(data.dataset) * k


class OriginalFKDPath:
    """FKD's data path with FKDLoader's interface (what the trainer iterates): batches of B
    images x K recorded crops, their top-k soft labels and hard labels, on `device`."""

    def __init__(self, files, label_files, labels, k, batch_images, side, workers, device):
        self.data = OriginalFKDData(files, label_files, labels, k, side)
        self.device = torch.device(device)
        self.loader = torch.utils.data.DataLoader(
            self.data, batch_size=batch_images, shuffle=True, drop_last=True,
            num_workers=workers, pin_memory=self.device.type == 'cuda')  # as train_FKD.py
        # (its workers start anew each pass, as there)

    def __len__(self):
        return len(self.loader)

    def set_resolution(self, side):
        self.data.side = side  # read by the workers when the next pass starts them

    def start_at(self, pass_index, epoch=None):
        pass

    def __iter__(self):
        to = dict(device=self.device, non_blocking=True)
        for crops, classes, probs, hard in self.loader:
            k = crops.shape[1]
            yield (crops.flatten(0, 1).to(**to).contiguous(memory_format=torch.channels_last),
                   classes.flatten(0, 1).to(**to), probs.flatten(0, 1).to(**to),
                   hard.repeat_interleave(k).to(**to))


# ------------------------------------------------------------------------- interleaved timing

def interleaved_times(runs: dict, repeats: int, warm_up: bool = True) -> dict:
    """Seconds of each call, per name: `repeats` rounds, each calling every entry of `runs`
    (name -> callable) once in turn, after one untimed call of each when `warm_up`
    (compilation, worker start)."""
    if warm_up:
        for run in runs.values():
            run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def one_pass(make_iter: Callable) -> Callable:
    """A callable that runs one full pass of a loader (`make_iter`: its __iter__)."""
    def run():
        for _ in make_iter():
            pass
    return run


def interleaved_rates(paths: dict, repeats: int) -> dict:
    """Median crops/s per data path over `repeats` interleaved rounds of one full pass of every
    path, after one warm-up pass each. `paths` maps a name to (make_iter, crops per pass)."""
    times = interleaved_times({name: one_pass(make_iter)
                               for name, (make_iter, _) in paths.items()}, repeats)
    return {name: statistics.median(crops / t for t in times[name])
            for name, (_, crops) in paths.items()}
