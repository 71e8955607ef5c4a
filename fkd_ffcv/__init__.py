"""fkd-ffcv: FKD soft labels stored in FFCV betons, replayed by multi-crop loaders.

The subpackages follow the data (docs/architecture.md), and each imports only those before it:
data -> records -> loading -> models -> labeling -> training -> commands, over the base
modules here (errors, defaults, config, files, progress, registry, devices, reporting,
numba_cache, which keeps numba's typed dicts compiled on disk, and moved, which keeps the import
paths from before the subpackages working).
"""
from fkd_ffcv import moved as _moved
from fkd_ffcv import numba_cache as _numba_cache

__version__ = '0.1.0'
_moved.install()
_numba_cache.install()
