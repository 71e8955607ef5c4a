"""fkd-train's options completed from the run before they are checked: taken from the run that
--eval-only or --resume continues (`take_recorded`; that run must be there:
`check_run_to_continue`), and defaults that a short run or a small data set cannot hold fitted
to it (`fit_to_run`, with the largest batch a pass allows). Torch-free, as the checks are.
"""
from __future__ import annotations

import json
import math
import os
from typing import Optional

from fkd_ffcv.data.header import check_beton
from fkd_ffcv.errors import DataError, OptionError
from fkd_ffcv.training.modes import MODES
from fkd_ffcv.training.options import PARAMS, run_folder_path


# What a run's config.json records but a later command must not take from it.
NOT_RECORDED = {('training', 'resume'), ('training', 'eval_only'), ('training', 'checkpoint'),
                ('logging', 'folder')}


def take_recorded(opts: dict, given) -> Optional[str]:
    """--eval-only and --resume: each option that neither the command line nor a recipe gives
    (`given`: 'section.key' names) takes the value the run recorded in its config.json (beside
    --training.checkpoint when that is given, else in the run folder), so that
    `--eval-only --logging.folder=runs/x` needs nothing else. Returns the file read, or None
    when there is none."""
    t = opts['training']
    if not (t['eval_only'] or t['resume']):
        return None
    path = recorded_config(opts)
    try:
        with open(path) as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict):
        return None
    mode = opts['training']['mode'] if 'training.mode' in given else \
        (recorded.get('training') or {}).get('mode', opts['training']['mode'])
    unread = other_modes_sections(mode)
    for name, (_, params) in PARAMS.items():
        values = recorded.get(name)
        if name in unread:
            continue
        for key, param in params.items():
            if not isinstance(values, dict) or key not in values or \
                    f'{name}.{key}' in given or (name, key) in NOT_RECORDED:
                continue
            try:
                opts[name][key] = param.validate(values[key])
            except Exception:  # a value an older version recorded otherwise: the default
                pass
    return path

def other_modes_sections(mode: str) -> set:
    """The option sections that belong to modes other than `mode` (meal, ssl, ...): a run
    never reads them, so a run recorded with other values there (the defaults of its day) is
    the same run."""
    modes = dict(MODES.items())
    owned = {section for m in modes.values() for section in m.sections}
    return owned - set(modes[mode].sections) if mode in modes else set()


def recorded_config(opts: dict) -> str:
    """The config.json that --eval-only and --resume take the run's options from: beside
    --training.checkpoint when that is given, else in the run folder."""
    t = opts['training']
    folder = os.path.dirname(t['checkpoint']) if t['eval_only'] and t['checkpoint'] else \
        run_folder_path(opts)
    return os.path.join(folder or '.', 'config.json')


def check_run_to_continue(opts: dict) -> None:
    """--eval-only and --resume need the run they continue: its folder and checkpoint (or
    --training.checkpoint), named before any option the run would have given."""
    t, folder = opts['training'], run_folder_path(opts)
    if not (t['eval_only'] or t['resume']):
        return
    switch = '--eval-only' if t['eval_only'] else '--resume'
    fix = ("give --logging.folder of a run, or --training.checkpoint" if t['eval_only'] else
           "nothing to resume; --logging.folder names the run")
    if t['eval_only'] and t['checkpoint']:
        if not os.path.isfile(t['checkpoint']):
            raise OptionError(f"--training.checkpoint={t['checkpoint']}: no such checkpoint")
        return
    if not os.path.isdir(folder):
        raise OptionError(f"{switch}: {folder}: no such run folder ({fix})")
    checkpoint = os.path.join(folder, 'checkpoint.pt')
    if not os.path.isfile(checkpoint):
        raise OptionError(f"{switch}: {folder} holds no checkpoint.pt ({fix})")

def beton_samples(path: str) -> Optional[int]:
    """The sample count in a beton's header (header.check_beton, no ffcv); None when the file
    is not there or not a whole beton: `check` then names what is wrong with it."""
    try:
        return check_beton(path).num_samples
    except (OSError, DataError):
        return None


def fit_to_run(opts: dict, given) -> list:
    """Defaults that a short run or a small data set cannot hold, made to fit; a value given
    (`given`: 'section.key' names) is left for `check` to refuse. Returns one line per choice
    made, for the log: a cyclic schedule's default peak past the end of the run comes at the
    same share of it as in the default 16 epochs; a default batch larger than the training
    set (per process, whole K-crop groups) is reduced to it."""
    t, lr, notes = opts['training'], opts['lr'], []
    if t['eval_only']:
        return notes
    peak = PARAMS['lr'][1]['peak_epoch'].default
    epochs = PARAMS['training'][1]['epochs'].default
    if lr['schedule'] == 'cyclic' and lr['peak_epoch'] >= t['epochs'] and \
            'lr.peak_epoch' not in given:
        lr['peak_epoch'] = t['epochs'] * peak / epochs
        notes.append(f"--lr.peak_epoch={lr['peak_epoch']:g}: the default {peak:g} is not "
                     f"within {t['epochs']} epoch(s), so the peak comes at the same share of "
                     f"the run as {peak:g} of {epochs} (give --lr.peak_epoch to choose)")
    largest = largest_batch(opts)
    if largest and t['batch_size'] > largest and 'training.batch_size' not in given:
        notes.append(f"--training.batch_size={largest}: the default {t['batch_size']} is more "
                     f"than the {largest} crops of one step over "
                     f"{opts['data']['train_dataset']} (give --training.batch_size to choose)")
        t['batch_size'] = largest
    return notes


def plan_step(opts: dict) -> int:
    """The crops per image a batch must be a multiple of: the K of every pass in the mode's
    plan (K = fkd.num_crops, and 1 for the passes fkd.single_crop_phases or a run shorter
    than K epochs run with one crop). Raises ValueError where the plan cannot be made."""
    return math.lcm(*set(MODES[opts['training']['mode']].pass_plan(opts)))


def largest_batch(opts: dict) -> Optional[int]:
    """The largest batch (crops per process) that gives every pass of the plan at least its K
    steps: a pass of K crops per image steps over the process's share of the images, batch / K
    at a time, and the incomplete last batch is dropped. None where the beton or the plan
    cannot tell (`check` names why)."""
    data = opts['data']
    images = beton_samples(data['train_dataset']) if data['train_dataset'] else None
    if images is None:
        return None
    try:
        step = plan_step(opts)
    except ValueError:
        return None
    world = int(os.environ.get('WORLD_SIZE', 1))
    per_process = -(-images // world)  # FFCV's distributed mode pads to a multiple
    return per_process // step * step
