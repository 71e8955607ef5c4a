"""The project's measurements. Run each script as a module from the repository root:

    .venv/bin/python -m benchmarks.writer          # writer: images/s on real photos
    .venv/bin/python -m benchmarks.labeling        # soft-label generation vs the bare forward
    .venv/bin/python -m benchmarks.loader          # data path: crops/s against FFCV, FKD, ceiling
    .venv/bin/python -m benchmarks.loader_ab --base REV   # a loader change, before vs after
    .venv/bin/python -m benchmarks.loss            # top-k vs dense soft cross-entropy
    .venv/bin/python -m benchmarks.timing_table    # training s/epoch: plain, online KD, FKD K
    .venv/bin/python -m benchmarks.accuracy        # FKD vs online KD vs plain over seeds
    .venv/bin/python -m benchmarks.epochs_table    # top-1 and time per epoch budget
    .venv/bin/python -m benchmarks.teacher_check   # EfficientNet-Lite0's input scaling

Shared code: common.py (the machine line, the photo set, FKD's original data path,
interleaved timing); the demo's data steps are the package's fkd_ffcv/commands/demo_steps.py, its
recipes fkd_ffcv/small_configs/ (read by fkd_ffcv.training.options.recipe).
docs/benchmarks.md and docs/results.md hold the measured tables.
"""
