"""Import FKD's released soft labels (one `.tar` file per image) into a beton's record fields.

FKD stores, per image, `torch.save([coords (N, 4), flips (N,), labels])` under
`<root>/<split>/<class>/<stem>.tar` (stem: the file name up to its first dot). coords are
(i/H, j/W, h/H, w/W) of the original image, which stay valid for the stored, resized image;
labels are (N,) class indices for `hard`, (N, 2) [index, p] for `smoothing`, (N, 2, k) with
indices (as floats) in row 0 and probabilities in row 1 for the marginal types. Files are read
with torch's weights-only unpickler, allowing numpy arrays and nothing else.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from fkd_ffcv.data.beton import Beton
from fkd_ffcv.records.crops import BOX_UNITS
from fkd_ffcv.data.copying import copy_beton
from fkd_ffcv.data.fields import bytes_per_record, soft_label_fields
from fkd_ffcv.data.manifest import Records
from fkd_ffcv.records.soft_labels import LabelSpec, encode_probs, record_flags, top1_agreement
from fkd_ffcv.data.sources import BadSample
from fkd_ffcv.data.writer import WriteReport
from fkd_ffcv.records.label_types import marginal_smoothing

_reconstruct = np._core.multiarray._reconstruct
SAFE_NUMPY = [np.ndarray, np.dtype, _reconstruct,
              (_reconstruct, 'numpy.core.multiarray._reconstruct')]  # files from numpy 1.x
SAFE_NUMPY += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith('DType')]


def fkd_label_path(root: Path, rel: str) -> Path:
    """Where FKD keeps the labels of the image at `rel` (relative to the data set root)."""
    directory, name = os.path.split(rel)
    return root / directory / (name.split('.')[0] + '.tar')


def read_fkd_file(path):
    """(coords float64 (N, 4), flips bool (N,), labels array) from one FKD file, or BadSample."""
    try:
        with torch.serialization.safe_globals(SAFE_NUMPY):
            state = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise BadSample("soft-label file missing") from None
    except Exception as e:  # unpickling errors come in many types; none is recoverable here
        raise BadSample(f"not a readable FKD soft-label file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(state, (list, tuple)) or len(state) != 3:
        raise BadSample("expected [coords, flips, labels]")
    coords, flips, labels = (t.numpy() if torch.is_tensor(t) else np.asarray(t) for t in state)
    n = len(coords)
    if coords.shape != (n, 4) or flips.shape != (n,) or len(labels) != n or n == 0:
        raise BadSample(f"inconsistent shapes: coords {coords.shape}, flips {flips.shape}, "
                        f"labels {labels.shape}")
    coords = coords.astype(np.float64)
    if not np.isfinite(coords).all() or coords.min() < 0 or coords.max() > 1 or \
            (coords[:, 0] + coords[:, 2] > 1 + 1e-3).any() or \
            (coords[:, 1] + coords[:, 3] > 1 + 1e-3).any():
        raise BadSample("crop boxes outside the image (coords must be normalised i, j, h, w)")
    return coords, flips.astype(bool), labels


def label_type_of(labels: np.ndarray) -> str:
    """The FKD label type a labels array has the shape of (marginal: smoothing by default)."""
    if labels.ndim == 1:
        return 'hard'
    if labels.ndim == 2 and labels.shape[1] == 2:
        return 'smoothing'
    if labels.ndim == 3 and labels.shape[1] == 2:
        return marginal_smoothing(labels.shape[2])
    raise BadSample(f"labels of shape {labels.shape} match no FKD label type")


def to_records(coords, flips, labels, spec: LabelSpec, n: int, reference: str = ''):
    """FKD arrays -> this project's record fields (boxes, flags, classes, codes), first n.

    With `reference` (the file that set n, when every record is taken), a file must hold
    exactly n records; otherwise at least n."""
    if reference and len(coords) != n:
        raise BadSample(f"{len(coords)} records, but {reference} has {n}: the files must agree, "
                        f"or --labels.num_records=<m> takes the first m records of each (m at "
                        f"most the smallest count)")
    if len(coords) < n:
        raise BadSample(f"{len(coords)} records, fewer than --labels.num_records={n}")
    coords, flips, labels = coords[:n], flips[:n], labels[:n]
    if labels.ndim == 1:
        indices, probs = labels[:, None], np.ones((n, 1))
    elif labels.ndim == 2:
        indices, probs = labels[:, :1], labels[:, 1:]
    else:
        indices, probs = labels[:, 0, :], labels[:, 1, :]
    if indices.shape[1] != spec.k:
        raise BadSample(f"{indices.shape[1]} classes per record; the import expects {spec.k}")
    indices = np.asarray(indices, np.float64)
    probs = np.asarray(probs, np.float64)
    if not (np.isfinite(indices).all() and np.isfinite(probs).all()):
        raise BadSample("NaN or Inf in the labels")
    if (indices != np.round(indices)).any() or indices.min() < 0 or \
            indices.max() >= spec.num_classes:
        raise BadSample(f"class indices outside 0..{spec.num_classes - 1} (another data set?)")
    if probs.min() < 0 or (probs.sum(1) > 1 + 1e-2).any():
        raise BadSample("probabilities outside [0, 1] or summing to more than 1")
    order = np.argsort(-probs, axis=1, kind='stable')  # FKD sorts already; make sure
    probs = np.take_along_axis(probs, order, 1)
    indices = np.take_along_axis(indices, order, 1)
    codes, p1_stored = encode_probs(torch.from_numpy(probs))
    flags = record_flags(flips, p1_stored.numpy())
    boxes = np.round(coords * BOX_UNITS).astype(np.int16)
    return boxes, flags, indices.astype(np.int16), codes.numpy()


class FKDValues:
    """Record fields of sample i, read from its FKD file (a source for copy_beton)."""

    def __init__(self, files: List[Path], spec: LabelSpec, n: int, reference: str = ''):
        self.files, self.spec, self.n, self.reference = files, spec, n, reference

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        try:
            return to_records(*read_fkd_file(self.files[i]), self.spec, self.n, self.reference)
        except BadSample as e:
            raise BadSample(f"{self.files[i]}: {e}") from None


def import_fkd_labels(src, dst, root, *, label_type: Optional[str] = None,
                      num_records: Optional[int] = None, on_error: str = 'fail',
                      **write_options) -> WriteReport:
    """Write `dst`: `src` with the FKD labels under `root` as record fields (module docstring).

    Every sample needs its file; missing or malformed files fail the import, or with
    on_error='skip' drop those samples (listed in the report and manifest). Files without a
    sample are listed as extra. `num_records` takes the first N records of each file (default,
    None or 0: all of them, which must then be equally many in every file)."""
    beton = Beton(src)
    root = Path(root)
    rels = beton.paths()
    files = [fkd_label_path(root, rel) for rel in rels]
    present = set(root.rglob('*.tar')) if root.is_dir() else set()
    if not present:
        raise FileNotFoundError(f"{root}: no FKD soft-label files (*.tar)")
    missing = [str(f) for f in files if f not in present]
    extra = sorted(str(p) for p in present - set(files))
    if len(missing) == len(files):
        split = Path(rels[0]).parts[0]
        nested = sorted(str(p.parent) for p in root.glob(f'*/{split}') if p.is_dir())
        raise FileNotFoundError(f"{root}: none of the {len(files)} samples has its soft-label "
                                f"file there (e.g. {missing[0]})"
                                + (f"; did you mean {nested[0]}?" if nested else
                                   "; is it the tree of another data set?"))
    if missing and on_error == 'fail':
        raise FileNotFoundError(f"{len(missing)} of {len(files)} samples have no soft-label "
                                f"file under {root}, e.g. {missing[0]} (on_error=skip drops "
                                f"those samples)")
    probe = next(f for f in files if f in present)
    coords, _, labels = read_fkd_file(probe)
    spec = LabelSpec.parse(label_type or label_type_of(labels), len(beton.classes))
    if num_records and num_records > len(coords):
        raise ValueError(f"--labels.num_records={num_records}: the FKD files hold "
                         f"{len(coords)} records per image (e.g. {probe}); 0, the default for "
                         f"an import, takes every record the files hold")
    n = num_records or len(coords)
    fields = soft_label_fields(n, spec.k)
    info = Records(label_type=spec.name, k=spec.k, num_classes=spec.num_classes,
                   num_records=n, source='fkd-import', root=str(root),
                   crop_resize='antialias',  # FKD cut them with torchvision on PIL images
                   bytes_per_record=bytes_per_record(fields),
                   extra_files={'count': len(extra), 'first': extra[:20]})
    report = copy_beton(beton.path, dst, fields,
                        FKDValues(files, spec, n, '' if num_records else str(probe)),
                        on_error=on_error,
                        manifest_updates={'soft_labels': info}, **write_options)
    report.extra_files = extra
    report.top1_agreement = top1_agreement(Beton(dst))[0]
    return report
