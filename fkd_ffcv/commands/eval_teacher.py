"""fkd-eval-teacher: top-1 and top-5 of a teacher spec (or an ensemble) on a beton, measured as
the run of an export validated it."""
from __future__ import annotations

import os
import sys

from fkd_ffcv.commands.common import (add_device_options, device_and_precision,
                                      measuring_parser, refused, validated_as)
from fkd_ffcv.data.header import check_beton
from fkd_ffcv.defaults import IMAGENET_CROP
from fkd_ffcv.errors import DataError, OptionError

EVAL_TEACHER_HELP = ("Top-1 and top-5 of a teacher (any spec of docs/teachers.md, comma-separated "
                     "for an ensemble) on a beton, each image centre-cropped and resized to the "
                     "teacher's input side. An export of this project "
                     "(checkpoint:<final_weights.pt>) is evaluated as its run validated it (side, "
                     "ratio, flip, precision), so the two agree.")


def eval_teacher(argv=None) -> int:
    """Top-1 / top-5 of a teacher spec (or an ensemble) on a validation beton."""
    import argparse
    from fkd_ffcv.training.option_checks import check_teacher_files
    parser = measuring_parser('fkd-eval-teacher', EVAL_TEACHER_HELP)
    parser.add_argument('teacher', help='e.g. checkpoint:runs/teacher/final_weights.pt')
    parser.add_argument('beton', help='a beton with the classes the teacher predicts')
    parser.add_argument('--ratio', type=float, default=0,
                        help="centre crop side / shorter image side (default: the run's for an "
                             f"export, else the teacher's own, timm's crop_pct, or "
                             f"{IMAGENET_CROP})")
    parser.add_argument('--resolution', type=int, default=0,
                        help='side fed to the teacher (default: the run\'s validation side '
                             'for an export, else its own input size)')
    parser.add_argument('--flip', action=argparse.BooleanOptionalAction, default=None,
                        help='rank classes by the image and its mirror together, as the '
                             'trainer\'s validation.lr_tta (default: as the run validated, for '
                             'an export; else off)')
    parser.add_argument('--batch-size', type=int, default=256)
    add_device_options(parser, 'auto: the run\'s for an export (fp32 where this device does '
                               'not compute it natively), else fp32 (bf16, fp16 keep the '
                               'classifier in fp32)')
    args = parser.parse_args(argv)
    try:
        if not os.path.isfile(args.beton):
            raise OptionError(f"{args.beton}: no such beton file")
        check_teacher_files('teacher', args.teacher)
        check_beton(args.beton)
    except (OptionError, DataError, OSError) as e:
        return refused(e)
    from fkd_ffcv.labeling.teachers import Teacher
    from fkd_ffcv.training.evaluation import teacher_top_k
    try:
        run = validated_as(args.teacher)
        device, precision, precision_text = device_and_precision(args, run)
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
