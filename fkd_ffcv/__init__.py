"""fkd-ffcv: FKD soft labels stored in FFCV betons, replayed by multi-crop loaders.

The subpackages follow the data (docs/architecture.md), and each imports only those before it:
data -> records -> loading -> models -> labeling -> training -> commands, over the base
modules here (errors, defaults, config, files, progress, registry, devices, reporting, and
moved, which keeps the import paths from before the subpackages working).
"""
from fkd_ffcv import moved as _moved

__version__ = '0.1.0'
_moved.install()
