"""FFCV's `Loader`, adapted: errors that reach the consumer, buffers kept from pass to pass, a
CUDA path that is safe with a GPU running behind the host, and the first epoch of each pass
handed to compiled decoders without recompiling. Every adaptation of FFCV's internals is here.

Written against ffcv 1.0.x: it overrides `EpochIterator.run`/`run_pipeline` and replaces
`Graph.allocate_memory`, internals that another FFCV release may change, so importing this
module with another version fails at once rather than in the middle of a run.

What FFCV does and this module changes (each item is tested on the CPU with torch.cuda stubbed,
tests/loading/test_ffcv_loader.py):
- A failing worker thread ends silently and the consumer waits forever: here its exception is
  raised in the consumer as LoaderError.
- Every pass allocates every buffer anew (page faults, or pinning with CUDA, on hundreds of MB
  per pass): here a buffer is reused while its request is unchanged.
- With CUDA, every host buffer is pinned, the full-size decode scratch buffers included: here
  only the buffers that `ToDevice` copies from are.
- The worker thread runs on GPU 0 whatever the loader's device (a CUDA context on GPU 0 for
  every rank): here it runs on the device it copies to.
- FFCV's CUDA events keep a slot's *device* buffers from being overwritten while the model still
  reads them, but nothing keeps the worker from rewriting a slot's pinned *host* buffers while
  the asynchronous copy out of them is still queued (the GPU may run many steps behind a host
  that never synchronises). Here the worker waits for the slot's previous copy to finish first.
- Every loader compiles its decoders anew (1-2 s each on 2 cores), even when an identical
  loader was built before in the process (the trainer's evaluation loaders, a run resumed in
  the same process, the tests). Here a function is compiled once per process for the values
  it captures (`compile_once`, which replaces `Compiler.compile`).
- FFCV's os-cache reader marks numba's shared `uint8[::1]` type read-only (it mutates an
  interned type), after which a compiled function called from two pipelines fails inside
  numba with a KeyError on its argument types. Here the reader is compiled for the types it
  is called with and no numba type is changed (`_os_cache_reader`).
- A pass left before its end can hang the next one: FFCV's thread ends a pass by putting its
  end mark in the batch queue with no time limit, so when the consumer has stopped reading
  and the queue is full, the thread waits forever, and so does the join that starts the next
  pass. Here the end mark stops waiting once the pass is stopped (`_BatchQueue`).
- Values a compiled pipeline captures are frozen when FFCV compiles it, once; but FFCV declares
  every operation's memory anew at the start of each pass and hands the buffers to the
  compiled code. So the decoders read their output side from their output buffer's shape, and
  the pass's first epoch from the shape of a small tag buffer (`first_epoch_tag`,
  `first_epoch_of`).
"""
from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections import OrderedDict
from contextlib import nullcontext
from importlib.metadata import version
from queue import Full, Queue
from typing import Optional

import ffcv.loader
import numba as nb
import numpy as np
import torch
from ffcv.loader import epoch_iterator
from ffcv.memory_managers.os_cache import OSCacheManager
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.graph import TransformNode
from ffcv.transforms import ToDevice

from fkd_ffcv.numba_cache import on_disk

FFCV_WRITTEN_FOR = '1.0.'
if not version('ffcv').startswith(FFCV_WRITTEN_FOR):
    raise ImportError(f"fkd_ffcv adapts the internals of ffcv {FFCV_WRITTEN_FOR}x (its epoch "
                      f"iterator and buffer allocation); ffcv {version('ffcv')} is installed. "
                      f"Install ffcv==1.0.2 (constraints.txt).")


_NOTED = set()  # (threads asked for, cores there are) already said

COMPILED_KEPT = 64  # compiled functions kept per process, the least recently used dropped
_compiled = OrderedDict()  # key -> (compiled function, the objects its key names by id)
_compile = Compiler.compile
_compiling = threading.Lock()


def _new_compiling_lock():
    """A forked child (the writer's workers) starts with a free lock: the thread that may have
    held it in the parent does not exist there."""
    global _compiling
    _compiling = threading.Lock()


os.register_at_fork(after_in_child=_new_compiling_lock)


def _captured_key(value, held: list):
    """A hashable stand-in for a value a compiled function captures (numba freezes it into the
    code): numbers, strings, tuples and arrays by type and content (floats to the bit, so that
    -0.0 is not 0.0); anything else (other compiled functions, ctypes functions, modules) by
    identity, kept alive in `held` so that no new object can take its id while the key is in
    use. An array is read when the function is compiled for its first call: the decoders
    capture arrays that nothing writes afterwards."""
    kind = type(value)
    if isinstance(value, float):
        return kind, value.hex()
    if isinstance(value, np.generic):
        return kind, value.dtype, value.tobytes()
    if value is None or isinstance(value, (bool, int, complex, str, bytes)):
        return kind, value
    if isinstance(value, tuple):  # namedtuples keep their type
        return (kind,) + tuple(_captured_key(item, held) for item in value)
    if isinstance(value, np.ndarray):
        return (kind, value.dtype, value.shape,
                hashlib.sha1(np.ascontiguousarray(value).view(np.uint8)).hexdigest())
    held.append(value)
    return 'id', id(value)


def _global_names(code) -> set:
    """The global names a code object and the code nested in it (comprehensions, inner
    functions) may read."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, 'co_names'):
            names |= _global_names(const)
    return names


def compile_once(code, signature=None):
    """`Compiler.compile(code, signature)`, returning the function compiled before for the same
    code, options and captured values (closure cells, the globals it names, defaults), so that
    a loader built again with the same settings compiles nothing. FFCV and the decoders go
    through it (it replaces `Compiler.compile`)."""
    if not Compiler.is_enabled or not hasattr(code, '__code__'):
        return _compile(code, signature)
    held = [code]
    try:
        cells = tuple(_captured_key(cell.cell_contents, held) for cell in code.__closure__ or ())
    except ValueError:  # a cell not yet filled
        return _compile(code, signature)
    key = (code.__code__, signature, getattr(code, 'is_parallel', False) and
           Compiler.num_threads > 1, cells, _captured_key(code.__defaults__, held),
           tuple((name, _captured_key(code.__globals__[name], held))
                 for name in sorted(_global_names(code.__code__)) if name in code.__globals__))
    with _compiling:  # labelling builds its resize in a worker thread
        if key not in _compiled:
            _compiled[key] = _compile(code, signature), held
            if len(_compiled) > COMPILED_KEPT:
                _compiled.popitem(last=False)
        _compiled.move_to_end(key)
        return _compiled[key][0]


Compiler.compile = staticmethod(compile_once)


@nb.njit(cache=on_disk(), fastmath=True, nogil=True, error_model='numpy')
def _read_mapped(address, state):
    """A sample's bytes of a memory-mapped beton, given its file offset and the os cache's
    state (the map, the offsets of the stored blobs and their sizes)."""
    data, offsets, sizes = state
    return data[address:address + sizes[np.searchsorted(offsets, address)]]


def _os_cache_reader(manager):
    """FFCV's OSCacheManager.compile_reader, without its change to numba's shared uint8 type:
    one reader for every beton (it reads only its arguments), typed by what it is called with
    (the map is read-only) and kept in numba's cache on disk."""
    return _read_mapped


OSCacheManager.compile_reader = _os_cache_reader


class LoaderError(RuntimeError):
    """A loader's worker thread failed; the cause is chained."""


class _BatchQueue(Queue):
    """FFCV's batch queue, whose end mark (None, put with no time limit) stops waiting for room
    once the pass is stopped: a consumer that left the pass with the queue full would
    otherwise leave the thread, and the join that starts the next pass, waiting forever."""

    def __init__(self, maxsize: int, stopped):
        super().__init__(maxsize)
        self.stopped = stopped

    def put(self, item, block=True, timeout=None):
        if item is not None or not block or timeout is not None:
            return super().put(item, block, timeout)
        while not self.stopped.is_set():
            try:
                return super().put(item, timeout=0.5)
            except Full:
                pass


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def first_epoch_tag(first_epoch: int) -> AllocationQuery:
    """The tag buffer whose shape, (1 + e // 256, 1 + e % 256) per sample, carries the
    pass's first epoch e to the compiled decoders."""
    return AllocationQuery((1 + first_epoch // 256, 1 + first_epoch % 256), np.dtype('u1'))


@nb.njit(cache=on_disk())
def first_epoch_of(tag):
    """The pass's first epoch carried by a batch of tag buffers (see first_epoch_tag)."""
    return (tag.shape[1] - 1) * 256 + (tag.shape[2] - 1)


def _device_context(device: Optional[torch.device]):
    return torch.cuda.device(device) if device is not None else nullcontext()


class _EpochIterator(epoch_iterator.EpochIterator):
    """One pass of a `Loader` (see the module docstring for what differs from FFCV's)."""

    def __init__(self, loader: 'Loader', order):
        # Set before FFCV's constructor, which starts the thread.
        self.copied = [None] * (loader.batches_ahead + 2)  # per slot: its last copy's event
        self.thread_device = loader.copy_device
        if self.thread_device is None and epoch_iterator.IS_CUDA:
            self.thread_device = torch.device('cuda', torch.cuda.current_device())
        # FFCV makes its streams on the current device: make them on the loader's.
        with _device_context(self.thread_device):
            super().__init__(loader, order)

    def run(self):
        try:
            if self.thread_device is not None:
                torch.cuda.set_device(self.thread_device)  # a new thread starts on GPU 0
            super().run()
        except BaseException as e:  # the consumer re-raises it
            while not self.terminate_event.is_set():
                try:
                    self.output_queue.put(_Failure(e), timeout=0.5)
                    return
                except Full:
                    pass

    def run_pipeline(self, b_ix, batch_indices, batch_slot, cuda_event):
        if self.copied[batch_slot] is not None:
            self.copied[batch_slot].synchronize()  # its pinned buffers are read no more
        result = super().run_pipeline(b_ix, batch_indices, batch_slot, cuda_event)
        if self.loader.copy_device is not None:
            done = torch.cuda.Event()
            done.record(self.cuda_streams[batch_slot])  # after the copies just queued there
            self.copied[batch_slot] = done
        return result

    def start(self):
        # FFCV's constructor calls this last, its queue made: swap in one whose end mark gives
        # up once the pass is stopped.
        self.output_queue = _BatchQueue(self.output_queue.maxsize, self.terminate_event)
        super().start()

    def stop(self):
        """Stop the thread and wait for it (within about half a second and the batch it is
        decoding: its next put into the full queue sees the stop)."""
        self.close()
        self.join()

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
        if self.cuda_streams[slot] is not None:
            self.current_stream.wait_stream(self.cuda_streams[slot])
        return batch


def copy_device(graph) -> Optional[torch.device]:
    """The CUDA device that the pipelines' ToDevice steps copy to, or None."""
    devices = {torch.device(node.operation.device) for node in graph.nodes
               if isinstance(node, TransformNode) and isinstance(node.operation, ToDevice)}
    devices = {torch.device('cuda', torch.cuda.current_device()) if d.index is None else d
               for d in devices if d.type == 'cuda'}
    if len(devices) > 1:
        raise ValueError(f"a loader's pipelines copy to several devices: "
                         f"{sorted(map(str, devices))}")
    return devices.pop() if devices else None


def copied_nodes(graph, requirements) -> set:
    """Ids of the nodes whose output buffer a ToDevice copies from: the nearest ancestor of each
    ToDevice that allocates (ToTensor and Squeeze return views of their input)."""
    operations = requirements['operation']
    found = set()
    for node in graph.nodes:
        if isinstance(node, TransformNode) and isinstance(node.operation, ToDevice):
            parent = node.parent
            while parent is not None and operations.get(parent.id) is None:
                parent = parent.parent
            if parent is not None:
                found.add(parent.id)
    return found


def allocate(query: AllocationQuery, batch_size: int, slots: int, pin: bool):
    """Buffers for `slots` batches, laid out as FFCV's allocate_query does: host buffers as
    one numpy array (slots, batch, *shape), device buffers as a list of tensors per slot."""
    shape = (batch_size, *query.shape)
    if isinstance(query.dtype, torch.dtype):
        device = torch.device(query.device if query.device is not None else 'cpu')
        pin = pin and device.type == 'cpu'
        return [torch.empty(shape, dtype=query.dtype, device=device, pin_memory=pin)
                for _ in range(slots)]
    dtype = torch.from_numpy(np.empty(0, dtype=query.dtype)).dtype
    return torch.empty((slots, *shape), dtype=dtype, pin_memory=pin).numpy()


class Loader(ffcv.loader.Loader):
    """`ffcv.loader.Loader` with the changes of the module docstring.

    As within an FFCV pass, a batch is only valid until the loader has produced
    `batches_ahead + 1` more. Starting a pass finishes the previous one (its thread is stopped
    and joined, and the device it copied to is synchronised) before its buffers are written
    again."""

    def __init__(self, fname, batch_size: int, num_workers: int = -1, *args, **kwargs):
        # numba refuses more threads than NUMBA_NUM_THREADS; the process may use fewer cores
        available = min(nb.config.NUMBA_NUM_THREADS, len(os.sched_getaffinity(0)))
        if num_workers > available:
            if (num_workers, available) not in _NOTED:  # once, not per loader
                _NOTED.add((num_workers, available))
                print(f"note: {num_workers} loader threads asked for, {available} cores here; "
                      f"using {available}", file=sys.stderr)
            num_workers = available
        super().__init__(fname, batch_size, num_workers, *args, **kwargs)
        self._buffers = {}
        self._running = None
        self.copy_device = copy_device(self.graph)
        self.graph.allocate_memory = self._allocate_memory

    def __iter__(self):
        self._finish_running()
        ffcv.loader.loader.Compiler.set_num_threads(self.num_workers)
        order = self.next_traversal_order()
        self.next_epoch += 1
        if self.code is None or self.recompile:
            self.generate_code()
        self._running = _EpochIterator(self, order[:len(self) * self.batch_size])
        return self._running

    def _finish_running(self):
        if self._running is not None:
            self._running.stop()
            self._running = None
        if self.copy_device is not None:
            torch.cuda.synchronize(self.copy_device)

    def _allocate_memory(self, batch_size, slots):
        """Graph.allocate_memory, reusing the previous pass's buffer for an unchanged request
        and pinning only what ToDevice copies."""
        requirements, _ = self.graph.collect_requirements()
        pinned = copied_nodes(self.graph, requirements) if self.copy_device is not None else ()
        previous, self._buffers = self._buffers, {}

        def buffer(kind, node, position, query):
            pin = kind == 'operation' and node in pinned and position == 0
            # FFCV's Squeeze records shapes as lists: a tuple makes the key hashable.
            key = (kind, node, position, tuple(query.shape), str(query.dtype), str(query.device),
                   pin, batch_size, slots)
            found = previous.get(key)
            self._buffers[key] = allocate(query, batch_size, slots, pin) if found is None \
                else found
            return self._buffers[key]

        memory = {}
        for kind, queries in requirements.items():
            memory[kind] = {}
            for node, query in queries.items():
                if isinstance(query, AllocationQuery):
                    memory[kind][node] = buffer(kind, node, 0, query)
                elif query is not None:
                    memory[kind][node] = tuple(buffer(kind, node, position, q)
                                               for position, q in enumerate(query))
                else:
                    memory[kind][node] = None
        return memory
