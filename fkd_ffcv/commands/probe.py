"""fkd-probe: top-1 of a model's frozen features from the hard labels of a train and a validation
beton (training/probes.py): k-NN and a fast linear probe on fixed centre-crop features (the
default, what a run logs), or MoCo's linear classification on augmented crops
(`--protocol lincls`, the protocol of MoCo's, S2-BNN's and FKD's tables)."""
from __future__ import annotations

import os
import sys

from fkd_ffcv.commands.common import (add_device_options, device_and_precision,
                                      measuring_parser, refused, validated_as)
from fkd_ffcv.data.header import check_beton
from fkd_ffcv.defaults import EMBEDDING_KINDS
from fkd_ffcv.errors import DataError, OptionError

PROBE_HELP = ('k-NN top-1 and linear-probe top-1 of the frozen pooled features of an export (a '
              'final_weights.pt of any mode, ssl included) or of any teacher spec (moco:, timm:, '
              'torchvision:, ...; docs/teachers.md), from the hard labels of a train and a '
              'validation beton; --protocol lincls: MoCo\'s linear classification instead '
              '(augmented crops, 100 epochs, SGD 30 x0.1 at 60 and 80), to compare with '
              'MoCo\'s, S2-BNN\'s and FKD\'s tables.')
PROTOCOLS = ('fast', 'lincls')
DEFAULT_LR = {'fast': 0.1, 'lincls': 30.0}


def probe(argv=None) -> int:
    """k-NN and linear-probe top-1 of a model's frozen features (probes.py)."""
    from fkd_ffcv.training.option_checks import check_teacher_files
    parser = measuring_parser('fkd-probe', PROBE_HELP)
    parser.add_argument('model', help='final_weights.pt, or a teacher spec such as '
                                      'moco:resnet50:moco_v2_800ep_pretrain.pth.tar')
    parser.add_argument('train', help='beton whose images and labels fit the probe and vote')
    parser.add_argument('val', help='beton the probe and k-NN are measured on')
    parser.add_argument('--embedding', choices=EMBEDDING_KINDS,
                        default='features', help='what is measured: pooled features (the '
                        'default, as a linear probe evaluates), or the projection')
    parser.add_argument('--resolution', type=int, default=0,
                        help='centre-crop side (default: the run\'s validation side for an '
                             'export, else the model\'s input size)')
    parser.add_argument('--ratio', type=float, default=0,
                        help='centre crop side / shorter image side (default: as --resolution)')
    parser.add_argument('--protocol', choices=PROTOCOLS, default='fast',
                        help='fast: k-NN and a linear probe on fixed centre-crop features '
                             '(seconds; what a run logs); lincls: MoCo\'s linear '
                             'classification on augmented crops (a training run: 100 epochs '
                             'through the frozen model)')
    parser.add_argument('--scale-min', type=float, default=0.08,
                        help='lincls: the training crops\' RandomResizedCrop scale lower bound '
                             '(MoCo\'s 0.08; 0.35 suits 32 px images)')
    parser.add_argument('--knn-k', type=int, default=20)
    parser.add_argument('--knn-temperature', type=float, default=0.07)
    parser.add_argument('--epochs', type=int, default=100,
                        help='linear probe epochs (fast: 0 for k-NN only)')
    parser.add_argument('--lr', type=float, default=None,
                        help='linear probe learning rate (fast: 0.1 on standardised '
                             'features; lincls: 30, MoCo\'s)')
    parser.add_argument('--batch-size', type=int, default=256,
                        help='images per forward while embedding (the probe steps on 256)')
    parser.add_argument('--seed', type=int, default=0)
    add_device_options(parser, 'auto: the run\'s for an export (so that its k-NN and probe '
                               'equal the logged ones; fp32 where this device does not compute '
                               'it natively), else fp32')
    args = parser.parse_args(argv)
    if args.lr is None:
        args.lr = DEFAULT_LR[args.protocol]
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
        if args.protocol == 'lincls' and (args.epochs < 1 or not 0 < args.scale_min <= 1):
            raise OptionError(f"--protocol lincls trains its classifier on random crops: "
                              f"--epochs must be positive and --scale-min in (0, 1], not "
                              f"{args.epochs} and {args.scale_min}")
        for path in (args.train, args.val):
            check_beton(path)
    except (OptionError, DataError, OSError) as e:
        return refused(e)
    from fkd_ffcv.data.beton import Beton
    from fkd_ffcv.errors import TrainingError
    from fkd_ffcv.training.probes import knn_and_probe_top1, lincls, require_labels
    from fkd_ffcv.labeling.teachers import Teacher
    try:
        require_labels(args.train)
        require_labels(args.val)
        classes = Beton(args.train).classes
        if Beton(args.val).classes != classes:
            raise ValueError(f"{args.train} and {args.val} have other classes")
        stored = validated_as(spec)
        device, precision, precision_text = device_and_precision(args, stored)
        teacher = Teacher(spec, device=device, precision=precision,
                          embedding=args.embedding,
                          input_size=args.resolution or stored.get('resolution'))
        ratio = args.ratio or stored.get('ratio') or teacher.crop_pct
        if args.protocol == 'lincls':
            result = lincls(teacher.forward, args.train, args.val, len(classes),
                            resolution=teacher.input_size, ratio=ratio, epochs=args.epochs,
                            lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                            scale=(args.scale_min, 1.0), device=teacher.device,
                            resize=teacher.interpolation)
            print(f"{args.model}: linear classification top-1 {result['lincls_top1']:.2%} "
                  f"(train {result['lincls_train_top1']:.2%} on augmented crops, {args.epochs} "
                  f"epochs, lr {args.lr:g}; {result['val_images']} images at "
                  f"{teacher.input_size} px, ratio {ratio:.3f}, {teacher.dim}-d "
                  f"{args.embedding}, {precision_text})")
            return 0
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
