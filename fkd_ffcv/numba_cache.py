"""Numba's typed dictionaries compiled once per machine instead of once per process.

Importing ffcv builds a numba typed dict (`ffcv.fields.rgb_image.IMAGE_MODES`), and numba compiles
its dict functions anew in every process: 3-4 s of every command that reads or writes a beton,
and of every subprocess in the tests, on 2 cores. `install()` (run when the package is imported)
waits for the first import of ffcv and, just before it, turns on numba's on-disk cache for those
functions; later processes load them in 0.3 s. Nothing is imported before ffcv is, so the
torch-free commands stay fast. Where numba cannot write a cache (a read-only install and no
writable NUMBA_CACHE_DIR), everything works as before, compiled in each process.
"""
from __future__ import annotations

import importlib.abc
import sys

TYPED_DICT_FUNCTIONS = ('_make_dict', '_setitem', '_getitem')  # numba.typed.typeddict's


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
    """Runs `cache_typed_dicts` once, as ffcv is first imported, then leaves the import to the
    other finders."""

    def find_spec(self, name, path=None, target=None):
        if name == 'ffcv':
            sys.meta_path.remove(self)
            cache_typed_dicts()
        return None


def install() -> None:
    if 'ffcv' in sys.modules or any(isinstance(f, _BeforeFFCV) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _BeforeFFCV())
