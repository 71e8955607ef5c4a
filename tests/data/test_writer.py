"""The beton writer: round trips through FFCV's own loader, bad input, worker faults, atomicity."""
import os
import signal
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from ffcv.fields import BytesField, IntField, JSONField, NDArrayField, TorchTensorField
from ffcv.fields.basics import IntDecoder
from ffcv.fields.rgb_image import IMAGE_MODES, SimpleRGBImageDecoder
from ffcv.loader import Loader, OrderOption

from conftest import REPO, save, smooth_image
from fkd_ffcv.data.beton import Beton
from fkd_ffcv.data.copying import copy_beton
from fkd_ffcv.data.fields import image_fields
from fkd_ffcv.data.sources import ImageFolderSource
from fkd_ffcv.data.manifest import Manifest, manifest_path
from fkd_ffcv.data.safe_write import WriteError
from fkd_ffcv.data.sources import BadSample
from fkd_ffcv.data.writer import auto_page_size, write_beton


def stored_pixels(beton, index):
    """Decode sample `index`'s stored image bytes independently of FFCV's decoders."""
    meta = beton.field_metadata('image')[index]
    data = beton.read(int(meta['data_ptr']))
    if meta['mode'] == IMAGE_MODES['jpg']:
        return cv2.cvtColor(cv2.imdecode(np.array(data), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return np.array(data).reshape(int(meta['height']), int(meta['width']), 3)


def no_partial_files(directory):
    return not [p for p in os.listdir(directory) if '.partial-' in p]


def test_round_trip_through_ffcv_loader_is_exact(raw_tree_beton, image_tree):
    path, report = raw_tree_beton
    _, classes, expected = image_tree
    assert report.num_samples == len(expected['train']) and not report.skipped
    loader = Loader(str(path), batch_size=5, num_workers=2, order=OrderOption.SEQUENTIAL,
                    drop_last=False, pipelines={'image': [SimpleRGBImageDecoder()],
                                                'label': [IntDecoder()], 'path': None})
    images, labels = zip(*[(im.copy(), lab.copy()) for im, lab in loader])
    images, labels = np.concatenate(images), np.concatenate(labels).reshape(-1)
    assert labels.tolist() == [label for _, label, _ in expected['train']]
    for got, (_, _, pixels) in zip(images, expected['train']):
        assert np.array_equal(got, pixels)
    beton = Beton(path)
    assert beton.paths() == [rel for rel, _, _ in expected['train']]
    assert beton.classes == classes == ['bird', 'cat', 'émigré']


def test_jpeg_round_trip_within_tolerance_and_resized(image_tree, tmp_path):
    root, _, expected = image_tree
    save(root.parent / 'wide' / 'train' / 'x' / 'w.png', smooth_image(9, 200, 300))
    path = tmp_path / 'jpg.beton'
    write_beton(path, image_fields('jpg', jpeg_quality=90), ImageFolderSource(root, 'val'),
                progress=False)
    beton = Beton(path)
    for i, (_, _, pixels) in enumerate(expected['val']):
        assert beton.field_metadata('image')[i]['mode'] == IMAGE_MODES['jpg']
        assert np.abs(stored_pixels(beton, i).astype(int) - pixels).mean() < 3
    wide = tmp_path / 'wide.beton'
    write_beton(wide, image_fields('raw', max_resolution=120),
                ImageFolderSource(root.parent / 'wide', 'train'), progress=False)
    meta = Beton(wide).field_metadata('image')[0]
    assert (int(meta['height']), int(meta['width'])) == (80, 120)


def bad_input_tree(root):
    """Good images interleaved with every kind of unusable file, in three classes."""
    good = {}
    for label, name in enumerate(['a', 'b', 'c']):
        for i in range(3):
            rel = f'train/{name}/good{i}.png'
            save(root / rel, smooth_image(10 * label + i, 16, 16))
            good[rel] = label
    bad = root / 'train' / 'b'
    (bad / 'text.jpg').write_bytes(b'plain text, not a JPEG')
    (bad / 'empty.png').write_bytes(b'')
    data = (root / 'train/a/good0.png').read_bytes()
    (bad / 'cut.png').write_bytes(data[:len(data) // 2])
    os.symlink(root / 'missing.png', bad / 'dangling.png')
    os.mkfifo(bad / 'pipe.png')
    return good, {'text.jpg', 'empty.png', 'cut.png', 'dangling.png', 'pipe.png'}


def test_skip_policy_lists_each_bad_file_and_keeps_labels_right(tmp_path):
    good, bad = bad_input_tree(tmp_path / 'tree')
    path = tmp_path / 'out' / 'skip.beton'
    report = write_beton(path, image_fields('raw'), ImageFolderSource(tmp_path / 'tree', 'train'),
                         num_workers=2, chunk_size=2, on_error='skip', progress=False)
    assert report.num_samples == len(good)
    assert sorted(os.path.basename(p) for p, _ in report.skipped) == sorted(bad)
    assert all(why for _, why in report.skipped)
    beton = Beton(path)
    labels = beton.field_metadata('label').tolist()
    assert dict(zip(beton.paths(), labels)) == good  # no shifted labels after the skips
    for i, rel in enumerate(beton.paths()):
        assert np.array_equal(stored_pixels(beton, i),
                              smooth_image(10 * good[rel] + int(rel[-5]), 16, 16))
    assert len(beton.manifest.skipped) == len(bad)


def test_fail_policy_names_the_file_and_leaves_nothing(tmp_path):
    good, _ = bad_input_tree(tmp_path / 'tree')
    out = tmp_path / 'out'
    path = out / 'fail.beton'
    out.mkdir()
    path.write_bytes(b'previous version')
    started = time.monotonic()
    with pytest.raises(WriteError, match=r"train/b/\w+\.(jpg|png): .*; the write stops at the "
                                         r"first unusable input it meets: on_error='skip' "
                                         r"\(--write.on_error=skip\) writes the others and "
                                         r"lists every unusable one$"):
        write_beton(path, image_fields('raw'), ImageFolderSource(tmp_path / 'tree', 'train'),
                    num_workers=2, chunk_size=1, progress=False)
    assert time.monotonic() - started < 30
    assert path.read_bytes() == b'previous version'
    assert no_partial_files(out) and not manifest_path(path).exists()


class FaultySource:
    """Ten tiny samples; sample `at` misbehaves as `how` says."""

    def __init__(self, how, at=5, n=10):
        self.how, self.at, self.n = how, at, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.at:
            if self.how == 'kill':
                os.kill(os.getpid(), signal.SIGKILL)
            if self.how == 'bug':
                raise ZeroDivisionError('a bug in the source')
            if self.how == 'short':
                return (np.zeros((2, 2, 3), np.uint8),)
            if self.how == 'bad':
                raise BadSample('unusable')
        return np.full((2, 2, 3), i, np.uint8), i, np.frombuffer(b'p%d' % i, np.uint8)

    def describe(self, i):
        return f'item-{i}'


@pytest.mark.parametrize('how, message', [
    ('kill', r'worker \d died \(exit code -9\) while writing item-5'),
    ('bug', r'item-5: .*ZeroDivisionError: a bug in the source'),
    ('short', r'item-5: the source gave 1 values; a tuple of 3 values'),
])
def test_worker_faults_stop_the_write_quickly(tmp_path, how, message):
    started = time.monotonic()
    with pytest.raises(WriteError, match=message):
        # on_error='skip' covers unusable input only: faults still stop the write
        write_beton(tmp_path / 'x.beton', image_fields('raw'), FaultySource(how),
                    num_workers=2, chunk_size=2, on_error='skip', progress=False)
    assert time.monotonic() - started < 30
    assert no_partial_files(tmp_path) and not (tmp_path / 'x.beton').exists()


def test_every_sample_skipped_is_an_error(tmp_path):
    with pytest.raises(WriteError, match='every one of the 1 samples was skipped'):
        write_beton(tmp_path / 'x.beton', image_fields('raw'), FaultySource('bad', at=0, n=1),
                    on_error='skip', progress=False)
    with pytest.raises(WriteError, match='no samples'):
        write_beton(tmp_path / 'x.beton', image_fields('raw'), [], progress=False)


def test_value_checks(tmp_path):
    class Arrays:
        def __init__(self, value):
            self.value = value

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return (self.value,)

    field = {'probs': NDArrayField(np.dtype('float32'), (4,))}
    for wrong in (np.zeros(4, np.float64), np.zeros(4, np.int32), np.zeros(5, np.float32)):
        with pytest.raises(WriteError, match="field 'probs' expects float32"):
            write_beton(tmp_path / 'x.beton', field, Arrays(wrong), progress=False)
    with pytest.raises(WriteError, match="expects an int"):
        write_beton(tmp_path / 'x.beton', {'label': IntField()}, Arrays(1.5), progress=False)
    with pytest.raises(ValueError, match='16 characters'):
        write_beton(tmp_path / 'x.beton', {'a_much_too_long_name': IntField()}, Arrays(1))
    with pytest.raises(ValueError, match='on_error'):
        write_beton(tmp_path / 'x.beton', {'label': IntField()}, Arrays(1), on_error='ignore')


def test_sample_larger_than_a_page_is_explained(tmp_path):
    class Huge:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return np.zeros((1024, 1024, 3), np.uint8), 0, np.frombuffer(b'h', np.uint8)

    with pytest.raises(WriteError, match='more than the page size'):
        write_beton(tmp_path / 'x.beton', image_fields('raw'), Huge(), page_size=2 ** 21,
                    progress=False)


def test_many_pages_and_workers_round_trip(tmp_path):
    """Samples crossing page boundaries (FFCV's allocator retries them on a fresh page)."""
    class Blocks:
        def __len__(self):
            return 300

        def __getitem__(self, i):
            return (np.full((100, 100, 3), i % 251, np.uint8), i,
                    np.frombuffer(b'block/%d' % i, np.uint8))

    path = tmp_path / 'pages.beton'
    write_beton(path, image_fields('raw'), Blocks(), page_size=2 ** 21, num_workers=2,
                chunk_size=7, progress=False)
    beton = Beton(path)
    assert beton.field_metadata('label').tolist() == list(range(300))
    assert beton.paths() == [f'block/{i}' for i in range(300)]
    for i in (0, 69, 70, 150, 299):
        assert (stored_pixels(beton, i) == i % 251).all()


def test_stale_manifest_is_detected(raw_tree_beton, tmp_path):
    path, _ = raw_tree_beton
    other = tmp_path / 'other.beton'
    write_beton(other, image_fields('raw'), FaultySource(None), progress=False,
                manifest=Manifest(classes=['x']))
    manifest_path(other).write_text(manifest_path(path).read_text())
    with pytest.raises(ValueError, match='fingerprints differ'):
        Beton(other).manifest


def test_partial_files_of_killed_writers_are_cleaned_up(tmp_path):
    host = socket.gethostname()
    dead = tmp_path / f'.x.beton.partial-{host}-999999999'
    dead.write_bytes(b'left by a writer killed with SIGKILL')
    (tmp_path / f'.x.beton.partial-{host}-999999999.json').write_text('{}')
    alive = tmp_path / f'.x.beton.partial-{host}-{os.getppid()}'  # running: not touched
    alive.write_bytes(b'another writer at work')
    elsewhere = tmp_path / '.x.beton.partial-otherhost-999999999'  # maybe alive elsewhere
    elsewhere.write_bytes(b'a writer on another machine sharing the folder')
    write_beton(tmp_path / 'x.beton', image_fields('raw'), FaultySource(None), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [alive.name, elsewhere.name, 'x.beton', 'x.beton.json'])


class SlowSource(FaultySource):
    """Sample 0 is unusable; every other sample takes 0.3 s."""

    def __init__(self):
        super().__init__('bad', at=0, n=60)

    def __getitem__(self, i):
        if i:
            time.sleep(0.3)
        return super().__getitem__(i)


def test_fail_fast_does_not_wait_for_the_other_workers(tmp_path):
    started = time.monotonic()
    with pytest.raises(WriteError, match='item-0: unusable'):
        write_beton(tmp_path / 'x.beton', image_fields('raw'), SlowSource(), num_workers=2,
                    chunk_size=30, progress=False)
    assert time.monotonic() - started < 5  # the other worker's chunk takes 9 s


class CompilesInTheWorker:
    """A source whose first sample in each worker compiles a numba function the parent never
    called (a dispatcher of its own, so no earlier test can have compiled it there)."""

    def __init__(self, source):
        import numba
        self.source, self.fresh = source, numba.njit(lambda x: x.sum())

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        self.fresh(np.zeros(1))
        return self.source[i]


@pytest.mark.timeout(60)  # before the fix: the workers waited forever, and so did the write
def test_workers_forked_while_another_thread_compiles(image_tree, tmp_path):
    """A thread compiling with numba holds numba's compiler lock; a worker forked then got the
    lock held by a thread it does not have and waited for it at its first compile: a loader's
    thread from an earlier test once could hang a write so. The writer now forks while
    holding the lock itself."""
    import threading
    from numba.core.compiler_lock import global_compiler_lock
    root, classes, expected = image_tree
    taken, release = threading.Event(), threading.Event()

    def compiling():
        with global_compiler_lock:
            taken.set()
            release.wait(30)

    thread = threading.Thread(target=compiling, daemon=True)
    thread.start()
    taken.wait(10)
    threading.Timer(1.0, release.set).start()  # the "compile" ends while the writer waits
    report = write_beton(tmp_path / 'x.beton', image_fields('raw'),
                         CompilesInTheWorker(ImageFolderSource(root, 'train')),
                         manifest=Manifest(classes=classes), num_workers=2, chunk_size=3,
                         progress=False)
    assert report.num_samples == len(expected['train'])
    for index, (_, _, pixels) in enumerate(expected['train']):
        assert np.array_equal(stored_pixels(Beton(report.path), index), pixels)


KILL_SCRIPT = """
import sys, time
sys.path[:0] = [{here!r}, {tests!r}, {repo!r}]  # test_writer, conftest, the package
from test_writer import SlowSource
from fkd_ffcv.data.fields import image_fields
from fkd_ffcv.data.writer import write_beton
write_beton({out!r}, image_fields('raw'), SlowSource(), num_workers=2, chunk_size=1,
            on_error='skip', progress=False)
"""


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGKILL])
def test_killing_the_writer_stops_its_workers(tmp_path, sig):
    import psutil
    script = KILL_SCRIPT.format(here=os.path.dirname(__file__), tests=str(REPO / 'tests'),
                                repo=str(REPO), out=str(tmp_path / 'x.beton'))
    proc = subprocess.Popen([sys.executable, '-c', script], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    workers = []
    while len(workers) < 2 and time.monotonic() < deadline:  # both writer workers at work
        time.sleep(0.2)
        workers = psutil.Process(proc.pid).children()
    assert len(workers) == 2
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    if sig == signal.SIGTERM:  # a polite stop cleans up after itself
        assert b'stopped by signal SIGTERM' in proc.stderr.read()
        assert not list(tmp_path.iterdir())


def test_limits_of_the_format(tmp_path):
    with pytest.raises(ValueError, match='page_size must be a power of two'):
        write_beton(tmp_path / 'x.beton', image_fields('raw'), FaultySource(None),
                    page_size=2 ** 31)

    class TwoHalves:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            half = np.zeros(int(0.6 * 2 ** 21), np.uint8)
            return half, half

    with pytest.raises(WriteError, match='together need more than one page'):
        write_beton(tmp_path / 'x.beton', {'a': BytesField(), 'b': BytesField()}, TwoHalves(),
                    page_size=2 ** 21, progress=False)


def test_json_and_tensor_fields_are_writable(tmp_path):
    class Mixed:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {'i': i, 'name': f'n{i}'}, torch.full((2, 2), float(i))

    path = tmp_path / 'mixed.beton'
    write_beton(path, {'meta': JSONField(), 't': TorchTensorField(torch.float32, (2, 2))},
                Mixed(), progress=False)
    beton = Beton(path)
    assert beton.array('t', 2).tolist() == [[2.0, 2.0], [2.0, 2.0]]
    assert JSONField.unpack(np.array(beton.read(int(beton.field_metadata('meta')[1]['ptr'])))
                            ) == {'i': 1, 'name': 'n1'}


def test_small_data_sets_get_small_pages(tmp_path):
    """48 images of 128 px took 16 MiB in 8 MiB pages (a header page and a data page); the
    page is now the smallest that holds a sample's bound, FFCV's 8 MiB for large sets."""
    class Photos:
        def __len__(self):
            return 48

        def __getitem__(self, i):
            return smooth_image(i, 128, 128), i % 4, np.frombuffer(b'p%d' % i, np.uint8)

    path = tmp_path / 'small.beton'
    write_beton(path, image_fields('smart', max_resolution=128), Photos(), progress=False)
    beton = Beton(path)
    assert beton.page_size == 2 ** 21  # FFCV's minimum
    assert path.stat().st_size < 3 * 2 ** 21 + 4096  # a header page, two of data, the table
    copy_beton(path, tmp_path / 'copy.beton', progress=False)
    assert Beton(tmp_path / 'copy.beton').page_size == 2 ** 21
    assert auto_page_size(None, 10) == 2 ** 23  # no bound: FFCV's default
    assert auto_page_size(3 * 2 ** 20, 10) == 2 ** 22  # the smallest that holds a sample
    assert auto_page_size(10 ** 6, 10 ** 6) == 2 ** 23  # a large data set


def test_a_copy_records_its_origin_as_an_absolute_path(raw_tree_beton, tmp_path, monkeypatch):
    """derived_from.beton given relative is stored absolute: another working directory (or
    fkd-inspect run elsewhere) still finds the beton the copy was made from."""
    src = raw_tree_beton[0]
    monkeypatch.chdir(src.parent)
    copy_beton(src.name, tmp_path / 'copy.beton', progress=False)
    assert Beton(tmp_path / 'copy.beton').manifest.derived_from.beton == str(src)
