"""The manifest: the JSON sidecar `<name>.beton.json` beside a beton, holding what FFCV's format
has no place for (class names, the source and write options, the samples skipped, what the crop
records hold and how they were made, the beton a copy was made from). `Manifest` is the only
code that knows its keys; it records a fingerprint of its beton, so that a sidecar left over
from another write is detected, not trusted.

It lives in data/, not records/: the writer writes it in the same publish as the beton (sidecar
first, then both renamed into place) and the copy carries it over, and both are data/; the
records' entries (`Records`) are plain facts the labelling fills in. Free of torch and ffcv,
since the option checks read it before anything heavy loads; so are the checks here of a
beton's records against a run.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from fkd_ffcv.defaults import CLASSES_FIELD, EMBEDDING_FIELD, LABELLED_SUFFIX
from fkd_ffcv.errors import OptionError

MANIFEST_FORMAT = 'fkd-ffcv manifest 1'


def manifest_path(beton_path) -> Path:
    return Path(str(beton_path) + '.json')


def _split_known(cls, entries, where: str) -> dict:
    """Keyword arguments of `cls` from a JSON object; keys this version does not know are kept
    in `unknown`, so that a copy carries them over."""
    if not isinstance(entries, dict):
        raise ValueError(f"{where}: a JSON object is expected, not {type(entries).__name__}")
    names = {f.name for f in dataclasses.fields(cls)} - {'unknown'}
    return dict({k: v for k, v in entries.items() if k in names},
                unknown={k: v for k, v in entries.items() if k not in names})


def _set_entries(obj) -> dict:
    """The JSON object of `obj`: its facts that are set (not None), then the unknown keys."""
    entries = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
               if f.name != 'unknown' and getattr(obj, f.name) is not None}
    return {**entries, **obj.unknown}


@dataclass
class Records:
    """The `soft_labels` or `embeddings` entry: what a beton's crop records hold and how they
    were made. A fact not recorded is None (and not written)."""
    label_type: Optional[str] = None    # soft labels: the label type, k, the class count
    k: Optional[int] = None
    num_classes: Optional[int] = None
    dim: Optional[int] = None           # embeddings: D
    num_records: Optional[int] = None   # records per image
    source: Optional[str] = None        # 'teacher' (labelling) or 'fkd-import'
    root: Optional[str] = None          # fkd-import: FKD's tree
    crop_resize: Optional[str] = None   # the filter the teacher's crops were resized with
    teacher: Optional[dict] = None      # Teacher.describe()
    settings: Optional[dict] = None     # the LabelingSettings, as a dict
    bytes_per_record: Optional[int] = None
    colour: Optional[str] = None        # the colour augmentation the records replay (moco_v2)
    colour_side: Optional[int] = None   # the crops' side it was applied at (the blur's pixels)
    extra_files: Optional[dict] = None  # fkd-import: files of the tree no sample names
    unknown: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_json(cls, entries, where: str = 'records') -> 'Records':
        return cls(**_split_known(cls, entries, where))

    def to_json(self) -> dict:
        return _set_entries(self)


@dataclass
class Origin:
    """`derived_from`: the beton a copy was made from, as it was when copied."""
    beton: str                  # absolute: the copy may be read from another directory
    fingerprint: str
    num_samples: int
    bytes: int
    written_at: Optional[str]   # its manifest's (None: it had none)
    added_fields: List[str]

    @classmethod
    def from_json(cls, entries, where: str = 'derived_from') -> 'Origin':
        known = _split_known(cls, entries, where)
        known.pop('unknown')
        try:
            return cls(**known)
        except TypeError as e:
            raise ValueError(f"{where}: {e}") from None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Manifest:
    """A beton's manifest. Callers of the writer give the facts they know (classes, source,
    write options, records); the writer sets the rest when it publishes the file."""
    classes: Optional[List[str]] = None
    source: Optional[dict] = None          # where the images came from (fkd-write's options)
    write_options: Optional[dict] = None
    soft_labels: Optional[Records] = None
    embeddings: Optional[Records] = None
    derived_from: Optional[Origin] = None
    # set by the writer
    beton: Optional[str] = None            # the beton's file name
    fingerprint: Optional[str] = None      # Beton.fingerprint() of that file
    num_samples: Optional[int] = None
    fields: Optional[Dict[str, str]] = None  # name -> the Field class's qualified name
    skipped: Optional[List[Tuple[str, str]]] = None  # (input, reason) of each input left out
    written_at: Optional[str] = None
    unknown: dict = dataclasses.field(default_factory=dict)  # keys this version does not know

    @classmethod
    def from_json(cls, entries, where: str = 'manifest') -> 'Manifest':
        known = _split_known(cls, {k: v for k, v in entries.items() if k != 'format'}
                             if isinstance(entries, dict) else entries, where)
        for name in ('soft_labels', 'embeddings'):
            if known.get(name) is not None:
                known[name] = Records.from_json(known[name], f"{where}: {name}")
        if known.get('derived_from') is not None:
            known['derived_from'] = Origin.from_json(known['derived_from'],
                                                     f"{where}: derived_from")
        if known.get('skipped') is not None:
            known['skipped'] = [(s['path'], s['reason']) for s in known['skipped']]
        return cls(**known)

    def to_json(self) -> dict:
        entries = _set_entries(self)
        for name in ('soft_labels', 'embeddings', 'derived_from'):
            if name in entries:
                entries[name] = entries[name].to_json()
        if 'skipped' in entries:
            entries['skipped'] = [{'path': name, 'reason': why} for name, why in self.skipped]
        order = ('beton', 'fingerprint', 'num_samples', 'fields')  # first, as written so far
        return {'format': MANIFEST_FORMAT, **{k: entries.pop(k) for k in order if k in entries},
                **entries}

    @classmethod
    def read(cls, beton_path, fingerprint: Optional[str] = None) -> 'Manifest':
        """The manifest beside `beton_path`; with `fingerprint` (Beton.fingerprint()), checked
        to describe that very file. FileNotFoundError without one, ValueError for a file that
        is not one, or describes another beton."""
        path = manifest_path(beton_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: manifest missing (was {Path(beton_path).name} "
                                    f"written by fkd_ffcv?)")
        try:
            with open(path) as f:
                entries = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
        if not isinstance(entries, dict) or entries.get('format') != MANIFEST_FORMAT:
            raise ValueError(f"{path}: not a {MANIFEST_FORMAT!r} file")
        if fingerprint is not None and entries.get('fingerprint') != fingerprint:
            raise ValueError(f"{path} does not describe {beton_path} (fingerprints differ): "
                             f"the beton was replaced or the manifest is stale; rewrite the "
                             f"data set")
        try:
            return cls.from_json(entries, str(path))
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a {MANIFEST_FORMAT!r} file ({e})") from None

    def write(self, beton_path) -> Path:
        """Write the sidecar of `beton_path` and flush it to disk (the writer renames it into
        place, with its beton)."""
        path = manifest_path(beton_path)
        with open(path, 'w') as f:
            json.dump(self.to_json(), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        return path

    def records(self, field: str) -> Optional[Records]:
        """The entry that describes the record field `field` (soft labels or embeddings)."""
        return self.embeddings if field == EMBEDDING_FIELD else self.soft_labels


def read_manifest(beton_path) -> Manifest:
    """A beton's manifest as written (an empty Manifest if none, or none readable). Not
    checked against the beton: the trainer's Beton does that when it opens the file."""
    try:
        return Manifest.read(beton_path)
    except (OSError, ValueError):
        return Manifest()


# --------------------------------------------------------------------------------------------
# A beton's records against a run


def check_records(k: int, records: Optional[int], path: str) -> None:
    """K crops per image and pass must not exceed the N records stored per image."""
    if records is not None and k > records:
        raise OptionError(f"--fkd.num_crops={k} is more than the {records} crop records per "
                          f"image of {path}: a pass would repeat crops")


def labelled_beton(labels: dict, beton) -> Path:
    """Where labelling `beton` writes: --labels.out, else <stem>_fkd.beton beside it (never
    the beton itself unless named: replacing it is an overwrite)."""
    beton = Path(beton)
    return Path(labels.get('out') or beton.with_name(beton.stem + LABELLED_SUFFIX + beton.suffix))


def records_missing(mode: str, path: str, field_names, field: str) -> str:
    """The message for a mode that replays crop records (of `field`) and a beton that has
    none: where labelling it writes (<stem>_fkd.beton), named as the beton to give when it is
    there already."""
    fields = ', '.join(field_names)
    labelled = labelled_beton({}, path)
    if labelled.exists():
        fix = (f"labelling writes {labelled}: give --data.train_dataset={labelled}")
    else:
        fix = (f"label it with fkd-write --labels.beton={path} --labels.teacher=..."
               f"{' --labels.embedding=auto' if field == EMBEDDING_FIELD else ''} (it writes "
               f"{labelled})")
    if field == EMBEDDING_FIELD:
        held = ("; it holds soft labels, for the fkd and meal_v2 modes"
                if CLASSES_FIELD in field_names else "")
        return (f"{mode} mode needs crop records with teacher embeddings, and {path} has none "
                f"(fields: {fields}){held}; {fix}, or use --training.mode=online_ssl")
    if EMBEDDING_FIELD in field_names:
        return (f"{mode} mode needs crop records with soft labels, and {path} holds teacher "
                f"embeddings instead (fields: {fields}): train it with --training.mode=ssl, "
                f"or label the images again with soft labels")
    return (f"{mode} mode needs crop records with soft labels, and {path} has none (fields: "
            f"{fields}); {fix}, or use --training.mode=plain")
