"""The command lines, one function each: installed as console commands (pyproject.toml:
fkd-write, fkd-train, fkd-eval-teacher, fkd-probe; fkd-inspect and fkd-demo are inspect.py's and
demo.py's main) and run by the top-level `write_dataset.py` and `train_imagenet.py`. Each checks its
options before it imports torch or ffcv (seconds), and ends with an exit status: 0, 1 for an
error in the run or in the data (a file that is not a beton, or truncated: errors.DataError,
found by the option checks too), 2 for options, 130 for Ctrl-C."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from fkd_ffcv import defaults
from fkd_ffcv.config import load_config, section
from fkd_ffcv.errors import DataError, OptionError, os_error_line
from fkd_ffcv.data.header import check_beton

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
command before torch loads (exit 2). Everything a
run writes is in `--logging.folder` (fkd_ffcv/training/run_folder.py). `python train_imagenet.py` in a
checkout is the same command."""


def refused(error: Exception) -> int:
    """Print a refusal found before anything heavy loads; its exit status: 2 for options
    (OptionError), 1 for data (DataError: a file that is not a beton, or truncated; an OSError:
    a file or folder that cannot be read)."""
    line = os_error_line(error) if isinstance(error, OSError) else str(error)
    print(f"error: {line}", file=sys.stderr)
    return 2 if isinstance(error, OptionError) else 1


# ------------------------------------------------------------------------------ fkd-train

def train() -> int:
    """Train (or resume, or evaluate) from a recipe and options."""
    from fkd_ffcv.training.options import PARAMS, check, declare_sections, fit_to_run, take_recorded
    declare_sections()
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


# ------------------------------------------------------------------------------ fkd-write

def drop_records(beton: Path, out: Path, options: dict) -> None:
    """Write `out`: `beton` without its crop record fields (to label it again)."""
    from fkd_ffcv.data.beton import Beton
    from fkd_ffcv.data.fields import RECORD_FIELDS
    from fkd_ffcv.data.writer import copy_beton
    names = Beton(beton).field_names
    if not set(RECORD_FIELDS) & set(names):
        raise ValueError(f"{beton} holds no crop records (fields: {', '.join(names)}); give "
                         f"--labels.teacher or --labels.import_root to label it")
    keep = [name for name in names if name not in RECORD_FIELDS]
    report = copy_beton(beton, out, keep=keep, **options)
    print(f"wrote {report.path}: {report.num_samples} images without crop records (fields: "
          f"{', '.join(keep)}); label it with --labels.beton={report.path} --labels.teacher=...")


def label(labels: dict, write: dict, beton: Path) -> None:
    """Add crop records to `beton` (from a teacher or FKD files), as `labels` says; with
    neither, write `labels.out` without the records `beton` holds."""
    from fkd_ffcv.training.options import labelled_beton
    out = labelled_beton(labels, beton)
    options = dict(num_workers=write['num_workers'], chunk_size=write['chunk_size'],
                   page_size=write['page_size'])
    if not (labels['teacher'] or labels['import_root']):
        return drop_records(beton, out, options)
    if labels['import_root']:
        from fkd_ffcv.labeling.fkd_import import import_fkd_labels
        report = import_fkd_labels(beton, out, labels['import_root'],
                                   label_type=labels['label_type'] or None,
                                   num_records=labels['num_records'] or None,
                                   on_error=write['on_error'], **options)
        print(f"imported FKD soft labels into {out}: {report.num_samples} images; top-1 of "
              f"the records agrees with the hard label for {report.top1_agreement:.1%}")
        if report.extra_files:
            print(f"  {len(report.extra_files)} file(s) match no sample, e.g. "
                  f"{report.extra_files[0]}")
        for path, why in report.skipped[:20]:
            print(f"  skipped {path}: {why}")
        return
    from fkd_ffcv.devices import resolve_device
    from fkd_ffcv.labeling.label import LabelingSettings, label_beton
    from fkd_ffcv.labeling.teachers import Teacher
    rank, world = int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1))
    device = resolve_device(labels['device'], int(os.environ.get('LOCAL_RANK', 0)))
    ranks_here = int(os.environ.get('LOCAL_WORLD_SIZE', 1))  # share the cores on the CPU
    teacher = Teacher(labels['teacher'], device=device, temperature=labels['temperature'],
                      input_size=labels['input_size'] or None,
                      interpolation=labels['interpolation'] or None,
                      cpu_threads=max(1, len(os.sched_getaffinity(0)) // ranks_here),
                      precision=labels['precision'], embedding=labels['embedding'])
    scale = (labels['scale_min'], labels['scale_max']) if labels['scale_max'] else None
    settings = LabelingSettings(num_records=labels['num_records'] or defaults.TEACHER_RECORDS,
                                label_type=labels['label_type'],  # '': chosen from the classes
                                scale=scale,
                                seed=labels['seed'], chunk_images=labels['chunk_images'],
                                batch_size=labels['batch_size'])
    work = labels['work_dir'] or f"{out}.work"
    try:
        report = label_beton(beton, out, teacher, settings, work, rank=rank, world_size=world,
                             **options)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"labelling {beton} stopped: the chunks labelled so far are kept "
                                f"in {work}, and the same command resumes from them") from None
    if report is not None:
        from fkd_ffcv.data.beton import Beton
        what = (f"{teacher.dim}-d embeddings, {labels['embedding']}" if labels['embedding']
                else Beton(out).manifest['soft_labels']['label_type'])
        print(f"labelled {out}: {report.num_samples} images x {settings.num_records} crop "
              f"records ({what}) by {labels['teacher']}, from {beton}")


def write_data(data: dict, write: dict, labels: dict) -> None:
    if labels['beton']:
        return label(labels, write, Path(labels['beton']))
    fashion = data['source'] == 'fashion-mnist'
    root = data['root'] or defaults.FASHION_MNIST_DIR  # a folder names its root (checked)
    # Imported here so that option errors and --help answer without loading ffcv (seconds).
    from fkd_ffcv.data.fields import image_fields
    from fkd_ffcv.training.options import written_betons
    from fkd_ffcv.data.sources import FashionMNISTSource, ImageFolderSource
    from fkd_ffcv.data.writer import write_beton

    fields = image_fields(write['write_mode'], write['max_resolution'] or None,
                          write['jpeg_quality'], write['compress_probability'],
                          write['smart_threshold'])
    for split, out in written_betons(data).items():
        if fashion:
            source = FashionMNISTSource(split, data['image_size'], root, data['subset'])
        else:
            source = ImageFolderSource(root, split, write['max_resolution'] or None,
                                       write['max_pixels'], data['subset'])
            for empty in source.empty_classes:
                print(f"warning: class {empty!r} has no images in {split}", file=sys.stderr)
        manifest = {'classes': list(source.classes),
                    'source': {**data, 'root': str(root), 'split': split},
                    'write_options': {k: v for k, v in write.items() if k != 'overwrite'}}
        try:
            report = write_beton(out, fields, source, num_workers=write['num_workers'],
                                 chunk_size=write['chunk_size'], page_size=write['page_size'],
                                 on_error=write['on_error'], manifest=manifest)
        except KeyboardInterrupt:
            kept = (f"the earlier {out} is kept as it was" if out.exists() else
                    f"no {out} was written")
            raise KeyboardInterrupt(f"writing {out} stopped: {kept}, and nothing half-written "
                                    f"is left (betons written before it are complete); the same "
                                    f"command writes it again (with --overwrite where a beton "
                                    f"of its names exists)") from None
        print(f"wrote {report.path}: {report.num_samples} images in {report.seconds:.1f} s "
              f"({report.num_samples / report.seconds:,.0f} images/s)")
        if report.skipped:
            print(f"skipped {len(report.skipped)} unusable input(s) (listed in {out}.json):")
            for path, why in report.skipped[:20]:
                print(f"  {path}: {why}")
        if split == 'train' and (labels['teacher'] or labels['import_root']):
            label(labels, write, out)




def _declare_writing_sections() -> None:
    from fastargs import Param, Section
    from fastargs.validation import And, InRange, OneOf
    from fkd_ffcv.config import Flag
    Section('data', 'what to write and where').params(
        source=Param(OneOf(['fashion-mnist', 'folder']), 'fashion-mnist (Debian package) or an '
                     'ImageFolder tree <root>/<split>/<class>/<image>', default='fashion-mnist'),
        root=Param(str, f'data set root (fashion-mnist: {defaults.FASHION_MNIST_DIR})',
                   default=''),
        split=Param(OneOf(['train', 'val', 'all']), 'split to write', default='all'),
        out_dir=Param(str, 'folder for the betons', default='data'),
        name=Param(str, 'file name prefix (default: fashion_mnist, or the root folder name)',
                   default=''),
        subset=Param(int, 'write this many samples per split, spread over the classes (-1: all)',
                     default=-1),
        image_size=Param(And(int, InRange(min=1)), 'fashion-mnist: side in pixels', default=32),
    )

    Section('write', 'how images are stored and how the writer behaves').params(
        max_resolution=Param(And(int, InRange(min=0)), 'longest side after resizing (0: keep)',
                             default=500),
        write_mode=Param(OneOf(defaults.WRITE_MODES), 'raw pixels, JPEG, JPEG above '
                         'smart_threshold raw bytes (smart), or JPEG with compress_probability '
                         '(proportion)', default='smart'),
        smart_threshold=Param(And(int, InRange(min=0)), 'smart: JPEG when raw pixels exceed '
                              'this many bytes', default=defaults.SMART_THRESHOLD),
        jpeg_quality=Param(And(int, InRange(1, 100)), 'JPEG quality', default=90),
        compress_probability=Param(And(float, InRange(0, 1)), 'proportion: JPEG share',
                                   default=0.5),
        num_workers=Param(int, 'writer processes (-1: one per core)', default=-1),
        chunk_size=Param(And(int, InRange(min=1)), 'samples per work item', default=100),
        page_size=Param(int, 'FFCV page size in bytes (power of two, >= 2 MiB; 0: the '
                        'smallest that holds a sample, 8 MiB for large data sets)', default=0),
        on_error=Param(OneOf(defaults.ON_ERROR), 'unusable input file: fail, or skip it and '
                       'list it', default='fail'),
        max_pixels=Param(And(int, InRange(1, defaults.MAX_PIXELS)), 'refuse images with more '
                         'pixels (at most Pillow\'s own limit)', default=defaults.MAX_PIXELS),
        overwrite=Param(Flag(), 'replace betons that exist already (alias --overwrite); without '
                        'it, writing or labelling to an existing file is refused', default=False),
    )


    Section('labels', 'FKD crop records: from a teacher, or imported from FKD\'s released files').params(
        beton=Param(str, 'label this existing beton instead of writing images', default=''),
        out=Param(str, f'output beton (default: <beton stem>{defaults.LABELLED_SUFFIX}.beton beside '
                  f'it; an existing file needs --overwrite)', default=''),
        teacher=Param(str, 'teacher spec(s), comma-separated for an ensemble: '
                      'checkpoint:<final_weights.pt>, timm:<name>[.<tag>]:<ckpt>, '
                      'torchvision:<arch>:<ckpt>, torchscript:<file>, moco:<arch>:<ckpt> '
                      '(with --labels.embedding), <module>:<function>', default=''),
        import_root=Param(str, 'FKD soft-label tree (<root>/<split>/<class>/<stem>.tar)',
                          default=''),
        num_records=Param(And(int, InRange(min=0)), 'crop records per image (0: teacher '
                          f'{defaults.TEACHER_RECORDS}, FKD\'s N; import: every record of the '
                          f'files)',
                          default=0),
        label_type=Param(str, 'hard, smoothing, marginal_smoothing_k<K>, marginal_renorm_k<K>, '
                         'full (default: marginal_smoothing_k<K>, K = 5 or the class count - 1 '
                         'where that is less; import: the files\' type)',
                         default=''),
        temperature=Param(And(float, InRange(min=1e-6)), 'softmax temperature', default=1.0),
        scale_min=Param(And(float, InRange(0, 1)), 'RandomResizedCrop scale (0: FKD default, '
                        'larger for images of 64 px or less)', default=0.0),
        scale_max=Param(And(float, InRange(0, 1)), 'RandomResizedCrop scale upper bound',
                        default=0.0),
        seed=Param(int, 'crop sampling seed', default=0),
        input_size=Param(And(int, InRange(min=0)), 'teacher input side (0: the teacher\'s)',
                         default=0),
        interpolation=Param(str, 'the teacher crops\' resize filter: antialias, bilinear, '
                            'bicubic or area, as --data.resize names them (default: the '
                            'teacher\'s)', default=''),
        batch_size=Param(And(int, InRange(min=1)), 'crops per teacher forward', default=256),
        chunk_images=Param(And(int, InRange(min=1)), 'images per resumable work item', default=64),
        work_dir=Param(str, 'folder for resumable work (default: <out>.work)', default=''),
        device=Param(str, 'auto (GPU LOCAL_RANK mod GPU count, else the CPU), cpu, cuda or '
                     'cuda:<n>', default='auto'),
        precision=Param(OneOf(defaults.TEACHER_PRECISIONS), 'teacher arithmetic: fp32 (exact), or bf16 / '
                        'fp16 with the classifier and softmax in fp32', default='fp32'),
        embedding=Param(OneOf(('',) + defaults.EMBEDDING_KINDS), 'store the teacher\'s '
                        'L2-normalised embedding per record instead of soft labels (ssl mode): '
                        'its projection head\'s output, its pooled features, or auto (the '
                        'projection where it has a head: moco:, ssl exports)', default=''),
    )


def write() -> int:
    """Write images to betons, and label or import crop records."""
    from fkd_ffcv.training.options import check_writing
    _declare_writing_sections()
    config = load_config(WRITE_HELP, aliases={'--overwrite': '--write.overwrite=true'})
    sections = [section(config, name) for name in ('data', 'write', 'labels')]
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


# ------------------------------------------------------------------------------ fkd-eval-teacher

def eval_teacher(argv=None) -> int:
    """Top-1 / top-5 of a teacher spec (or an ensemble) on a validation beton."""
    import argparse
    from fkd_ffcv.training.options import check_teacher_files
    parser = argparse.ArgumentParser(
        prog='fkd-eval-teacher', allow_abbrev=False,
        description='Top-1 and top-5 of a teacher (any spec of docs/teachers.md, '
                    'comma-separated for an ensemble) on a beton, each image centre-cropped '
                    'and resized to the teacher\'s input side. An export of this project '
                    '(checkpoint:<final_weights.pt>) is evaluated as its run validated it '
                    '(side, ratio, flip, precision), so the two agree.')
    parser.add_argument('teacher', help='e.g. checkpoint:runs/teacher/final_weights.pt')
    parser.add_argument('beton', help='a beton with the classes the teacher predicts')
    parser.add_argument('--ratio', type=float, default=0,
                        help='centre crop side / shorter image side (default: the run\'s for '
                             'an export, else the teacher\'s own, timm\'s crop_pct, or 0.875)')
    parser.add_argument('--resolution', type=int, default=0,
                        help='side fed to the teacher (default: the run\'s validation side '
                             'for an export, else its own input size)')
    parser.add_argument('--flip', action=argparse.BooleanOptionalAction, default=None,
                        help='rank classes by the image and its mirror together, as the '
                             'trainer\'s validation.lr_tta (default: as the run validated, for '
                             'an export; else off)')
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:<n>')
    parser.add_argument('--precision', choices=('auto',) + defaults.TEACHER_PRECISIONS,
                        default='auto', help='auto: the run\'s for an export (fp32 where '
                        'this device does not compute it natively), else fp32 (bf16, fp16 keep '
                        'the classifier in fp32)')
    args = parser.parse_args(argv)
    try:
        if not os.path.isfile(args.beton):
            raise OptionError(f"{args.beton}: no such beton file")
        check_teacher_files('teacher', args.teacher)
        check_beton(args.beton)
    except (OptionError, DataError, OSError) as e:
        return refused(e)
    from fkd_ffcv.devices import recorded_precision, resolve_device
    from fkd_ffcv.labeling.teachers import Teacher
    from fkd_ffcv.training.evaluation import teacher_top_k
    try:
        run = validated_as(args.teacher)
        device = resolve_device(args.device)
        precision, precision_text = recorded_precision(args.precision,
                                                       run.get('precision', 'fp32'), device)
        flip = args.flip if args.flip is not None else run.get('lr_tta', False)
        teacher = Teacher(args.teacher, device=device, precision=precision)
        result = teacher_top_k(teacher, args.beton, ratio=args.ratio or run.get('ratio', 0),
                               resolution=args.resolution or run.get('resolution', 0),
                               batch_size=args.batch_size, flip=flip)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.teacher} on {args.beton}: top-1 {result['top1']:.2%}  top-5 "
          f"{result['top5']:.2%}  ({result['images']} images at {result['resolution']} px, "
          f"ratio {result['ratio']:.3f}, {teacher.interpolation} resize, "
          f"{'with' if flip else 'no'} flip, {precision_text}"
          f"{'; as the run validated' if run else ''})")
    return 0


def validated_as(spec: str) -> dict:
    """How the run of an export (`checkpoint:<final_weights.pt>`) validated: resolution,
    ratio, resize, lr_tta and precision, as far as the export records them ({} for other
    specs), so that fkd-eval-teacher and fkd-probe measure the model as the trainer did."""
    from fkd_ffcv.files import load_data
    if ',' in spec or not spec.startswith('checkpoint:'):
        return {}
    saved = load_data(spec[len('checkpoint:'):])
    return dict(saved.get('validation', {})) if isinstance(saved, dict) else {}


# ------------------------------------------------------------------------------ fkd-probe

def probe(argv=None) -> int:
    """k-NN and linear-probe top-1 of a model's frozen features (probes.py)."""
    import argparse
    from fkd_ffcv.training.options import check_teacher_files
    parser = argparse.ArgumentParser(
        prog='fkd-probe', allow_abbrev=False,
        description='k-NN top-1 and linear-probe top-1 of the frozen pooled features of an '
                    'export (a final_weights.pt of any mode, ssl included) or of any teacher '
                    'spec (moco:, timm:, torchvision:, ...; docs/teachers.md), from the hard '
                    'labels of a train and a validation beton.')
    parser.add_argument('model', help='final_weights.pt, or a teacher spec such as '
                                      'moco:resnet50:moco_v2_800ep_pretrain.pth.tar')
    parser.add_argument('train', help='beton whose images and labels fit the probe and vote')
    parser.add_argument('val', help='beton the probe and k-NN are measured on')
    parser.add_argument('--embedding', choices=defaults.EMBEDDING_KINDS,
                        default='features', help='what is measured: pooled features (the '
                        'default, as a linear probe evaluates), or the projection')
    parser.add_argument('--resolution', type=int, default=0,
                        help='centre-crop side (default: the run\'s validation side for an '
                             'export, else the model\'s input size)')
    parser.add_argument('--ratio', type=float, default=0,
                        help='centre crop side / shorter image side (default: as --resolution)')
    parser.add_argument('--knn-k', type=int, default=20)
    parser.add_argument('--knn-temperature', type=float, default=0.07)
    parser.add_argument('--epochs', type=int, default=100, help='linear probe epochs (0: none)')
    parser.add_argument('--lr', type=float, default=0.1, help='linear probe learning rate')
    parser.add_argument('--batch-size', type=int, default=256,
                        help='images per forward while embedding (the probe steps on 256)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:<n>')
    parser.add_argument('--precision', choices=('auto',) + defaults.TEACHER_PRECISIONS,
                        default='auto', help='auto: the run\'s for an export (so that its '
                        'k-NN and probe equal the logged ones; fp32 where this device does not '
                        'compute it natively), else fp32')
    args = parser.parse_args(argv)
    spec = args.model if ':' in args.model and not os.path.isfile(args.model) else \
        f'checkpoint:{args.model}'
    try:
        for path in (args.train, args.val):
            if not os.path.isfile(path):
                raise OptionError(f"{path}: no such beton file")
        check_teacher_files('model', spec)
        if min(args.knn_k, args.batch_size) < 1 or min(args.epochs, args.resolution) < 0 or \
                not 0 <= args.ratio <= 1 or args.knn_temperature <= 0 or args.lr < 0:
            raise OptionError(f"--knn-k and --batch-size must be positive, --epochs, --resolution "
                              f"and --lr at least 0, --ratio in [0, 1], --knn-temperature above "
                              f"0: {args.knn_k}, {args.batch_size}, {args.epochs}, "
                              f"{args.resolution}, {args.lr}, {args.ratio}, "
                              f"{args.knn_temperature}")
        for path in (args.train, args.val):
            check_beton(path)
    except (OptionError, DataError, OSError) as e:
        return refused(e)
    from fkd_ffcv.data.beton import Beton
    from fkd_ffcv.devices import recorded_precision, resolve_device
    from fkd_ffcv.errors import TrainingError
    from fkd_ffcv.training.probes import knn_and_probe_top1, require_labels
    from fkd_ffcv.labeling.teachers import Teacher
    try:
        require_labels(args.train)
        require_labels(args.val)
        classes = Beton(args.train).classes
        if Beton(args.val).classes != classes:
            raise ValueError(f"{args.train} and {args.val} have other classes")
        stored = validated_as(spec)
        device = resolve_device(args.device)
        precision, precision_text = recorded_precision(args.precision,
                                                       stored.get('precision', 'fp32'), device)
        teacher = Teacher(spec, device=device, precision=precision,
                          embedding=args.embedding,
                          input_size=args.resolution or stored.get('resolution'))
        ratio = args.ratio or stored.get('ratio') or teacher.crop_pct
        result = knn_and_probe_top1(
            teacher.forward, args.train, args.val, len(classes), resolution=teacher.input_size,
            ratio=ratio, knn_k=args.knn_k, knn_temperature=args.knn_temperature,
            probe_epochs=args.epochs, probe_lr=args.lr, seed=args.seed,
            batch_size=args.batch_size, device=teacher.device, resize=teacher.interpolation)
    except (ValueError, FileNotFoundError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: nothing is written; the same command starts again", file=sys.stderr)
        return 130
    probe_text = (f"  linear-probe top-1 {result['probe_top1']:.2%} (train "
                  f"{result['probe_train_top1']:.2%}, {args.epochs} epochs)"
                  if 'probe_top1' in result else '')
    print(f"{args.model}: k-NN top-1 {result['knn_top1']:.2%} (k {args.knn_k}){probe_text}  "
          f"({result['val_images']} images at {teacher.input_size} px, ratio {ratio:.3f}, "
          f"{teacher.dim}-d {args.embedding}, {precision_text})")
    return 0
