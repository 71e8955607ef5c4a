"""fkd-write's options: its sections (`WRITE_PARAMS`: data, write, labels) and the checks between
them and the files they name (`check_writing`), torch- and ffcv-free, so that a typo fails in
a fraction of a second; and where the command writes (`written_betons`).
"""
from __future__ import annotations

import os
from pathlib import Path

from fastargs import Param
from fastargs.validation import And, InRange, OneOf

from fkd_ffcv.config import Flag
from fkd_ffcv.data.header import check_beton
from fkd_ffcv.defaults import (COLOUR_AUGMENTATIONS, EMBEDDING_KINDS, FASHION_MNIST_DIR,
                               LABELLED_SUFFIX, MAX_PIXELS, ON_ERROR, RESIZE_FILTERS,
                               SMART_THRESHOLD, TEACHER_PRECISIONS, TEACHER_RECORDS, WRITE_MODES)
from fkd_ffcv.errors import OptionError
from fkd_ffcv.records.label_types import LABEL_TYPES, TOP_K, LabelSpec, default_label_type
from fkd_ffcv.training.option_checks import check_teacher_files
from fkd_ffcv.data.manifest import labelled_beton, read_manifest

WRITE_PARAMS = {
    'data': ('what to write and where', dict(
        source=Param(OneOf(['fashion-mnist', 'folder']), 'fashion-mnist (Debian package) or an '
                     'ImageFolder tree <root>/<split>/<class>/<image>', default='fashion-mnist'),
        root=Param(str, f'data set root (fashion-mnist: {FASHION_MNIST_DIR})', default=''),
        split=Param(OneOf(['train', 'val', 'all']), 'split to write', default='all'),
        out_dir=Param(str, 'folder for the betons', default='data'),
        name=Param(str, 'file name prefix (default: fashion_mnist, or the root folder name)',
                   default=''),
        subset=Param(int, 'write this many samples per split, spread over the classes (-1: all)',
                     default=-1),
        image_size=Param(And(int, InRange(min=1)), 'fashion-mnist: side in pixels', default=32),
    )),
    'write': ('how images are stored and how the writer behaves', dict(
        max_resolution=Param(And(int, InRange(min=0)), 'longest side after resizing (0: keep)',
                             default=500),
        write_mode=Param(OneOf(WRITE_MODES), 'raw pixels, JPEG, JPEG above '
                         'smart_threshold raw bytes (smart), or JPEG with compress_probability '
                         '(proportion)', default='smart'),
        smart_threshold=Param(And(int, InRange(min=0)), 'smart: JPEG when raw pixels exceed '
                              'this many bytes', default=SMART_THRESHOLD),
        jpeg_quality=Param(And(int, InRange(1, 100)), 'JPEG quality', default=90),
        compress_probability=Param(And(float, InRange(0, 1)), 'proportion: JPEG share',
                                   default=0.5),
        num_workers=Param(int, 'writer processes (-1: one per core)', default=-1),
        chunk_size=Param(And(int, InRange(min=1)), 'samples per work item', default=100),
        page_size=Param(int, 'FFCV page size in bytes (power of two, >= 2 MiB; 0: the '
                        'smallest that holds a sample, 8 MiB for large data sets)', default=0),
        on_error=Param(OneOf(ON_ERROR), 'unusable input file: fail, or skip it and '
                       'list it', default='fail'),
        max_pixels=Param(And(int, InRange(1, MAX_PIXELS)), 'refuse images with more '
                         'pixels (at most Pillow\'s own limit)', default=MAX_PIXELS),
        overwrite=Param(Flag(), 'replace betons that exist already (alias --overwrite); without '
                        'it, writing or labelling to an existing file is refused', default=False),
    )),
    'labels': ('FKD crop records: from a teacher, or imported from FKD\'s released files', dict(
        beton=Param(str, 'label this existing beton instead of writing images', default=''),
        out=Param(str, f'output beton (default: <beton stem>{LABELLED_SUFFIX}.beton beside '
                  f'it; an existing file needs --overwrite)', default=''),
        teacher=Param(str, 'teacher spec(s), comma-separated for an ensemble: '
                      'checkpoint:<final_weights.pt>, timm:<name>[.<tag>]:<ckpt>, '
                      'torchvision:<arch>:<ckpt>, torchscript:<file>, moco:<arch>:<ckpt> '
                      '(with --labels.embedding), <module>:<function>', default=''),
        import_root=Param(str, 'FKD soft-label tree (<root>/<split>/<class>/<stem>.tar)',
                          default=''),
        num_records=Param(And(int, InRange(min=0)), 'crop records per image (0: teacher '
                          f'{TEACHER_RECORDS}, FKD\'s N; import: every record of the files)',
                          default=0),
        label_type=Param(str, f'{", ".join(LABEL_TYPES)} (default: marginal_smoothing_k<K>, '
                         f'K = {TOP_K} or the class count - 1 where that is less; import: the '
                         f'files\' type)', default=''),
        temperature=Param(And(float, InRange(min=1e-6)), 'softmax temperature', default=1.0),
        scale_min=Param(And(float, InRange(0, 1)), 'RandomResizedCrop scale (0: FKD default, '
                        'larger for images of 64 px or less)', default=0.0),
        scale_max=Param(And(float, InRange(0, 1)), 'RandomResizedCrop scale upper bound',
                        default=0.0),
        seed=Param(int, 'crop sampling seed', default=0),
        input_size=Param(And(int, InRange(min=0)), 'teacher input side (0: the teacher\'s)',
                         default=0),
        interpolation=Param(str, f'the teacher crops\' resize filter: {", ".join(RESIZE_FILTERS)}'
                            f', as --data.resize names them (default: the teacher\'s)',
                            default=''),
        batch_size=Param(And(int, InRange(min=1)), 'crops per teacher forward', default=256),
        chunk_images=Param(And(int, InRange(min=1)), 'images per resumable work item', default=64),
        work_dir=Param(str, 'folder for resumable work (default: <out>.work)', default=''),
        device=Param(str, 'auto (GPU LOCAL_RANK mod GPU count, else the CPU), cpu, cuda or '
                     'cuda:<n>', default='auto'),
        precision=Param(OneOf(TEACHER_PRECISIONS), 'teacher arithmetic: fp32 (exact), or bf16 / '
                        'fp16 with the classifier and softmax in fp32', default='fp32'),
        embedding=Param(OneOf(('',) + EMBEDDING_KINDS), 'store the teacher\'s '
                        'L2-normalised embedding per record instead of soft labels (ssl mode): '
                        'its projection head\'s output, its pooled features, or auto (the '
                        'projection where it has a head: moco:, ssl exports)', default=''),
        colour=Param(OneOf(COLOUR_AUGMENTATIONS), 'a colour augmentation drawn per record, '
                     'applied to the teacher\'s crop and stored with the record (6 B), so that '
                     'the student replays the same image: moco_v2 (MoCo v2\'s colour jitter, '
                     'grayscale and blur), s2bnn (the same, less often: S2-BNN\'s '
                     'distillation), or none', default='none'),
    )),
}


def check_writing(data: dict, write: dict, labels: dict) -> None:
    """fkd-write's checks between its `data`, `write` and `labels` sections, then the
    files and folders they name (so a typo fails in a fraction of a second, before ffcv)."""
    source = labels['teacher'] or labels['import_root']
    if data['source'] == 'folder' and not data['root'] and not labels['beton']:
        raise OptionError("--data.root is required with --data.source=folder")
    if labels['beton'] and not source and not labels.get('out'):
        raise OptionError(f"--labels.beton={labels['beton']}: give the labels' source, "
                          f"--labels.teacher or --labels.import_root (or only --labels.out "
                          f"to write a copy without its crop records)")
    if labels['teacher'] and labels['import_root']:
        raise OptionError("--labels.teacher and --labels.import_root both give the labels; "
                          "choose one")
    if labels.get('embedding') and not labels['teacher']:
        raise OptionError(f"--labels.embedding={labels['embedding']} stores a teacher's "
                          f"embeddings: give --labels.teacher")
    if not labels.get('embedding') and any(spec.startswith('moco:')
                                           for spec in labels['teacher'].split(',')):
        raise OptionError(f"--labels.teacher={labels['teacher']}: a MoCo checkpoint gives "
                          f"embeddings, not class scores; add --labels.embedding=auto")
    if labels.get('colour', 'none') != 'none' and not labels['teacher']:
        raise OptionError(f"--labels.colour={labels['colour']} draws a colour augmentation for "
                          f"a teacher to see: give --labels.teacher (imported records carry "
                          f"none)")
    if labels.get('embedding') and labels['label_type']:
        raise OptionError(f"--labels.label_type={labels['label_type']} is a soft-label type; "
                          f"--labels.embedding stores embeddings, not soft labels")
    if labels.get('embedding') and labels.get('temperature', 1.0) != 1.0:
        raise OptionError(f"--labels.temperature={labels['temperature']}: embeddings are "
                          f"stored as they are; the self-supervised loss applies "
                          f"--ssl.temperature when training")
    if labels['scale_min'] and not labels['scale_max']:
        raise OptionError(f"--labels.scale_min={labels['scale_min']} needs --labels.scale_max "
                          f"(0 keeps FKD's default range)")
    if labels['scale_max'] and labels['scale_min'] > labels['scale_max']:
        raise OptionError(f"--labels.scale_min={labels['scale_min']} is above "
                          f"--labels.scale_max={labels['scale_max']}")
    if source and not labels['beton'] and data['split'] == 'val':
        raise OptionError("crop records go into the train split, which --data.split=val does "
                          "not write (label a beton with --labels.beton)")
    if int(os.environ.get('WORLD_SIZE', 1)) > 1 and not labels['beton'] and source:
        raise OptionError("under torchrun, write the images first, then label them with "
                          "--labels.beton")
    check_writing_paths(data, labels)
    if labels['beton']:
        check_beton(labels['beton'])  # DataError (exit 1), before any teacher loads
    if source and labels.get('label_type') and not labels.get('embedding'):
        check_label_type(labels['label_type'], data, labels)
    check_outputs(data, write, labels)


def written_betons(data: dict) -> dict:
    """{split: the beton fkd-write writes for it}: <out_dir>/<name>_<split>.beton."""
    fashion = data['source'] == 'fashion-mnist'
    name = data['name'] or ('fashion_mnist' if fashion else
                            Path(data['root'] or FASHION_MNIST_DIR).resolve().name)
    splits = ['train', 'val'] if data['split'] == 'all' else [data['split']]
    return {split: Path(data['out_dir']) / f"{name}_{split}.beton" for split in splits}


def check_outputs(data: dict, write: dict, labels: dict) -> None:
    """Betons this command would write must not exist yet, unless --overwrite says to replace
    them (write.overwrite)."""
    if write.get('overwrite'):
        return
    source = labels['teacher'] or labels['import_root']
    outputs = [] if labels['beton'] else [(path, '--data.out_dir or --data.name')
                                          for path in written_betons(data).values()]
    if labels['beton'] or (source and data['split'] != 'val'):
        beton = labels['beton'] or written_betons(data)['train']
        outputs.append((labelled_beton(labels, beton), '--labels.out'))
    for path, other in outputs:
        if path.exists():
            written = read_manifest(path).written_at
            raise OptionError(f"{path} exists{f' (written {written})' if written else ''}: give "
                              f"--overwrite to replace it, or another {other}")


def check_label_type(label_type: str, data: dict, labels: dict) -> None:
    """An explicit --labels.label_type must be possible for the class count of the beton to
    label (its manifest, or the class folders about to be written)."""
    if labels['beton']:
        where, classes = labels['beton'], len(read_manifest(labels['beton']).classes or [])
    elif data['source'] == 'folder':
        where = os.path.join(data['root'], 'train')
        classes = sum(entry.is_dir() for entry in os.scandir(where))
    else:
        where, classes = 'Fashion-MNIST', 10
    if classes:
        try:
            LabelSpec.parse(label_type, classes)
        except ValueError as e:
            raise OptionError(f"--labels.label_type: {e} ({where}); without the option, "
                              f"{default_label_type(classes)} is chosen from the class "
                              f"count") from None


def check_writing_paths(data: dict, labels: dict) -> None:
    """fkd-write: the beton to label, the FKD tree to import and the data root must be
    there, laid out as their source reads them."""
    layout = "<root>/train/<class>/<image> (val likewise)"
    # sources.FashionMNISTSource's image files (sources.py loads cv2, so they are named here)
    fashion_images = {'train': 'train-images-idx3-ubyte.gz', 'val': 't10k-images-idx3-ubyte.gz'}
    if labels['beton']:
        if not os.path.isfile(labels['beton']):
            raise OptionError(f"--labels.beton={labels['beton']}: no such file (write the "
                              f"images first: python write_dataset.py --data.source=...)")
    check_teacher_files('--labels.teacher', labels['teacher'])
    if labels['import_root'] and not os.path.isdir(labels['import_root']):
        raise OptionError(f"--labels.import_root={labels['import_root']}: no such directory "
                          f"(FKD's tree: <import_root>/train/<class>/<image stem>.tar)")
    if labels['beton']:
        return  # no images are written
    splits = ['train', 'val'] if data['split'] == 'all' else [data['split']]
    root = data['root']
    if data['source'] == 'folder':
        if not os.path.isdir(root):
            raise OptionError(f"--data.root={root}: no such directory; a folder source is laid "
                              f"out as {layout}")
        for split in splits:
            folder = os.path.join(root, split)
            if not os.path.isdir(folder):
                raise OptionError(f"--data.root={root} has no {split}/ folder; a folder source "
                                  f"is laid out as {layout}")
            with os.scandir(folder) as entries:
                if not any(entry.is_dir() for entry in entries):
                    raise OptionError(f"{folder} has no class folders; a folder source is laid "
                                      f"out as {layout}")
    elif root:  # fashion-mnist from another folder than the Debian package's
        missing = [fashion_images[split] for split in splits
                   if not os.path.isfile(os.path.join(root, fashion_images[split]))]
        if missing:
            raise OptionError(f"--data.root={root} does not hold Fashion-MNIST ({missing[0]}) "
                              f"and --data.source is fashion-mnist (the default); for images "
                              f"laid out as {layout}, the source must be folder: "
                              f"--data.source=folder")
