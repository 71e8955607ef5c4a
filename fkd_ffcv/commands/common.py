"""What the commands share: the refusal of options or data found before anything heavy loads,
and how the run of an export validated (so a command measures the model as the trainer did).
"""
from __future__ import annotations

import sys

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
