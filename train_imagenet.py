"""Train an image classifier on FFCV betons: FKD (soft labels replayed from the beton), plain
(hard labels) or online KD (a teacher forward on every batch).

    python train_imagenet.py --config-file rn50_configs/rn50_fkd_88_epochs.yaml \
        --data.train_dataset=/data/betons/imagenet_train.beton \
        --data.val_dataset=/data/betons/imagenet_val.beton
    torchrun --nproc_per_node=8 train_imagenet.py --config-file ...      # one process per GPU
    python train_imagenet.py --config-file ... --resume                  # continue logging.folder
    python train_imagenet.py --config-file ... --eval-only               # top-1/top-5 of its checkpoint

Options: `--help`, YAML files with `--config-file` (repeatable; later ones win), and
`--section.key=value` overrides. Everything a run writes is in `--logging.folder`
(fkd_ffcv/training.py describes the files).
"""
import sys

from fkd_ffcv.config import load_config, section
from fkd_ffcv.training import PARAMS, main

if __name__ == '__main__':
    config = load_config(__doc__, aliases={'--resume': '--training.resume=true',
                                           '--eval-only': '--training.eval_only=true'})
    sys.exit(main({name: section(config, name) for name in PARAMS}))
