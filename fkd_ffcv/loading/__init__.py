"""Betons to batches: FFCV's Loader adapted (errors, buffers, the pass handed to decoders), the
numba decoders that cut K recorded crops per decoded image with their soft labels, and the
loader factories the trainer and the probes call.

Enters: beton paths, a batch size, a pass plan. Leaves: batches of uint8 crops (on the run's
device) with their targets: hard labels, soft-label codes or embeddings.
May import: the base modules, fkd_ffcv.data and fkd_ffcv.records.
"""
