"""Train an image classifier on FFCV betons (FKD, plain or online KD): the `fkd-train` command
(fkd_ffcv/commands/train.py), run from a checkout. `--help` lists the options.

    python train_imagenet.py --config-file rn50_configs/rn50_fkd_88_epochs.yaml \
        --data.train_dataset=/data/betons/imagenet_train_fkd.beton \
        --data.val_dataset=/data/betons/imagenet_val.beton
    torchrun --nproc_per_node=8 train_imagenet.py --config-file ...   # one process per GPU
"""
import sys

from fkd_ffcv.commands.train import train

if __name__ == '__main__':
    sys.exit(train())
