"""The loaders' CUDA path, run on the CPU with torch.cuda stubbed (fake_cuda.py): the project's
buffer keeping, pinning, stream and event protocol, and the worker thread's device."""
import os

import pytest
import torch
from ffcv.loader import OrderOption
from ffcv.pipeline import PipelineSpec

from fake_cuda import FakeCuda
from fkd_ffcv.loading.decoders import MultiCropDecoder
from fkd_ffcv.loading.loaders import FKDLoader, PlainLoader, eval_loader

K = 2
DEVICE = 'cuda:1'  # not GPU 0: a worker thread left on GPU 0 shows


def fkd(path, device, images_per_batch=4):
    return FKDLoader(path, batch_size=images_per_batch * K, num_crops=K, resolution=16, num_workers=2,
                     order=OrderOption.SEQUENTIAL, drop_last=False, device=device)


def plain(path, device):
    return PlainLoader(path, batch_size=4, resolution=16, num_workers=2,
                       order=OrderOption.SEQUENTIAL, drop_last=False, device=device)


def evaluation(path, device):
    return eval_loader(path, batch_size=4, resolution=16, ratio=1.0, num_workers=2,
                       device=device)


def passes(loader, n=2):
    return [[[x.clone() for x in batch] for batch in loader] for _ in range(n)]


def ffcv_loader(loader):
    return getattr(loader, 'loader', loader)  # FKDLoader and PlainLoader wrap one


def worker_calls(fake, loader):
    """The calls made by the worker thread of the loader's last pass (not by a thread another
    test left behind)."""
    name = ffcv_loader(loader)._running.name
    return [c for c in fake.calls if c[0] == name]


@pytest.mark.parametrize('make, copied', [(fkd, 3), (plain, 2), (evaluation, 2)])
def test_cuda_loaders_deliver_what_the_cpu_loaders_do(labelled_jpeg_beton, monkeypatch,
                                                       make, copied):
    on_cpu = passes(make(labelled_jpeg_beton, 'cpu'))
    fake = FakeCuda(monkeypatch)
    loader = make(labelled_jpeg_beton, DEVICE)
    on_cuda = passes(loader)  # the buffers' keys once held a list (Squeeze): unhashable
    assert len(on_cuda[0]) == len(on_cpu[0]) > 2
    for a, b in zip(sum(on_cpu, []), sum(on_cuda, [])):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    # Only the buffers that ToDevice copies from are pinned (images, labels, soft labels),
    # not the decode scratch buffers; device buffers are allocated on the loader's device.
    buffers = ffcv_loader(loader)._buffers
    pinned_keys = [key for key in buffers if key[6]]
    assert len(pinned_keys) == copied
    host = {key: value for key, value in buffers.items() if not isinstance(value, list)}
    assert {key for key, value in host.items() if value.ctypes.data in fake.pinned} == \
        set(pinned_keys)
    assert {call[3] for call in fake.calls if call[2] == 'device_alloc'} == {DEVICE}


def test_only_copied_buffers_are_pinned_and_scratch_is_not(labelled_jpeg_beton, monkeypatch):
    fake = FakeCuda(monkeypatch)
    loader = fkd(labelled_jpeg_beton, DEVICE)
    next(iter(loader))
    loader.loader._finish_running()  # no thread left writing into the next test's fakes
    graph = loader.loader.graph
    decoder = next(n.id for n in graph.nodes if isinstance(getattr(n, 'decoder', None),
                                                           MultiCropDecoder))
    buffers = loader.loader._buffers
    scratch = next(v for k, v in buffers.items() if k[1] == decoder and k[2] == 1)
    output = next(v for k, v in buffers.items() if k[1] == decoder and k[2] == 0)
    assert output.ctypes.data in fake.pinned and scratch.ctypes.data not in fake.pinned


def test_worker_waits_for_a_slots_copy_before_rewriting_it(labelled_jpeg_beton, monkeypatch):
    """FFCV's events guard device buffers; the pinned host buffers of a slot may be rewritten
    only after the copy queued from them last time has finished."""
    fake = FakeCuda(monkeypatch)
    loader = fkd(labelled_jpeg_beton, DEVICE, images_per_batch=1)
    slots = loader.loader.batches_ahead + 2
    batches = passes(loader, 1)[0]
    assert len(batches) > slots  # every slot is reused
    worker = worker_calls(fake, loader)
    recorded_on = {c[3]: c[4] for c in worker if c[2] == 'record'}  # event -> stream
    last_copy, synchronised, reuses = {}, set(), 0
    for call in worker:
        if call[2] == 'synchronize':
            synchronised.add(call[3])
        elif call[2] == 'enter_stream':
            stream = call[3]
            if stream in last_copy:
                reuses += 1
                assert last_copy[stream] in synchronised, f"stream {stream} reused unguarded"
            last_copy.pop(stream, None)
        elif call[2] == 'record' and recorded_on[call[3]] != fake.current.id:
            last_copy[call[4]] = call[3]  # the copy-done event of that slot's stream
    assert reuses == len(batches) - slots


def test_worker_thread_runs_on_the_loaders_device(labelled_jpeg_beton, monkeypatch):
    fake = FakeCuda(monkeypatch)
    loader = fkd(labelled_jpeg_beton, DEVICE)
    passes(loader, 2)
    worker = worker_calls(fake, loader)
    assert worker[0][2:] == ('set_device', 1)  # before any stream, event or copy
    assert {c[1] for c in worker} == {1}
    assert {s.device for s in fake.streams[1:]} == {1}  # FFCV's streams: on the loader's GPU
    # a new pass first waits for everything the last one queued on the device
    assert ('MainThread', 0, 'synchronize_device', DEVICE) in fake.calls


def test_a_cpu_loader_in_a_cuda_process_works_on_the_current_gpu(raw_tree_beton, monkeypatch):
    """FFCV makes streams and events for every loader where CUDA is available: a rank's CPU
    loader (no ToDevice) keeps them on the rank's GPU, not GPU 0."""
    path, _ = raw_tree_beton
    fake = FakeCuda(monkeypatch)
    fake.set_device(1)  # as the trainer does for local rank 1
    loader = evaluation(path, 'cpu')
    batches = passes(loader, 1)[0]
    assert len(batches) == 3 and not fake.pinned  # nothing is copied, so nothing is pinned
    worker = worker_calls(fake, loader)
    assert worker[0][2:] == ('set_device', 1) and {c[1] for c in worker} == {1}


def test_pipelines_copying_to_two_gpus_are_refused(raw_tree_beton, monkeypatch):
    from ffcv.fields.basics import IntDecoder
    from ffcv.transforms import Squeeze, ToDevice, ToTensor
    from fkd_ffcv.loading.ffcv_loader import Loader
    FakeCuda(monkeypatch)
    path, _ = raw_tree_beton
    to = [IntDecoder(), ToTensor(), Squeeze(1)]
    with pytest.raises(ValueError, match='several devices'):
        Loader(str(path), batch_size=4, num_workers=1, order=OrderOption.SEQUENTIAL,
               pipelines={'image': None, 'path': None,
                          'label': [*to, ToDevice(torch.device('cuda', 0))],
                          'again': PipelineSpec('label', decoder=IntDecoder(),
                                                transforms=[ToTensor(), Squeeze(1),
                                                            ToDevice(torch.device('cuda', 1))])})


def test_a_last_batch_of_one_keeps_its_batch_dimension(raw_tree_beton):
    path, _ = raw_tree_beton  # 12 images: batches of 11 and 1
    batches = [(im.clone(), lab.clone()) for im, lab in
               eval_loader(path, batch_size=11, resolution=16, ratio=1.0, num_workers=1)]
    assert [tuple(lab.shape) for _, lab in batches] == [(11,), (1,)]


def test_a_pass_left_when_its_thread_has_finished_does_not_hang_the_next(raw_tree_beton):
    """FFCV's thread ends a pass by putting its end mark in the queue with no time limit: a
    pass left after one batch, whose thread then filled the queue and reached the end, once
    hung the next pass's start forever."""
    import threading
    import time
    path, _ = raw_tree_beton  # 12 images: 4 batches of 3
    loader = PlainLoader(path, batch_size=3, resolution=16, num_workers=1,
                         order=OrderOption.SEQUENTIAL)
    running = ffcv_loader(loader)
    first = iter(loader)
    next(first)
    room = running.batches_ahead  # the queue's size
    deadline = time.monotonic() + 30
    while running._running.output_queue.qsize() < room:  # the other 3 batches are in
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.2)  # the thread is now waiting to put the end mark
    again = []
    second = threading.Thread(target=lambda: again.extend(lab.tolist() for _, lab in loader),
                              daemon=True)
    second.start()
    second.join(30)
    assert not second.is_alive(), "the next pass did not start"
    assert len(again) == 4


def test_more_loader_threads_than_numba_may_run_are_capped(raw_tree_beton, capsys):
    import numba
    path, _ = raw_tree_beton
    asked = numba.config.NUMBA_NUM_THREADS + 10  # numba itself would refuse these
    loader = eval_loader(path, batch_size=4, resolution=16, ratio=1.0, num_workers=asked)
    assert len(passes(loader, 1)[0]) == 3
    assert f'note: {asked} loader threads asked for' in capsys.readouterr().err


# Compiling: once per process for the same settings, and FFCV's reader without its type change.

def compile_count(build):
    """(what `build()` returned after one batch, the functions numba compiled for it)."""
    from numba.core import event
    compiled = []

    class Record(event.Listener):
        def on_start(self, e):
            compiled.append(e.data['dispatcher'].py_func.__qualname__)

        def on_end(self, e):
            pass

    listener = Record()
    event.register('numba:compile', listener)
    try:
        loader = build()
        next(iter(loader))
        ffcv_loader(loader)._finish_running()
    finally:
        event.unregister('numba:compile', listener)
    return loader, compiled


def test_a_loader_built_again_with_the_same_settings_compiles_nothing(labelled_jpeg_beton):
    make = lambda seed: FKDLoader(labelled_jpeg_beton, batch_size=4 * K, num_crops=K,
                                  resolution=16, num_workers=2, seed=seed,
                                  order=OrderOption.SEQUENTIAL, drop_last=False)
    _, first = compile_count(lambda: make(1001))  # a seed no other test uses
    _, again = compile_count(lambda: make(1001))
    _, other_seed = compile_count(lambda: make(1002))  # the seed is frozen into the code
    assert first and not again
    assert 'MultiCropDecoder.make_cut.<locals>.cut' in other_seed
    assert not [name for name in other_seed if 'read' in name]  # the reader is shared


def test_compile_once_keys_on_every_captured_value():
    import numpy as np
    from fkd_ffcv.loading.ffcv_loader import compile_once

    def make(scale, table):
        def scaled(x):
            return x * scale + table[0]
        return scaled

    table = np.array([1.0])
    one = compile_once(make(2.0, table))
    assert compile_once(make(2.0, table.copy())) is one  # equal contents: the same code
    assert compile_once(make(3.0, table)) is not one
    other = compile_once(make(2.0, np.array([5.0])))
    assert other is not one and (one(1.0), other(1.0)) == (3.0, 7.0)
    assert compile_once(make(-0.0, table)) is not compile_once(make(0.0, table))  # to the bit
    assert compile_once(make(2.0, table.astype(np.float32))) is not one  # the dtype counts


def _compile_in_a_fork():
    from fkd_ffcv.loading.ffcv_loader import compile_once
    os._exit(0 if compile_once(lambda x: x + 1)(1) == 2 else 1)


def test_a_fork_compiles_while_a_thread_of_its_parent_holds_compile_onces_lock():
    """The writer forks its workers beside loader threads; a child that inherited
    compile_once's lock held by one of them would wait for it forever."""
    import multiprocessing as mp
    import threading
    from fkd_ffcv.loading import ffcv_loader
    taken, release = threading.Event(), threading.Event()

    def compiling():
        with ffcv_loader._compiling:
            taken.set()
            release.wait(60)

    thread = threading.Thread(target=compiling, daemon=True)
    thread.start()
    taken.wait(10)
    try:
        child = mp.get_context('fork').Process(target=_compile_in_a_fork)
        child.start()
        child.join(60)
        if child.exitcode is None:
            child.kill()
        assert child.exitcode == 0
    finally:
        release.set()
        thread.join()


def test_reading_a_beton_leaves_numbas_shared_types_as_they_were(labelled_jpeg_beton):
    """FFCV's own os-cache reader set `mutable = False` on numba's interned uint8[::1] type:
    afterwards a compiled function shared by two pipelines failed inside numba (KeyError)."""
    import numba as nb
    loader = FKDLoader(labelled_jpeg_beton, batch_size=4 * K, num_crops=K, resolution=16,
                       num_workers=2, order=OrderOption.SEQUENTIAL, drop_last=False)
    next(iter(loader))
    loader.loader._finish_running()
    assert nb.uint8[::1].mutable and nb.uint64[::1].mutable
    plain_batches = passes(plain(labelled_jpeg_beton, 'cpu'), 1)  # shares the JPEG reader
    assert plain_batches[0][0][0].shape[0] == 4


def test_cached_numba_functions_call_only_functions_of_their_own_file():
    """numba's disk cache (cache=True) is invalidated by its function's file alone: a cached
    function that called one from another file would keep a stale copy of it after that file
    changed. So every cached function of the package calls only its own file's."""
    import importlib
    import pkgutil
    from types import ModuleType
    from numba.core.dispatcher import Dispatcher
    import fkd_ffcv
    cached = []
    for info in pkgutil.walk_packages(fkd_ffcv.__path__, 'fkd_ffcv.'):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, Dispatcher) and value.__module__ == module.__name__ and \
                    type(value._cache).__name__ != 'NullCache':
                cached.append(value)
    assert len(cached) >= 10
    for function in cached:
        for name in function.py_func.__code__.co_names:
            callee = function.py_func.__globals__.get(name)
            in_package = isinstance(callee, ModuleType) and callee.__name__.startswith('fkd_ffcv')
            assert not in_package, f"{function.py_func.__qualname__} reads the module {name}"
            if isinstance(callee, Dispatcher):
                assert callee.py_func.__module__ == function.py_func.__module__, \
                    f"{function.py_func.__qualname__} calls {callee.py_func.__module__}.{name}"
