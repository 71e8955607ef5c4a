"""torch.cuda stood in for on a machine without a GPU, so the project's CUDA branches run in CPU
tests. Device memory is host memory; streams and events do nothing but record what was done
with them, in which thread and on which device, for the tests to check the protocol."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import torch


class FakeStream:
    def __init__(self, fake, device=None):
        self.fake = fake
        self.device = fake.current_device() if device is None else device
        self.id = len(fake.streams)
        fake.streams.append(self)

    def wait_stream(self, other):
        self.fake.log('wait_stream', self.id, other.id)

    def __repr__(self):
        return f'FakeStream({self.id})'


class FakeEvent:
    def __init__(self, fake):
        self.fake, self.stream = fake, None
        self.id = len(fake.events)
        fake.events.append(self)

    def record(self, stream=None):
        self.stream = stream if stream is not None else self.fake.current
        self.fake.log('record', self.id, self.stream.id)

    def wait(self, stream=None):
        self.fake.log('event_wait', self.id)

    def synchronize(self):
        self.fake.log('synchronize', self.id)


class FakeCuda:
    """Installs itself with pytest's monkeypatch. `calls` holds (thread name, device index,
    what, *args) tuples; `pinned` the data pointers of pinned tensors; `devices` how many GPUs
    torch reports."""

    def __init__(self, monkeypatch, devices: int = 2, bf16: bool = True):
        from ffcv.loader import epoch_iterator
        self.devices, self.bf16 = devices, bf16
        self.calls, self.streams, self.events, self.pinned = [], [], [], set()
        self._local = threading.local()
        self.current = FakeStream(self, 0)
        cuda = torch.cuda
        patches = {
            'is_available': lambda: True,
            'device_count': lambda: self.devices,
            'is_bf16_supported': self.is_bf16_supported,
            'current_device': self.current_device,
            'set_device': self.set_device,
            'device': self.device_context,
            'Stream': lambda device=None, **k: FakeStream(self, self._index(device)),
            'Event': lambda *a, **k: FakeEvent(self),
            'stream': self.stream_context,
            'current_stream': lambda device=None: self.current,
            'synchronize': lambda device=None: self.log('synchronize_device', str(device)),
        }
        for name, value in patches.items():
            monkeypatch.setattr(cuda, name, value)
        monkeypatch.setattr(epoch_iterator, 'IS_CUDA', True)
        real_empty = torch.empty

        def empty(*shape, device=None, pin_memory=False, **kwargs):  # host memory stands in
            if device is not None and torch.device(device).type == 'cuda':
                self.log('device_alloc', str(device))
                device = 'cpu'
            tensor = real_empty(*shape, device=device, **kwargs)
            if pin_memory:
                self.pinned.add(tensor.data_ptr())
            return tensor

        def pin_memory(tensor, *args, **kwargs):  # FFCV's own way of pinning
            self.pinned.add(tensor.data_ptr())
            return tensor

        monkeypatch.setattr(torch, 'empty', empty)
        monkeypatch.setattr(torch.Tensor, 'pin_memory', pin_memory)

    def is_bf16_supported(self, including_emulation=True):
        self.log('is_bf16_supported', including_emulation)
        return self.bf16 or including_emulation  # every GPU emulates bf16

    @staticmethod
    def _index(device):
        if device is None:
            return None
        return device.index if isinstance(device, torch.device) else int(device)

    def current_device(self) -> int:
        return getattr(self._local, 'device', 0)

    def set_device(self, device):
        self._local.device = self._index(device)
        self.log('set_device', self._local.device)

    @contextmanager
    def device_context(self, device):
        before = self.current_device()
        self._local.device = self._index(device)
        try:
            yield
        finally:
            self._local.device = before

    @contextmanager
    def stream_context(self, stream):
        self.log('enter_stream', stream.id)
        yield

    def log(self, what, *args):
        self.calls.append((threading.current_thread().name, self.current_device(), what,
                           *args))
