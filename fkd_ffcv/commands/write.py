"""fkd-write (and `python write_dataset.py` in a checkout): parse the options, check them before
ffcv or torch loads, then write the betons (data/splits.py) and label the train split or
a given beton (labeling/relabel.py)."""
from __future__ import annotations

import sys
from pathlib import Path

from fkd_ffcv.commands.common import refused
from fkd_ffcv.config import load_config, section
from fkd_ffcv.errors import DataError, OptionError

WRITE_HELP = r"""Write an image data set to FFCV betons, and FKD crop records with soft
labels into them.

    fkd-write                     # the Fashion-MNIST default, train + val, in data/
    fkd-write --data.source=folder --data.root=/data/imagenet \
        --data.out_dir=/data/betons --write.write_mode=proportion
    fkd-write --labels.beton=data/x_train.beton --labels.teacher=torchvision:resnet50:rn50.pt
    fkd-write --labels.beton=data/x_train.beton --labels.import_root=/data/FKD_soft_label/train/..
    fkd-write --labels.beton=data/x_fkd.beton --labels.out=data/x_images.beton  # drop records

Each split becomes `<out_dir>/<name>_<split>.beton` plus its manifest `<...>.beton.json`
(class names, source, options, skipped inputs); a beton that exists is replaced only with
--overwrite. With `--labels.teacher` or `--labels.import_root`, a copy of the train split (or
of `--labels.beton`), `<stem>_fkd.beton` unless `--labels.out` names it, gets N crop records
per image; `--labels.beton` with only `--labels.out` writes a copy without crop records (to
label again).
`--labels.embedding=auto` stores a teacher's embedding per record instead (self-supervised
FKD, --training.mode=ssl), e.g. from MoCo v2: --labels.teacher=moco:resnet50:<checkpoint>.
Labelling under `torchrun --no-python fkd-write` splits the images over the ranks.
`python write_dataset.py` in a checkout is the same command."""


def write() -> int:
    """Write images to betons, and label or import crop records."""
    from fkd_ffcv.training.options import declare_sections
    from fkd_ffcv.training.write_options import WRITE_PARAMS, check_writing
    declare_sections(WRITE_PARAMS)
    config = load_config(WRITE_HELP, aliases={'--overwrite': '--write.overwrite=true'})
    sections = [section(config, name) for name in WRITE_PARAMS]
    try:
        check_writing(*sections)
    except (OptionError, DataError, OSError) as e:
        return refused(e)
    try:
        write_data(*sections)
    except (RuntimeError, OSError, ValueError, ImportError) as e:  # WriteError: RuntimeError
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"\ninterrupted: {e.args[0] if e.args else 'nothing half-written was kept'}",
              file=sys.stderr)
        return 130
    return 0


def write_data(data: dict, write: dict, labels: dict) -> None:
    """Label `--labels.beton`, or write each split and label the train split where a teacher or
    FKD's files give labels."""
    # Imported here so that option errors and --help answer without loading ffcv (seconds).
    from fkd_ffcv.data.splits import write_split
    from fkd_ffcv.labeling.relabel import label_or_strip
    from fkd_ffcv.data.manifest import labelled_beton
    from fkd_ffcv.training.write_options import written_betons
    if labels['beton']:
        beton = Path(labels['beton'])
        return label_or_strip(labels, write, beton, labelled_beton(labels, beton))
    for split, out in written_betons(data).items():
        write_split(data, write, split, out)
        if split == 'train' and (labels['teacher'] or labels['import_root']):
            label_or_strip(labels, write, out, labelled_beton(labels, out))
