"""Writing a file so that its final name only ever holds a complete file, and reading a
torch file as data, never as code."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Callable, IO


def load_data(path, map_location='cpu'):
    """`torch.load` of a file that may hold only tensors and plain Python data (weights_only).
    Anything else in a pickle could run code while it loads; such a file is refused with its
    name (ValueError). A .safetensors file (timm's and the Hugging Face hub's format) holds
    only tensors by design and is read with safetensors."""
    import torch
    if str(path).endswith('.safetensors'):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ValueError(f"{path}: reading .safetensors files needs `pip install "
                             f"safetensors`") from None
        try:
            return load_file(str(path), device=str(map_location))
        except Exception as e:  # safetensors' own error types: a damaged or other file
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"{path}: refused: it holds Python objects besides tensors and plain "
                         f"data, which could run code when loaded ({first[:120]})") from None


def atomic_write(path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(f)` on a partial file next to `path`, flush it to disk, rename it to `path`.
    A crash leaves the previous `path` (or none) and at most a dot-file named after it."""
    path = Path(path)
    partial = path.with_name(f'.{path.name}.partial-{os.getpid()}')
    try:
        with open(partial, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        folder = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    finally:
        partial.unlink(missing_ok=True)
    return path
