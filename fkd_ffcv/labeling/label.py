"""Labelling crops with a teacher, once, into the beton (FKD's soft-label generation).

For each image of a beton: decode the stored image once, draw N crop records (seeded by the
sample index), cut each crop as the teacher wants it, run the teacher in batches, keep the
compressed top-k (or, for an embedding teacher, the embedding's direction in int8:
embeddings.py). Work is split into chunks of images, each saved atomically in a work folder,
so a run resumes where it stopped, and ranks (`torchrun`, or RANK/WORLD_SIZE by hand) label
disjoint chunks. Once every chunk exists, rank 0 merges: it copies the beton (images byte for
byte) with the record fields added, then deletes the work folder. The folder records what is
being computed; a rerun with other settings refuses it rather than mixing records.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import deque
from itertools import islice
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm

from fkd_ffcv.data.beton import Beton
from fkd_ffcv.records.crops import RATIO, colour_codes, cut_crops, sample_records
from fkd_ffcv.defaults import COLOUR_AUGMENTATIONS, COLOUR_BYTES, TEACHER_RECORDS
from fkd_ffcv.data.fields import (IMAGE_FIELD, RECORD_FIELDS, bytes_per_record, colour_fields,
                                  embedding_fields, soft_label_fields)
from fkd_ffcv.records.label_types import TOP_K, default_label_type
from fkd_ffcv.records.soft_labels import LabelSpec, compress, record_flags
from fkd_ffcv.labeling.teachers import Teacher
from fkd_ffcv.data.copying import copy_beton
from fkd_ffcv.data.manifest import Records
from fkd_ffcv.data.writer import WriteReport
from fkd_ffcv.progress import bar as progress_bar


@dataclass(frozen=True)
class LabelingSettings:
    num_records: int = TEACHER_RECORDS   # crop records per image (FKD: 500)
    label_type: str = ''                 # '': label_types.default_label_type of the classes
    scale: Optional[Tuple[float, float]] = None  # None: FKD's (0.08, 0.936), small images larger
    ratio: Tuple[float, float] = RATIO
    seed: int = 0
    chunk_images: int = 64               # images per work item (the unit of resume)
    batch_size: int = 256                # crops per teacher forward
    colour: str = 'none'                 # a colour augmentation per record (COLOUR_AUGMENTATIONS)

    def __post_init__(self):
        if self.num_records < 1 or self.chunk_images < 1 or self.batch_size < 1:
            raise ValueError(f"num_records, chunk_images and batch_size must be positive: {self}")
        if self.scale and not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, not {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, not {self.ratio}")
        if self.colour not in COLOUR_AUGMENTATIONS:
            raise ValueError(f"colour must be one of {COLOUR_AUGMENTATIONS}, not {self.colour!r}")

    def recorded(self) -> dict:
        """The settings as a work folder's run.json and the manifest record them: `colour`
        only where one is drawn, so that a labelling begun before the option resumes."""
        settings = asdict(self)
        if settings['colour'] == 'none':
            del settings['colour']
        return settings


@dataclass(frozen=True)
class RecordTargets:
    """What a record stores besides its box and flags: the soft labels of `label_spec`, or,
    for an embedding teacher (label_spec None), the direction of a `dim`-dimensional
    embedding; with `colour`, the colour augmentation the teacher's crop got."""
    label_spec: Optional[LabelSpec] = None
    dim: int = 0
    colour: bool = False

    @property
    def embeds(self) -> bool:
        return self.label_spec is None

    def dtype(self, n: int) -> np.dtype:
        """One image's `n` records, as the work folder's chunks hold them."""
        spec = self.label_spec
        targets = [('embedding', 'i1', (n, self.dim))] if self.embeds else \
            [('classes', '<i2', (n, spec.k)), ('codes', 'u1', (n, spec.k))]
        colour = [('colour', 'u1', (n, COLOUR_BYTES))] if self.colour else []
        return np.dtype([('boxes', '<i2', (n, 4)), ('flags', 'u1', (n,))] + targets + colour)

    def fields(self, n: int) -> tuple:
        """(the beton's record fields, the chunk columns that fill them)."""
        if self.embeds:
            fields, columns = embedding_fields(n, self.dim), ('boxes', 'flags', 'embedding')
        else:
            fields = soft_label_fields(n, self.label_spec.k)
            columns = ('boxes', 'flags', 'classes', 'codes')
        if self.colour:
            fields, columns = {**fields, **colour_fields(n)}, columns + ('colour',)
        return fields, columns

    def manifest(self, **common) -> dict:
        """The manifest's description of the records."""
        if self.embeds:
            return {'embeddings': Records(dim=self.dim, **common)}
        spec = self.label_spec
        return {'soft_labels': Records(label_type=spec.name, k=spec.k,
                                       num_classes=spec.num_classes, **common)}


class WorkFolder:
    """Chunk files `chunk-<c>.npy` (one structured row per image) plus `run.json`."""

    def __init__(self, path, run: dict):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        info = self.path / 'run.json'
        if info.exists():
            recorded = json.loads(info.read_text())
            if recorded != run:
                raise ValueError(f"{self.path} holds records of another labelling run; it "
                                 f"differs in {', '.join(run_differences(recorded, run))} "
                                 f"(recorded -> now): rerun with the recorded settings to "
                                 f"resume, or delete the folder (or choose another work "
                                 f"folder, --labels.work_dir) to start again")
        else:
            tmp = info.with_name(f'.run.json.{os.getpid()}')
            tmp.write_text(json.dumps(run, indent=1))
            os.replace(tmp, info)
        self.run = run

    def chunk_path(self, c: int) -> Path:
        return self.path / f'chunk-{c:06d}.npy'

    def done(self, c: int) -> bool:
        return self.chunk_path(c).exists()

    def save(self, c: int, rows: np.ndarray) -> None:
        tmp = self.path / f'.chunk-{c:06d}.{os.getpid()}.npy'
        np.save(tmp, rows)
        os.replace(tmp, self.chunk_path(c))


def run_differences(recorded: dict, run: dict, prefix: str = '') -> list:
    """'name old -> new' for each setting of two run descriptions that differs (nested dicts
    are compared key by key; settings are named without their section)."""
    out = []
    for key in sorted(set(recorded) | set(run), key=str):
        old, new = recorded.get(key, '(none)'), run.get(key, '(none)')
        name = f"{prefix}{key}"
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            out += run_differences(old, new, '' if key == 'settings' else f"{name} ")
        elif key == 'beton' and not prefix:
            out.append("the beton (another file, or its content changed)")
        else:
            out.append(f"{name} {_short(old)} -> {_short(new)}")
    return out


def _short(value, limit: int = 60) -> str:
    text = value if isinstance(value, str) and value else json.dumps(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


class _Estimate:
    """The teacher, timed: once a full batch of crops has gone through after the first batch
    (which pays for warm-up), one line estimates the time of the whole labelling run."""
    clock = staticmethod(time.perf_counter)

    def __init__(self, teacher: Teacher, images: int, records: int, batch_size: int,
                 what: str):
        self.teacher, self.images, self.records = teacher, images, records
        self.batch_size, self.what = batch_size, what
        self.started = self.clock()
        self.first_end = None
        self.done = self.since_first = 0
        self.printed = False

    def __getattr__(self, name):
        return getattr(self.teacher, name)

    def outputs(self, crops):
        result = self.teacher.outputs(crops)
        now = self.clock()
        self.done += len(crops)
        if self.first_end is None:
            self.first_end = now
        elif not self.printed:
            self.since_first += len(crops)
            if self.since_first >= self.batch_size:
                self.report(self.since_first / max(now - self.first_end, 1e-9), now)
        return result

    def report(self, rate: float, now: float) -> None:
        self.printed = True
        total = self.images * self.records
        left = (total - self.done) / rate
        tqdm.write(f"{self.what}: {self.images:,} images x {self.records} records = {total:,} "
                   f"crops at {rate:,.1f} crops/s (measured on {self.since_first:,} crops after "
                   f"the first batch): about {_duration(now - self.started + left)} in all, "
                   f"{_duration(left)} left; the time is proportional to num_records "
                   f"(docs/soft_labels.md)")
        sys.stdout.flush()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ChunkValues:
    """The record fields of sample i, read from the chunk files (memory-mapped, lazily), as
    the chunk columns `columns` name them, in that order."""

    def __init__(self, folder: WorkFolder, num_samples: int, chunk_images: int, columns):
        self.folder, self.n, self.chunk_images = folder, num_samples, chunk_images
        self.columns, self._open = tuple(columns), {}

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        c, row = divmod(i, self.chunk_images)
        if c not in self._open:
            self._open = {c: np.load(self.folder.chunk_path(c), mmap_mode='r')}
        rec = self._open[c][row]
        return tuple(np.ascontiguousarray(rec[name]) for name in self.columns)


def _chunk_records(beton: Beton, teacher: Teacher, targets: RecordTargets,
                   settings: LabelingSettings, indices, pool: ThreadPoolExecutor) -> np.ndarray:
    """Label the images `indices`; returns one structured row per image."""
    n, size = settings.num_records, teacher.input_size
    rows = np.zeros(len(indices), targets.dtype(n))

    def prepare(index):  # decode once, draw the records, cut every crop (in a worker thread)
        pixels = beton.image(index)
        height, width = pixels.shape[:2]
        boxes, flips = sample_records(settings.seed, index, height, width, n, settings.scale,
                                      settings.ratio)
        crops = cut_crops(pixels, boxes, flips, size, teacher.interpolation)
        codes = None
        if targets.colour:  # the teacher sees each crop with its record's colour
            from fkd_ffcv.records.colour import apply_colour
            codes = colour_codes(settings.seed, index, n, settings.colour)
            for r in range(n):
                apply_colour(crops[r], codes[r], 1.0)
        return boxes, flips, crops, codes

    batch = np.empty((settings.batch_size, size, size, 3), np.uint8)
    outputs, fill = [], 0
    flips = np.zeros((len(indices), n), bool)
    for slot, (boxes, image_flips, crops, codes) in enumerate(_prefetch(pool, prepare, indices)):
        rows[slot]['boxes'], flips[slot] = boxes, image_flips
        if codes is not None:
            rows[slot]['colour'] = codes
        pos = 0
        while pos < n:  # batches span images, so few records per image still fill them
            take = min(settings.batch_size - fill, n - pos)
            batch[fill:fill + take] = crops[pos:pos + take]
            fill, pos = fill + take, pos + take
            if fill == settings.batch_size:
                outputs.append(teacher.outputs(batch))
                fill = 0
    if fill:
        outputs.append(teacher.outputs(batch[:fill]))
    probs = torch.cat(outputs)
    if not torch.isfinite(probs).all():
        bad = sorted({int(indices[r // n]) for r in
                      torch.nonzero(~torch.isfinite(probs).all(1)).flatten().tolist()})
        raise ValueError(f"the teacher gave NaN or Inf for samples {bad[:10]} "
                         f"({beton.path}); no records were written for them")
    if targets.embeds:  # their direction in int8
        from fkd_ffcv.records.embeddings import encode
        zero = torch.nonzero(probs.abs().amax(1) == 0).flatten().tolist()
        if zero:
            bad = sorted({int(indices[r // n]) for r in zero})
            raise ValueError(f"the teacher gave all-zero embeddings (no direction to store) for "
                             f"samples {bad[:10]} ({beton.path}); no records were written for "
                             f"them")
        rows['embedding'] = encode(probs).numpy().reshape(len(indices), n, targets.dim)
        rows['flags'] = record_flags(flips, np.zeros_like(flips))
        return rows
    k = targets.label_spec.k
    classes, codes, p1_stored = compress(probs, targets.label_spec)
    rows['classes'] = classes.numpy().reshape(len(indices), n, k)
    rows['codes'] = codes.numpy().reshape(len(indices), n, k)
    rows['flags'] = record_flags(flips, p1_stored.numpy().reshape(len(indices), n))
    return rows


def label_beton(src, dst, teacher: Teacher, settings: LabelingSettings, work_dir, *,
                rank: int = 0, world_size: int = 1, merge_wait_s: float = 3600.0,
                progress: bool = True, **write_options) -> Optional[WriteReport]:
    """Label every image of `src` and write `dst` (may be `src`) with the record fields.

    Returns the write report on the rank that merged, None on the others."""
    beton = Beton(src)
    if IMAGE_FIELD not in beton.fields:
        raise ValueError(f"{beton.path} has no {IMAGE_FIELD!r} field to label (fields: "
                         f"{', '.join(beton.field_names)})")
    classes = beton.classes
    if teacher.embedding:
        targets = RecordTargets(dim=teacher.dim, colour=settings.colour != 'none')
    elif teacher.num_classes != len(classes):
        raise ValueError(f"the teacher predicts {teacher.num_classes} classes; {beton.path} has "
                         f"{len(classes)} ({', '.join(classes[:3])}, ...)")
    else:
        if not settings.label_type:
            settings = replace(settings, label_type=default_label_type(len(classes)))
            if rank == 0:
                print(f"label type: {settings.label_type} (the default: the top {TOP_K} "
                      f"classes, or the class count - 1 where that is less; {len(classes)} "
                      f"classes here; --labels.label_type sets it)", flush=True)
        targets = RecordTargets(LabelSpec.parse(settings.label_type, len(classes)),
                                colour=settings.colour != 'none')
    meta = beton.field_metadata(IMAGE_FIELD)
    longest = int(np.maximum(meta['height'], meta['width']).max()) if len(beton) else 0
    if rank == 0 and 0 < longest < teacher.input_size:
        print(f"warning: the teacher takes {teacher.input_size} px crops, larger than the "
              f"largest image of {beton.path} ({longest} px): every crop is enlarged for it "
              f"(write the images at a larger --write.max_resolution for such a teacher)",
              file=sys.stderr)
    if any(name in beton.fields for name in RECORD_FIELDS):
        raise ValueError(already_labelled(beton))
    if rank == 0 and targets.embeds:  # embedding records grow with D: say how much
        per_record = bytes_per_record(targets.fields(settings.num_records)[0])
        size = len(beton) * settings.num_records * per_record
        print(f"embedding records: {len(beton):,} images x {settings.num_records} records x "
              f"{per_record} B = {size / 2 ** 30:.2f} GiB added to the beton "
              f"(--labels.num_records sets the records per image)", file=sys.stderr)
    run = {'beton': beton.fingerprint(), 'settings': settings.recorded(),
           'teacher': teacher.describe()}
    run = json.loads(json.dumps(run))  # tuples -> lists, as read back from run.json
    folder = WorkFolder(work_dir, run)
    num_chunks = -(-len(beton) // settings.chunk_images)
    mine = [c for c in range(rank, num_chunks, world_size) if not folder.done(c)]
    todo_images = sum(len(_chunk_indices(c, settings, len(beton))) for c in mine)
    bar = progress_bar(progress, total=todo_images, unit='img',
                       desc=f"labelling {beton.path.name}"
                       + (f" (rank {rank}/{world_size})" if world_size > 1 else ''))
    started = time.perf_counter()
    timed = _Estimate(teacher, todo_images, settings.num_records, settings.batch_size,
                      "labelling estimate" + (f" (rank {rank}/{world_size})"
                                              if world_size > 1 else ''))
    with ThreadPoolExecutor(1) as pool:
        for c in mine:
            indices = _chunk_indices(c, settings, len(beton))
            folder.save(c, _chunk_records(beton, timed, targets, settings, indices, pool))
            bar.update(len(indices))
            rate = bar.n * settings.num_records / (time.perf_counter() - started)
            bar.set_postfix(crops_per_s=f"{rate:,.0f}")
    bar.close()
    if rank != 0:
        return None
    deadline = time.monotonic() + merge_wait_s
    while missing := [c for c in range(num_chunks) if not folder.done(c)]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(missing)} chunk(s) of {folder.path} are still missing "
                               f"(first: {missing[0]}); rerun to resume them")
        time.sleep(2)
    fields, columns = targets.fields(settings.num_records)
    common = {'num_records': settings.num_records, 'source': 'teacher',
              'crop_resize': teacher.interpolation,  # loaders warn when they resize otherwise
              'teacher': teacher.describe(), 'settings': settings.recorded(),
              'bytes_per_record': bytes_per_record(fields),
              **({'colour': settings.colour, 'colour_side': teacher.input_size}
                 if targets.colour else {})}
    report = copy_beton(beton.path, dst, fields,
                        ChunkValues(folder, len(beton), settings.chunk_images, columns),
                        manifest_updates=targets.manifest(**common), progress=progress,
                        **write_options)
    shutil.rmtree(folder.path)  # everything it held is in dst now
    return report


def already_labelled(beton: Beton) -> str:
    """The refusal to label a beton that holds crop records, with the ways on."""
    path = beton.path
    try:
        origin = beton.manifest.derived_from
        origin = Path(origin.beton if origin else '')
    except (OSError, ValueError):
        origin = Path()
    original = ''
    if str(origin) not in ('', '.') and origin.resolve() != path.resolve() and origin.is_file():
        try:
            if not any(name in Beton(origin).fields for name in RECORD_FIELDS):
                original = str(origin)
        except (OSError, ValueError, KeyError):
            pass
    ways = (f"label the original it was copied from, --labels.beton={original}; or "
            if original else "label the original without them; or ")
    return (f"{path} already holds crop records; {ways}write a copy without them, "
            f"python write_dataset.py --labels.beton={path} "
            f"--labels.out={path.with_name(path.stem + '_images.beton')}, and label that")


def _prefetch(pool: ThreadPoolExecutor, fn, items, depth: int = 2):
    """fn(item) for each item, in order, computed `depth` items ahead in `pool`."""
    items = iter(items)
    pending = deque(pool.submit(fn, item) for item in islice(items, depth))
    while pending:
        result = pending.popleft().result()
        for item in islice(items, 1):
            pending.append(pool.submit(fn, item))
        yield result


def _chunk_indices(c: int, settings: LabelingSettings, n: int) -> np.ndarray:
    return np.arange(c * settings.chunk_images, min((c + 1) * settings.chunk_images, n))
