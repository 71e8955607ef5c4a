"""What the commands share: the refusal of options or data found before anything heavy loads;
and, for the commands that measure a teacher spec or an export (fkd-eval-teacher, fkd-probe),
their parser's device and precision options and how the run of an export validated (so that
they measure the model as the trainer did).
"""
from __future__ import annotations

import sys

from fkd_ffcv.defaults import TEACHER_PRECISIONS
from fkd_ffcv.errors import OptionError, os_error_line


def refused(error: Exception) -> int:
    """Print a refusal found before anything heavy loads; its exit status: 2 for options
    (OptionError), 1 for data (DataError: a file that is not a beton, or truncated; an OSError:
    a file or folder that cannot be read)."""
    line = os_error_line(error) if isinstance(error, OSError) else str(error)
    print(f"error: {line}", file=sys.stderr)
    return 2 if isinstance(error, OptionError) else 1


def validated_as(spec: str) -> dict:
    """How the run of an export (`checkpoint:<final_weights.pt>`) validated: resolution,
    ratio, resize, lr_tta and precision, as far as the export records them ({} for other
    specs), so that fkd-eval-teacher and fkd-probe measure the model as the trainer did."""
    from fkd_ffcv.files import load_data
    if ',' in spec or not spec.startswith('checkpoint:'):
        return {}
    saved = load_data(spec[len('checkpoint:'):])
    return dict(saved.get('validation', {})) if isinstance(saved, dict) else {}


def measuring_parser(prog: str, description: str):
    """The argument parser of a command that measures a model (fkd-eval-teacher, fkd-probe);
    add_device_options ends its options."""
    import argparse
    return argparse.ArgumentParser(prog=prog, allow_abbrev=False, description=description)


def add_device_options(parser, precision_help: str) -> None:
    """--device and --precision (auto: the run's for an export, `precision_help` says more)."""
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:<n>')
    parser.add_argument('--precision', choices=('auto',) + TEACHER_PRECISIONS,
                        default='auto', help=precision_help)


def device_and_precision(args, run: dict) -> tuple:
    """(device, precision, its description for the result line) of --device and --precision,
    `run` being validated_as of the measured spec."""
    from fkd_ffcv.devices import recorded_precision, resolve_device
    device = resolve_device(args.device)
    return (device, *recorded_precision(args.precision, run.get('precision', 'fp32'), device))
