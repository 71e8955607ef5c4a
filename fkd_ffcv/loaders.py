"""FFCV loaders that turn a beton into batches of channels-last uint8 images and labels."""
from __future__ import annotations

import os
import sys
from queue import Full

import ffcv.loader
import numpy as np
import torch
from ffcv.fields.basics import IntDecoder
from ffcv.fields.rgb_image import CenterCropRGBImageDecoder
from ffcv.loader import OrderOption
from ffcv.loader.epoch_iterator import EpochIterator
from ffcv.transforms import Squeeze, ToTensor, ToTorchImage


def _drop_numba_finalizer_noise(unraisable, previous=sys.unraisablehook):
    """When a compiled FFCV pipeline is garbage-collected, numba's dispatcher finalizer raises
    KeyError and Python prints 'Exception ignored' tracebacks (harmless: the memory is freed
    anyway). A process that builds several loaders (trainer runs, benchmarks, tests) would
    print one per collected pipeline; drop exactly those, pass everything else on."""
    tb = unraisable.exc_traceback
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if (isinstance(unraisable.exc_value, KeyError) and tb is not None
            and tb.tb_frame.f_code.co_name == 'finalizer'
            and tb.tb_frame.f_code.co_filename.endswith(os.path.join('numba', 'core',
                                                                     'dispatcher.py'))):
        return
    previous(unraisable)


sys.unraisablehook = _drop_numba_finalizer_noise


class LoaderError(RuntimeError):
    """A loader's worker thread failed; the cause is chained."""


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class _CheckedEpochIterator(EpochIterator):
    """FFCV's epoch iterator, but an exception in its thread reaches the consumer.

    FFCV's thread ends silently on any error but StopIteration (a pipeline that fails to
    compile, say: numba cannot compile float16 arrays), and the consumer then waits forever on
    its queue."""

    def run(self):
        try:
            super().run()
        except BaseException as e:  # the consumer re-raises it
            while not self.terminate_event.is_set():
                try:
                    self.output_queue.put(_Failure(e), timeout=0.5)
                    return
                except Full:
                    pass

    def __next__(self):
        result = self.output_queue.get()
        if isinstance(result, _Failure):
            self.close()
            raise LoaderError(f"{self.loader.fname}: the loader's thread failed: "
                              f"{type(result.error).__name__}: {result.error}") from result.error
        if result is None:
            self.close()
            raise StopIteration()
        slot, batch = result
        if torch.cuda.is_available():
            self.current_stream.wait_stream(self.cuda_streams[slot])
        return batch


class Loader(ffcv.loader.Loader):
    """`ffcv.loader.Loader` whose iteration raises LoaderError instead of hanging when its
    worker thread fails, and which keeps its buffers from one pass to the next.

    FFCV allocates every operation's memory anew for each pass (batch slots of decoded
    images, decode buffers, device copies), so each pass first pays page faults (or pinning,
    with CUDA) on hundreds of megabytes. Here a buffer is reused while its request is
    unchanged; a changed request (a new output size, the decoders' pass tag) gets a new one.
    As within a pass, a batch is only valid until the loader has produced `batches_ahead + 1`
    more: starting a pass finishes the previous one (its thread is stopped and joined, and
    with CUDA the device is synchronised) before its buffers are written again."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._buffers = {}
        self._running = None
        self.graph.allocate_memory = self._allocate_memory

    def __iter__(self):
        self._finish_running()
        ffcv.loader.loader.Compiler.set_num_threads(self.num_workers)
        order = self.next_traversal_order()
        self.next_epoch += 1
        if self.code is None or self.recompile:
            self.generate_code()
        self._running = _CheckedEpochIterator(self, order[:len(self) * self.batch_size])
        return self._running

    def _finish_running(self):
        if self._running is not None:
            self._running.close()
            self._running.join()
            self._running = None
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def _allocate_memory(self, batch_size, batches_ahead):
        """Graph.allocate_memory, reusing the previous pass's buffer for an unchanged request."""
        from ffcv.pipeline.allocation_query import AllocationQuery, allocate_query
        requirements, _ = self.graph.collect_requirements()
        previous, self._buffers = self._buffers, {}

        def buffer(key, query):
            key = (*key, query, batch_size, batches_ahead)
            found = previous.get(key)
            self._buffers[key] = (allocate_query(query, batch_size, batches_ahead)
                                  if found is None else found)
            return self._buffers[key]

        memory = {}
        for kind, queries in requirements.items():
            memory[kind] = {}
            for node, query in queries.items():
                if isinstance(query, AllocationQuery):
                    memory[kind][node] = buffer((kind, node), query)
                elif query is not None:
                    memory[kind][node] = tuple(buffer((kind, node, position), q)
                                               for position, q in enumerate(query))
                else:
                    memory[kind][node] = None
        return memory

from .beton import Beton
from .fields import IMAGE_FIELD, LABEL_FIELD


def _to_device(device) -> list:
    """FFCV's ToDevice for CUDA (copies on the loader's own stream from pinned buffers, in step
    with FFCV's buffer reuse), nothing for the CPU."""
    from ffcv.transforms import ToDevice
    device = torch.device(device)
    return [ToDevice(device, non_blocking=True)] if device.type == 'cuda' else []


def only(path, pipelines: dict) -> dict:
    """`pipelines`, plus None for every other field of the beton (FFCV would decode those with
    their default pipelines)."""
    return {**{name: None for name in Beton(path).field_names}, **pipelines}


def eval_loader(path, batch_size: int = 256, resolution: int = 224, ratio: float = 224 / 256,
                num_workers: int = -1, device: str = 'cpu', rank: int = 0,
                world_size: int = 1) -> Loader:
    """Every sample once, in order: centre crop of side `ratio` x the shorter side, resized to
    `resolution`, as (N, 3, H, W) channels-last uint8, and int64 labels.

    With world_size > 1, rank r reads samples r, r + world_size, ...: together the ranks read
    each sample exactly once (FFCV's distributed mode pads the last batch with repeats)."""
    if num_workers < 1:
        num_workers = len(os.sched_getaffinity(0))
    device = torch.device(device)
    image_pipeline = [CenterCropRGBImageDecoder((resolution, resolution), ratio), ToTensor(),
                      *_to_device(device), ToTorchImage(channels_last=True)]
    label_pipeline = [IntDecoder(), ToTensor(), Squeeze(), *_to_device(device)]
    pipelines = only(path, {IMAGE_FIELD: image_pipeline, LABEL_FIELD: label_pipeline})
    indices = np.arange(rank, len(Beton(path)), world_size) if world_size > 1 else None
    return Loader(str(path), batch_size=batch_size, num_workers=num_workers,
                  order=OrderOption.SEQUENTIAL, drop_last=False, pipelines=pipelines,
                  indices=indices)


class _PassLoader:
    """An FFCV loader whose decoders learn the pass number before each pass (decoders.py)."""

    def __init__(self, loader: Loader, decoders):
        self.loader, self.decoders, self.passes = loader, decoders, 0

    def __len__(self):
        return len(self.loader)

    def start_at(self, pass_index: int) -> None:
        """Make the next iteration pass `pass_index` (its order, records and crops), as an
        uninterrupted run would have it: how a resumed run continues."""
        self.passes = pass_index
        self.loader.next_epoch = pass_index

    def _next_pass(self):
        for decoder in self.decoders:
            decoder.pass_index = self.passes
        self.passes += 1
        return self.loader


class FKDLoader(_PassLoader):
    """Batches of B*K crops with their soft labels: each of B images is decoded once and its K
    records for the current pass are replayed (see decoders.py).

    Iterating yields (images uint8 (B*K, 3, S, S) channels-last, classes int64 (B*K, k),
    probabilities float32 (B*K, k), hard labels int64 (B*K,)) on `device`; crops of one image
    are adjacent. The probabilities are decoded from their stored codes on `device`, batched,
    by soft_labels.decode_probs. Each iteration is one pass; `set_resolution` before a pass
    changes S without recompiling.
    """

    def __init__(self, path, batch_size: int, num_crops: int, resolution: int = 224,
                 seed: int = 0, num_workers: int = -1, order=OrderOption.RANDOM,
                 distributed: bool = False, drop_last: bool = True, device='cpu'):
        from ffcv.pipeline import PipelineSpec
        from .decoders import MultiCropDecoder, RecordLabelDecoder
        from .fields import CLASSES_FIELD
        if batch_size % num_crops:
            raise ValueError(f"batch_size counts crops: {batch_size} is not a multiple of "
                             f"num_crops {num_crops}")
        beton = Beton(path)
        self.num_crops, self.device = num_crops, torch.device(device)
        self.images = MultiCropDecoder(beton, num_crops, resolution, seed)
        labels = RecordLabelDecoder(beton, num_crops, seed)
        to_device = _to_device(self.device)
        pipelines = only(path, {
            IMAGE_FIELD: PipelineSpec(IMAGE_FIELD, decoder=self.images,
                                      transforms=[ToTensor(), *to_device]),
            LABEL_FIELD: [IntDecoder(), ToTensor(), Squeeze(), *to_device],
            'soft_labels': PipelineSpec(CLASSES_FIELD, decoder=labels,
                                        transforms=[ToTensor(), *to_device]),
        })
        super().__init__(Loader(str(path), batch_size=batch_size // num_crops,
                                num_workers=num_workers, order=order, seed=seed,
                                distributed=distributed, drop_last=drop_last,
                                pipelines=pipelines), [self.images, labels])

    def set_resolution(self, resolution: int) -> None:
        self.images.output_size = resolution

    def __iter__(self):
        from .soft_labels import FLAG_P1_STORED, decode_probs
        k = self.num_crops
        for images, hard, stored in self._next_pass():  # on the device already (ToDevice)
            b, _, s = images.shape[:3]
            images = images.reshape(b * k, s, s, 3).permute(0, 3, 1, 2)
            stored = stored.reshape(b * k, -1)
            top = (stored.shape[1] - 1) // 2
            codes = stored[:, top:2 * top].to(torch.uint8)
            probs = decode_probs(codes, (stored[:, -1] & FLAG_P1_STORED) != 0)
            yield images, stored[:, :top].long(), probs, hard.long().repeat_interleave(k)


class PlainLoader(_PassLoader):
    """Hard-label training batches: a seeded RandomResizedCrop and flip per image and pass,
    (images uint8 (B, 3, S, S) channels-last, labels int64 (B,)) on `device`; reproducible
    from `seed`."""

    def __init__(self, path, batch_size: int, resolution: int = 224, seed: int = 0,
                 num_workers: int = -1, order=OrderOption.RANDOM, distributed: bool = False,
                 drop_last: bool = True, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 device='cpu'):
        from ffcv.pipeline import PipelineSpec
        from .decoders import SeededRandomResizedCropDecoder
        self.images = SeededRandomResizedCropDecoder(resolution, seed, scale, ratio)
        to_device = _to_device(device)
        pipelines = only(path, {
            IMAGE_FIELD: PipelineSpec(IMAGE_FIELD, decoder=self.images,
                                      transforms=[ToTensor(), *to_device,
                                                  ToTorchImage(channels_last=True)]),
            LABEL_FIELD: [IntDecoder(), ToTensor(), Squeeze(), *to_device],
        })
        super().__init__(Loader(str(path), batch_size=batch_size, num_workers=num_workers,
                                order=order, seed=seed, distributed=distributed,
                                drop_last=drop_last, pipelines=pipelines), [self.images])

    def set_resolution(self, resolution: int) -> None:
        self.images.output_size = resolution

    def __iter__(self):
        for images, labels in self._next_pass():
            yield images, labels.long()
