"""Where samples come from before they are written: image folders, Fashion-MNIST, and
synthetic photo-like images (for machines without data sets, such as a lent GPU).

Each source yields `(pixels, label, path)` per sample: uint8 HxWx3 RGB, the class index, and
the path relative to the data set root as bytes (stored as the beton's `path` field, so later
steps can match external files, such as FKD's per-image soft-label files, to samples).

Image files are turned into RGB the same way whatever their kind (see `load_rgb`). A file that
cannot be used raises `BadSample` with the reason; the writer then fails or skips it.
"""
from __future__ import annotations

import gzip
import os
import stat
import struct
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np
from PIL import Image

from fkd_ffcv.data.fields import MAX_SIDE
from fkd_ffcv.defaults import FASHION_MNIST_DIR, MAX_PIXELS


class BadSample(Exception):
    """Raised by a source for an input sample that cannot be used (the message says why): the
    writer fails on it, or skips it and reports it (on_error)."""


# torchvision.datasets.folder.IMG_EXTENSIONS: the same files are taken as images.
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


def subset_indices(n: int, subset: int) -> np.ndarray:
    """`subset` indices spread evenly over range(n) (all of them if subset < 0 or >= n).

    Sources list samples class by class, so an even spread keeps every class represented,
    unlike the first `subset` samples.
    """
    if subset < 0 or subset >= n:
        return np.arange(n)
    if subset == 0:
        raise ValueError("subset must be positive (or -1 for all samples)")
    return np.unique(np.linspace(0, n - 1, subset).round().astype(np.int64))


# --------------------------------------------------------------------------------------------
# Image files


def load_rgb(path, max_resolution: Optional[int] = None,
             max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as uint8 HxWx3 RGB, or raise BadSample saying why it cannot be.

    - greyscale, CMYK, YCbCr, palette and 1-bit images are converted to RGB;
    - transparency (RGBA, LA, a transparent palette entry or colour) is composited over white;
    - 16-bit images keep their top 8 bits; 32-bit integer images are clipped to 0..255, as
      Pillow's (and so torchvision's) conversion does;
    - EXIF orientation is ignored, as torchvision's ImageFolder loader does, so boxes stay in
      the stored pixel grid;
    - with `max_resolution`, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
      when that still leaves its longer side at or above `max_resolution` (the writer then
      resizes to exactly that);
    - images of more than `max_pixels` pixels are refused before decoding.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        reason = "broken symbolic link" if os.path.islink(path) else "file not found"
        raise BadSample(reason) from None
    except OSError as e:
        raise BadSample(f"cannot stat: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadSample("not a regular file")
    if st.st_size == 0:
        raise BadSample("empty file")
    try:
        with warnings.catch_warnings():
            # The size check below is the limit; Pillow's warning at half its own limit is noise.
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > max_pixels:
                    raise BadSample(f"{im.width}x{im.height} pixels is over the limit of "
                                    f"{max_pixels} (max_pixels)")
                if not max_resolution and max(im.size) > MAX_SIDE:
                    raise BadSample(f"{im.width}x{im.height}: FFCV stores sides up to "
                                    f"{MAX_SIDE} px; set max_resolution")
                if max_resolution and im.format == 'JPEG':
                    scale = max_resolution / max(im.size)
                    if scale < 1:
                        im.draft('RGB', (int(im.width * scale) + 1, int(im.height * scale) + 1))
                im.load()
                return _to_rgb(im)
    except BadSample:
        raise
    except PermissionError as e:
        raise BadSample(f"not readable: {e.strerror}") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        # Pillow reports unknown formats, truncation and corrupt data as these.
        raise BadSample(f"cannot decode: {type(e).__name__}: {e}") from None


def _to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ('I;16', 'I;16L', 'I;16B', 'I;16N'):
        # 16-bit greyscale: keep the top 8 bits, as Pillow itself does for 16-bit RGB.
        grey = (np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode == 'F':
        raise BadSample("floating-point images are not supported (mode F)")
    if mode in ('P', 'L', '1', 'RGB') and 'transparency' in im.info:
        im = im.convert('RGBA')  # a transparent colour or palette entry
    if im.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La'):
        rgba = im.convert('RGBA')
        white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    if im.mode != 'RGB':
        im = im.convert('RGB')
    pixels = np.asarray(im)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise BadSample(f"unsupported pixel layout {pixels.dtype} {pixels.shape} (mode {mode})")
    return np.ascontiguousarray(pixels)


# --------------------------------------------------------------------------------------------
# Sources


def find_classes(directory) -> List[str]:
    """Class folder names as torchvision's ImageFolder finds them (every folder, sorted)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory")
    classes = sorted(e.name for e in os.scandir(directory) if e.is_dir())
    if not classes:
        raise FileNotFoundError(f"{directory}: no class folders (expected <class>/<image>)")
    return classes


class ImageFolderSource:
    """`<root>/<split>/<class>/**/<image>` as (pixels, label, path) samples.

    Class indices follow the sorted class folders of `<root>/train` when it exists, so every
    split of one data set shares them; a class folder of another split that train lacks is an
    error. Files without an image extension are ignored (counted in `ignored`); class folders
    without images are reported in `empty_classes` and keep their index.
    """

    def __init__(self, root, split: str, max_resolution: Optional[int] = None,
                 max_pixels: int = MAX_PIXELS, subset: int = -1):
        self.root = Path(root)
        self.split = split
        self.max_resolution = max_resolution
        self.max_pixels = max_pixels
        split_dir = self.root / split
        split_classes = find_classes(split_dir)
        train_dir = self.root / 'train'
        self.classes = find_classes(train_dir) if train_dir.is_dir() else split_classes
        unknown = sorted(set(split_classes) - set(self.classes))
        if unknown:
            raise ValueError(f"{split_dir}: class folder(s) {unknown[:5]} not in {train_dir}")
        samples: List[Tuple[str, int]] = []
        self.ignored = 0
        self.empty_classes: List[str] = []
        for label, name in enumerate(self.classes):
            class_dir = split_dir / name
            found = 0
            if class_dir.is_dir():
                unreadable = []
                walk = sorted(os.walk(class_dir, followlinks=True, onerror=unreadable.append))
                if unreadable:
                    raise OSError(f"cannot list {unreadable[0].filename}: "
                                  f"{unreadable[0].strerror} ({len(unreadable)} folder(s))")
                for dirpath, _, filenames in walk:  # torchvision's order: by folder path
                    for fname in sorted(filenames):
                        if fname.lower().endswith(IMG_EXTENSIONS):
                            rel = os.path.relpath(os.path.join(dirpath, fname), self.root)
                            samples.append((rel, label))
                            found += 1
                        else:
                            self.ignored += 1
            if not found:
                self.empty_classes.append(name)
        if not samples:
            raise FileNotFoundError(f"{split_dir}: no image files "
                                    f"(extensions: {', '.join(IMG_EXTENSIONS)})")
        self.samples = [samples[i] for i in subset_indices(len(samples), subset)]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        rel, label = self.samples[index]
        pixels = load_rgb(self.root / rel, self.max_resolution, self.max_pixels)
        return pixels, label, np.frombuffer(os.fsencode(rel), dtype=np.uint8)

    def describe(self, index):
        return str(self.root / self.samples[index][0])


FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                         'Shirt', 'Sneaker', 'Bag', 'Ankle boot']
_FASHION_MNIST_FILES = {'train': 'train', 'val': 't10k'}


def read_idx(path) -> np.ndarray:
    """An IDX file (the MNIST format, optionally gzipped) as a numpy array."""
    opener = gzip.open if str(path).endswith('.gz') else open
    with opener(path, 'rb') as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b'\0\0' or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = struct.unpack(f'>{ndim}I', data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {body.size} values for shape {shape} (truncated?)")
    return body.reshape(shape)


class FashionMNISTSource:
    """Fashion-MNIST from the IDX files of Debian's `dataset-fashion-mnist` package.

    The 28x28 grey images are resized to `image_size` (bicubic) and repeated to RGB, so the
    data set exercises the same RGB image path as photos. 'val' is the 10,000-image test set.
    """
    classes = FASHION_MNIST_CLASSES

    def __init__(self, split: str, image_size: int = 32, root=FASHION_MNIST_DIR,
                 subset: int = -1):
        if split not in _FASHION_MNIST_FILES:
            raise ValueError(f"Fashion-MNIST split must be one of {list(_FASHION_MNIST_FILES)}, "
                             f"not {split!r}")
        if image_size < 1:
            raise ValueError(f"image_size must be positive, not {image_size}")
        root = Path(root)
        stem = _FASHION_MNIST_FILES[split]
        image_file = root / f'{stem}-images-idx3-ubyte.gz'
        label_file = root / f'{stem}-labels-idx1-ubyte.gz'
        for f in (image_file, label_file):
            if not f.is_file():
                raise FileNotFoundError(f"{f}: missing; install the Debian package "
                                        f"dataset-fashion-mnist (make setup does)")
        images, labels = read_idx(image_file), read_idx(label_file)
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(f"{image_file}, {label_file}: shapes {images.shape} and "
                             f"{labels.shape} do not pair up")
        self.split, self.image_size = split, image_size
        self.indices = subset_indices(len(labels), subset)
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        i = int(self.indices[index])
        grey = self.images[i]
        if grey.shape[0] != self.image_size:
            grey = cv2.resize(grey, (self.image_size, self.image_size),
                              interpolation=cv2.INTER_CUBIC)
        pixels = np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
        path = np.frombuffer(f'{self.split}/{i:05d}'.encode(), dtype=np.uint8)
        return pixels, int(self.labels[i]), path

    def describe(self, index):
        return f"fashion-mnist {self.split} image {int(self.indices[index])}"


class SyntheticPhotoSource:
    """Photo-like images (smooth colour fields with texture) drawn from (seed, index): no
    files needed. ImageNet's shape by default: about 500 x 375 px (70% landscape), 1000
    classes (label = index mod classes). Content carries no class signal: for speed and
    plumbing checks, not accuracy."""

    def __init__(self, n: int, seed: int = 0, side: int = 500, num_classes: int = 1000):
        self.n, self.seed, self.side = n, seed, side
        self.classes = [f'class{c:04d}' for c in range(num_classes)]

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, index])
        long_side, short_side = self.side, max(1, self.side * 3 // 4)
        h, w = (short_side, long_side) if rng.random() < 0.7 else (long_side, short_side)
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        scale = 500 / self.side  # the same look at any size
        planes = [127 + 90 * np.sin(scale * (rng.uniform(0.005, 0.05) * y +
                                             rng.uniform(0.005, 0.05) * x) + rng.uniform(0, 6.3))
                  for _ in range(3)]
        pixels = np.stack(planes, axis=2) + rng.normal(0, 12, (h, w, 1))
        path = np.frombuffer(f'synthetic/{index}.jpg'.encode(), dtype=np.uint8)
        return np.clip(pixels, 0, 255).astype(np.uint8), index % len(self.classes), path

    def describe(self, index):
        return f"synthetic photo {index} (seed {self.seed})"
