"""fkd-ffcv: FKD soft labels stored in FFCV betons, replayed by multi-crop loaders."""
__version__ = '0.1.0'
