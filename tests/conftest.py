"""Shared test data: small image trees made here, and betons written once per session."""
import faulthandler
import os
from pathlib import Path

# Before torch loads libgomp (read once, at load; subprocesses inherit it): torch's OpenMP
# threads sleep when idle instead of spinning. A spinning pool takes the cores from the
# loader's thread, from the other xdist worker and from the tests' subprocesses; the results
# are the same bit for bit, and the suite's training runs took a third of the time with it.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

REPO = Path(__file__).resolve().parents[1]

# Under `pytest -n`, each worker (and the processes its tests start) keeps numba's disk cache in
# a folder of its own, set before numba loads: numba names a cache entry's file from an index it
# reads without a lock, so two processes saving different signatures of one function at the same
# moment can swap their entries (numba/numba#10128), and the workers start together.
if os.environ.get('PYTEST_XDIST_WORKER'):
    os.environ['NUMBA_CACHE_DIR'] = str(REPO / 'build' / 'numba-cache' /
                                        os.environ['PYTEST_XDIST_WORKER'])

import numpy as np
import pytest
from PIL import Image


def smooth_image(seed: int, height: int, width: int) -> np.ndarray:
    """A deterministic photo-like uint8 RGB image (smooth, so JPEG error stays small)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fy, fx, phase = rng.uniform(0.02, 0.15, 2).tolist() + [rng.uniform(0, 6.28)]
        channels.append(127 + 100 * np.sin(fy * y + fx * x + phase))
    return np.clip(np.stack(channels, axis=2), 0, 255).astype(np.uint8)


def save(path: Path, pixels: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)
    return path


@pytest.fixture(scope='session')
def image_tree(tmp_path_factory):
    """root/{train,val}/<class>/... with 48x64 PNG images, a nested folder, a non-ASCII class
    and file name, and a text file that must be ignored. Returns (root, classes, expected) with
    expected[split] = [(relative path, label, pixels)] in ImageFolder order."""
    root = tmp_path_factory.mktemp('tree')
    classes = ['bird', 'cat', 'émigré']
    expected = {'train': [], 'val': []}
    seed = 0
    for split, per_class in (('train', 4), ('val', 2)):
        for label, name in enumerate(classes):
            names = [f'img{i}.png' for i in range(per_class)]
            if split == 'train' and label == 2:
                names[-1] = 'ñandú.png'
            if split == 'train' and label == 0:
                names[-1] = 'sub/deep.png'
            for fname in sorted(names):
                seed += 1
                pixels = smooth_image(seed, 48, 64)
                save(root / split / name / fname, pixels)
                expected[split].append((f'{split}/{name}/{fname}', label, pixels))
    (root / 'train' / 'cat' / 'notes.txt').write_text('not an image')
    for split in expected:  # ImageFolder order: sorted walk, files sorted within each folder
        expected[split].sort(key=lambda item: (item[1], os.path.dirname(item[0]).count('/'),
                                               item[0]))
    return root, classes, expected


def write_tree(image_tree, path, write_mode, **options):
    """Write the train split of `image_tree` to `path` with images stored as `write_mode`."""
    from fkd_ffcv.data.fields import image_fields
    from fkd_ffcv.data.sources import ImageFolderSource
    from fkd_ffcv.data.manifest import Manifest
    from fkd_ffcv.data.writer import write_beton
    root, classes, _ = image_tree
    return write_beton(path, image_fields(write_mode), ImageFolderSource(root, 'train'),
                       manifest=Manifest(classes=classes), progress=False, **options)


@pytest.fixture(scope='session')
def raw_tree_beton(image_tree, tmp_path_factory):
    """(path, write report) of the train split stored raw, by two workers in small chunks."""
    path = tmp_path_factory.mktemp('raw') / 'train.beton'
    return path, write_tree(image_tree, path, 'raw', num_workers=2, chunk_size=3)


@pytest.fixture(scope='session')
def fashion_betons(tmp_path_factory):
    """(train, val) betons of a Fashion-MNIST subset at 32 px: 600 and 300 images, raw."""
    from fkd_ffcv.data.fields import image_fields
    from fkd_ffcv.data.manifest import Manifest
    from fkd_ffcv.data.sources import FashionMNISTSource
    from fkd_ffcv.data.writer import write_beton
    folder = tmp_path_factory.mktemp('fashion')
    paths = []
    for split, n in (('train', 600), ('val', 300)):
        source = FashionMNISTSource(split, 32, subset=n)
        path = folder / f'{split}.beton'
        write_beton(path, image_fields('raw'), source, manifest=Manifest(classes=source.classes),
                    progress=False)
        paths.append(path)
    return tuple(paths)


LABELLED_RECORDS = 6


@pytest.fixture(scope='session')
def labelled_jpeg_beton(image_tree, tmp_path_factory):
    """The image tree's train split stored as JPEG, labelled with LABELLED_RECORDS records per
    image by a random ResNet-18 at 32 px."""
    import torch
    import torchvision
    from fkd_ffcv.labeling.label import LabelingSettings, label_beton
    from fkd_ffcv.labeling.teachers import Teacher
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp('fkd')
    write_tree(image_tree, out / 'images.beton', 'jpg')
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), out / 't.pt')
    teacher = Teacher(f'torchvision:resnet18:{out}/t.pt', input_size=32)
    label_beton(out / 'images.beton', out / 'fkd.beton', teacher,
                LabelingSettings(num_records=LABELLED_RECORDS,
                                 label_type='marginal_smoothing_k2'),
                out / 'work', progress=False)
    return out / 'fkd.beton'


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test. For tests of many small steps: torch's pool (as many
    threads as the last loader had: ffcv sets both) only waits on its second thread there, and
    under `pytest -n 2` that thread waits for a core (one such test: 82 s instead of 13)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def xdist_group(item) -> str:
    """The worker group of a test under `pytest -n` (`--dist loadgroup`): its module, so that a
    module's fixtures are built once; test_training.py is split in two (the tests that read its
    FKD run, and the others), as it alone takes a third of the suite."""
    group = item.path.name
    if group == 'test_training.py' and 'fkd_run' in item.fixturenames:
        group += ':fkd_run'
    return group


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(xdist_group(item)))


# pytest-timeout (pyproject.toml: 120 s) stops a test with a signal, whose handler runs only
# when the main thread is back in Python; a test stuck inside C code (a deadlock, a wait with
# the GIL held) never is. For those, faulthandler's own C thread prints every thread's stack to
# the terminal and ends the process at HARD_LIMIT_S: pytest-xdist then names the test whose
# worker crashed and goes on with a new worker, and CI fails in minutes with the place shown
# instead of running into its time limit.
HARD_LIMIT_S = 300
_TERMINAL = None  # a copy of the terminal's stderr
_HARD_LIMIT = True  # off under --pdb and with pytest-timeout off (--timeout=0)


def pytest_configure(config):
    global _TERMINAL, _HARD_LIMIT
    timeout = config.getoption('timeout', None)
    timeout = config.getini('timeout') if timeout is None else timeout
    _HARD_LIMIT = not config.getoption('usepdb', False) and float(timeout or 0) > 0
    # pytest's capture is suspended while plugins configure (it captures the initial conftests'
    # import and each test): file descriptor 2 is the terminal's stderr here. (Resuming the
    # capture here would hide pytest's own output until the end.)
    _TERMINAL = os.dup(2)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _HARD_LIMIT:
        yield
        return
    faulthandler.dump_traceback_later(HARD_LIMIT_S, exit=True, file=_TERMINAL)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
