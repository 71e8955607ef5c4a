"""numba's disk cache for the package's compiled functions and for ffcv's typed dict.

Importing ffcv builds a numba typed dict (`ffcv.fields.rgb_image.IMAGE_MODES`), and numba compiles
its dict functions anew in every process: 3-4 s of every command that reads or writes a beton,
and of every subprocess in the tests, on 2 cores. `install()` (run when the package is imported)
waits for the first import of ffcv and, just before it, turns on numba's on-disk cache for those
functions; later processes load them in 0.3 s. Nothing is imported before ffcv is, so the
torch-free commands stay fast.

`on_disk()` is what the package's own numba functions pass as `cache=`: True where numba has a
writable place for its cache (the package's `__pycache__`, else numba's user cache or
NUMBA_CACHE_DIR), False where it has none (a read-only install and home), where numba would
refuse `cache=True` at import; everything then works as before, compiled in each process.
"""
from __future__ import annotations

import functools
import importlib.abc
import sys

TYPED_DICT_FUNCTIONS = ('_make_dict', '_setitem', '_getitem')  # numba.typed.typeddict's


def _probe():
    """A function of this package for numba to place a cache for."""


@functools.lru_cache(maxsize=None)
def on_disk() -> bool:
    """Whether numba can keep this package's compiled functions on disk."""
    from numba.core.caching import FunctionCache
    try:
        FunctionCache(_probe)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return False
    return True


def cache_typed_dicts() -> None:
    """Turn on numba's disk cache for the functions a typed dict compiles when it is made,
    written and read (those numba defines without one)."""
    from numba.typed import typeddict
    for name in TYPED_DICT_FUNCTIONS:
        function = getattr(typeddict, name, None)
        if not hasattr(function, 'enable_caching'):
            continue  # another numba release: nothing to do
        try:
            function.enable_caching()
        except RuntimeError:  # no writable place for the cache
            return


class _BeforeFFCV(importlib.abc.MetaPathFinder):
    """Runs `cache_typed_dicts` once, as ffcv is first imported, and finds nothing itself
    (it stays in `sys.meta_path`, inert: removing a finder while the import system walks the
    list would skip the next one)."""

    def __init__(self):
        self.done = False

    def find_spec(self, name, path=None, target=None):
        if name == 'ffcv' and not self.done:
            self.done = True
            cache_typed_dicts()
        return None


def install() -> None:
    if 'ffcv' in sys.modules or any(isinstance(f, _BeforeFFCV) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _BeforeFFCV())
