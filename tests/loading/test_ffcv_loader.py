"""The loaders' CUDA path, run on the CPU with torch.cuda stubbed (fake_cuda.py): the project's
buffer keeping, pinning, stream and event protocol, and the worker thread's device."""
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


def test_more_loader_threads_than_numba_may_run_are_capped(raw_tree_beton, capsys):
    import numba
    path, _ = raw_tree_beton
    asked = numba.config.NUMBA_NUM_THREADS + 10  # numba itself would refuse these
    loader = eval_loader(path, batch_size=4, resolution=16, ratio=1.0, num_workers=asked)
    assert len(passes(loader, 1)[0]) == 3
    assert f'note: {asked} loader threads asked for' in capsys.readouterr().err
