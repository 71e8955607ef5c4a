"""Train an image classifier on FFCV betons: FKD (soft labels replayed from the beton), plain
(hard labels) or online KD (a teacher forward on every batch).

    python train_imagenet.py --config-file rn50_configs/rn50_fkd_88_epochs.yaml \
        --data.train_dataset=/data/betons/imagenet_train.beton \
        --data.val_dataset=/data/betons/imagenet_val.beton
    torchrun --nproc_per_node=8 train_imagenet.py --config-file ...      # one process per GPU
    python train_imagenet.py --config-file ... --resume                  # continue logging.folder
    python train_imagenet.py --config-file ... --eval-only               # top-1/top-5 of its checkpoint

Options: `--help`, YAML files with `--config-file` (repeatable; later ones win), and
`--section.key=value` overrides. Options that do not fit together stop the command before torch
loads (exit 2). Everything a run writes is in `--logging.folder` (fkd_ffcv/run_folder.py).
"""
import sys

from fkd_ffcv.config import load_config, section
from fkd_ffcv.errors import OptionError
from fkd_ffcv.options import PARAMS, check, declare_sections

if __name__ == '__main__':
    declare_sections()
    config = load_config(__doc__, aliases={'--resume': '--training.resume=true',
                                           '--eval-only': '--training.eval_only=true'})
    opts = {name: section(config, name) for name in PARAMS}
    try:
        check(opts)
    except OptionError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    from fkd_ffcv.training import main  # torch, ffcv: seconds
    sys.exit(main(opts))
