"""Betons to batches: FFCV's Loader adapted (errors, buffers, the pass handed to decoders), the
numba decoders that cut K recorded crops per decoded image with their soft labels, and the
loader factories the trainer and the probes call.

May import: the base modules, fkd_ffcv.data and fkd_ffcv.records.
"""
