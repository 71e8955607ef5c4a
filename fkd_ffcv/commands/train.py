"""fkd-train (and `python train_imagenet.py` in a checkout): parse the options, complete them
from the run it continues, check them before torch loads, then train (training/loop.py)."""
from __future__ import annotations

import os
import sys

from fkd_ffcv.commands.common import refused
from fkd_ffcv.config import load_config, section
from fkd_ffcv.errors import DataError, OptionError

TRAIN_HELP = r"""Train an image classifier on FFCV betons: FKD (soft labels replayed from the
beton), plain (hard labels), online KD (a teacher forward on every batch), Fast MEAL V2, or a
self-supervised student from stored teacher embeddings (--training.mode=ssl).

    fkd-train --config-file rn50_configs/rn50_fkd_88_epochs.yaml \
        --data.train_dataset=/data/betons/imagenet_train_fkd.beton \
        --data.val_dataset=/data/betons/imagenet_val.beton
    torchrun --nproc_per_node=8 --no-python fkd-train ...   # one process per GPU
    fkd-train --config-file ... --resume                     # continue logging.folder
    fkd-train --eval-only --logging.folder=runs/x            # top-1/top-5 of its checkpoint

With --eval-only or --resume, options not given take the values the run recorded in its
config.json. A default that a short run or a small data set cannot hold (the cyclic peak, the
batch size) is fitted to it, in a one-line note. Options that do not fit together stop the
command before torch loads (exit 2). Everything a run writes is in `--logging.folder`
(fkd_ffcv/training/run_folder.py). `python train_imagenet.py` in a checkout is the same
command."""


def train() -> int:
    """Train (or resume, or evaluate) from a recipe and options."""
    from fkd_ffcv.training.option_checks import check
    from fkd_ffcv.training.options import PARAMS, declare_sections
    from fkd_ffcv.training.run_options import fit_to_run, take_recorded
    declare_sections(PARAMS)
    config = load_config(TRAIN_HELP, aliases={'--resume': '--training.resume=true',
                                              '--eval-only': '--training.eval_only=true'})
    opts = {name: section(config, name) for name in PARAMS}
    given = {'.'.join(path) for path in config.content}  # from recipes and the command line
    try:
        recorded = take_recorded(opts, given)
        notes = fit_to_run(opts, given)
        check(opts)
    except (OptionError, DataError, OSError) as e:
        return refused(e)
    if os.environ.get('RANK', '0') == '0':  # once under torchrun, not once per process
        if recorded:
            print(f"note: options not given are the run's, from {recorded}", file=sys.stderr)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    from fkd_ffcv.training.loop import main  # torch, ffcv: seconds
    return main(opts)
