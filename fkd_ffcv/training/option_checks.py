"""fkd-train's checks between options (`check`): files they name, epochs and batches a pass of K
crops per image cannot divide, a mode's missing teacher, more crops than stored records, an
unknown architecture, a run folder that holds a run. Torch-free: a wrong command line fails in
a fraction of a second, before any teacher, model or data loads (the command calls `check`
first, the Trainer again). The files of teacher specs are checked here for every command.
"""
from __future__ import annotations

import os

from fkd_ffcv.data.header import check_beton
from fkd_ffcv.defaults import NAMED_TEACHER_KINDS, STUDENT_ARCHS, STUDENT_PREFIXES, TEACHER_KINDS
from fkd_ffcv.errors import DataError, OptionError
from fkd_ffcv.training.modes import MODES
from fkd_ffcv.data.manifest import (Manifest, Records, check_records, read_manifest,
                                    records_missing)
from fkd_ffcv.training.options import PARAMS, run_folder_path
from fkd_ffcv.training.schedules import step_epochs
from fkd_ffcv.training.run_options import (beton_samples, check_run_to_continue, largest_batch,
                                           other_modes_sections, plan_step, recorded_config)


# ssl options only online_ssl reads: what ssl mode does instead, and what moco does
ONLINE_SSL_ONLY = {
    'embedding': ("replays the embeddings the records store (chosen when labelling, "
                  "--labels.embedding)", "runs no teacher"),
    'colour': ("replays the colour its records store (chosen when labelling, --labels.colour)",
               "colours its views as --moco.colour says"),
}


def check(opts: dict) -> None:
    """Raise OptionError for the first problem between options: files they name, epochs and
    batches that a pass of K crops per image cannot divide, sides off the rounding, a schedule
    that ends before it starts, a mode's missing teacher, more crops than stored records, an
    unknown architecture name, a run folder that holds a run (or none to resume)."""
    data, t, lr, r = opts['data'], opts['training'], opts['lr'], opts['resolution']
    mode = MODES[t['mode']]  # the class: its facts, nothing loaded
    check_run_to_continue(opts)  # before the data: a wrong folder is why the data are missing
    # an evaluation of features (k-NN, probe) reads the training beton's labels too
    needed = ('train_dataset', 'val_dataset') if not t['eval_only'] or mode.probes else \
        ('val_dataset',)
    for key in needed:
        if not data[key]:
            raise OptionError(f"--data.{key} is required" + (
                f" ({recorded_config(opts)} does not record it)"
                if t['eval_only'] or t['resume'] else ""))
        if not os.path.isfile(data[key]):
            raise OptionError(f"--data.{key}: {data[key]}: no such file")
        check_beton(data[key])  # DataError (exit 1): not a beton, or truncated
    if t['eval_only']:
        return
    checkpoint = os.path.join(run_folder_path(opts), 'checkpoint.pt')
    if not t['resume'] and os.path.isfile(checkpoint):
        raise OptionError(f"{run_folder_path(opts)} already holds a run; continue it with "
                          f"--resume or choose another --logging.folder")
    check_arch_name(opts['model']['arch'])
    weights = opts['model']['weights']
    if weights and not os.path.isfile(weights):
        raise OptionError(f"--model.weights: {weights}: no such file")
    m = opts['model']
    takes = ('image_size', 'patch_size', 'drop_path') if m['arch'].startswith('timm:') else \
        ('image_size', 'drop_path') if m['arch'].startswith('sret_') else ()
    misplaced = [f"--model.{key}={m[key]}" for key in ('image_size', 'patch_size', 'drop_path')
                 if m[key] and key not in takes]
    if misplaced:
        raise OptionError(f"{', '.join(misplaced)}: not an option of {m['arch']} (image_size, "
                          f"patch_size and drop_path are for timm models, image_size and "
                          f"drop_path for SReT)")
    if opts['model']['head_epochs'] >= t['epochs']:
        raise OptionError(f"--model.head_epochs={opts['model']['head_epochs']} must end before "
                          f"--training.epochs={t['epochs']}")
    check_sections(opts, t['mode'])
    if 'ssl' in mode.sections:
        if opts['fkd']['temperature'] != PARAMS['fkd'][1]['temperature'].default:
            raise OptionError(f"--fkd.temperature={opts['fkd']['temperature']}: the "
                              f"self-supervised loss takes tau from --ssl.temperature")
        for key, (replayed, otherwise) in ONLINE_SSL_ONLY.items():
            if not mode.needs_teacher and opts['ssl'][key] != PARAMS['ssl'][1][key].default:
                why = replayed if mode.reads_records else otherwise
                raise OptionError(f"--ssl.{key}={opts['ssl'][key]}: {t['mode']} mode {why}; "
                                  f"the option is online_ssl's")
    if mode.starts_from_weights and not weights:
        raise OptionError(f"{t['mode']} mode starts the student from weights: give "
                          f"--model.weights (a final_weights.pt, torchvision or timm "
                          f"checkpoint of the data set's classes); for a student from scratch "
                          f"use --training.mode=fkd")
    k = mode.crops_per_image(opts)
    manifest = read_manifest(data['train_dataset']) if mode.reads_records else Manifest()
    if manifest.fields and mode.record_field not in manifest.fields:
        raise OptionError(records_missing(t['mode'], data['train_dataset'],
                                          list(manifest.fields), mode.record_field))
    if lr['schedule'] == 'cyclic' and lr['peak_epoch'] >= t['epochs']:
        raise OptionError(f"--lr.peak_epoch={lr['peak_epoch']} must come before the end of the "
                          f"run (--training.epochs={t['epochs']}): set a smaller "
                          f"--lr.peak_epoch or more --training.epochs")
    try:
        decays = step_epochs(lr['step_epochs'])
    except ValueError as e:
        raise OptionError(f"--lr.step_epochs: {e}") from None
    if decays and lr['schedule'] != 'step':
        raise OptionError(f"--lr.step_epochs={lr['step_epochs']} is for --lr.schedule=step, not "
                          f"{lr['schedule']}")
    if decays and lr['step_length'] != PARAMS['lr'][1]['step_length'].default:
        raise OptionError(f"--lr.step_epochs={lr['step_epochs']} and --lr.step_length="
                          f"{lr['step_length']} both place the steps: give one")
    if lr['schedule'] != 'cyclic' and lr['warmup_epochs'] >= t['epochs']:
        raise OptionError(f"--lr.warmup_epochs={lr['warmup_epochs']} must end before "
                          f"--training.epochs={t['epochs']}")
    try:
        mode.pass_plan(opts)
    except ValueError as e:
        raise OptionError(str(e)) from None
    step = plan_step(opts)  # k where a pass of the plan takes k crops per image, else 1
    if t['batch_size'] % step:
        raise OptionError(f"--training.batch_size={t['batch_size']} counts crops and must be a "
                          f"multiple of --fkd.num_crops={step}")
    largest = largest_batch(opts)
    if largest is not None and t['batch_size'] > largest:
        images, world = beton_samples(data['train_dataset']), os.environ.get('WORLD_SIZE', '1')
        where = f"{images} images of {data['train_dataset']}" + (
            f", shared by {world} processes," if world != '1' else '')
        raise OptionError(f"--training.batch_size={t['batch_size']}: a pass over the {where} "
                          f"holds fewer than {step} step(s) of {t['batch_size']} crops ({step} "
                          f"per image); set --training.batch_size={largest} or less"
                          if largest >= step else f"{data['train_dataset']} has {images} "
                          f"images, too few for the {step} crops per image of "
                          f"--fkd.num_crops={step} per process")
    wanted, classes = opts['model']['num_classes'], read_manifest(
        data['train_dataset']).classes
    if wanted and classes and wanted != len(classes):
        raise OptionError(f"--model.num_classes={wanted} but {data['train_dataset']} has "
                          f"{len(classes)} classes (0 takes the data set's)")
    for key in ('min_res', 'max_res'):
        if r[key] % r['round_to']:
            raise OptionError(f"--resolution.{key}={r[key]} is not a multiple of "
                              f"--resolution.round_to={r['round_to']}")
    if mode.needs_teacher and not opts['fkd']['teacher']:
        raise OptionError(f"{t['mode']} mode needs --fkd.teacher")
    if mode.needs_teacher:
        check_teacher_files('--fkd.teacher', opts['fkd']['teacher'])
    described = manifest.records(mode.record_field) or Records()
    check_records(k, described.num_records, data['train_dataset'])
    if described.dim and opts['ssl']['dim'] not in (0, described.dim):
        raise OptionError(f"--ssl.dim={opts['ssl']['dim']}: the student's projection head must "
                          f"have the {described.dim} dimensions of the teacher embeddings in "
                          f"{data['train_dataset']}")
    check_same_classes(data['train_dataset'], data['val_dataset'])


def check_arch_name(arch: str) -> None:
    """Refuse an architecture that is neither a built-in name, a family prefix, nor a
    `<module>:<function>` whose package is installed, without importing torch (a name
    registered from Python counts once models/students.py is loaded; timm names are checked
    when timm is loaded)."""
    import difflib
    import importlib.util
    import sys
    if arch in STUDENT_ARCHS or arch.startswith(STUDENT_PREFIXES):
        return
    models = sys.modules.get('fkd_ffcv.models.students')
    if models is not None and models.MODELS.registered(arch):
        return
    module, _, function = arch.partition(':')
    top = module.partition('.')[0]
    try:
        found = bool(top and function) and importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        close = difflib.get_close_matches(arch, STUDENT_ARCHS, n=1)
        raise OptionError(f"--model.arch={arch}: unknown architecture"
                          + (f" (did you mean {close[0]}?)" if close else "")
                          + f"; known: {', '.join(STUDENT_ARCHS)}, "
                          f"{', '.join(p + '<name>' for p in STUDENT_PREFIXES)}, or "
                          f"<module>:<function> returning a model")


def check_sections(opts: dict, name: str) -> None:
    """A section that belongs to other modes (meal) must keep its defaults."""
    for section in sorted(other_modes_sections(name)):
        changed = [f"--{section}.{key}={value}" for key, value in opts[section].items()
                   if value != PARAMS[section][1][key].default]
        if changed:
            owners = sorted(n for n, m in MODES.items() if section in m.sections)
            named = owners[0] + ' mode' if len(owners) == 1 else \
                f"{', '.join(owners[:-1])} and {owners[-1]} modes"
            raise OptionError(f"{', '.join(changed)}: an option of the {named}, not of {name} "
                              f"mode")


def check_same_classes(train: str, val: str) -> None:
    """A training and a validation beton must name the same classes in the same order (their
    manifests say; a beton without one is judged when the trainer opens it). A DataError
    (exit 1): the options are fine, the files do not belong together."""
    ours, theirs = (read_manifest(path).classes for path in (train, val))
    if ours is not None and theirs is not None and ours != theirs:
        differ = next((f"class {i}: {a!r} against {b!r}" for i, (a, b) in
                       enumerate(zip(ours, theirs)) if a != b),
                      f"{len(ours)} classes against {len(theirs)}")
        raise DataError(f"--data.train_dataset={train} and --data.val_dataset={val} have "
                          f"other classes ({differ}): give betons written from the same data "
                          f"set")


def check_teacher_files(option: str, specs: str) -> None:
    """The files a teacher spec names (checkpoint:<file>, torchscript:<file>,
    torchvision:<arch>:<file>, timm:<name>:<file>, moco:<arch>:<file>; teacher_specs.py reads them)
    must be there."""
    for spec in filter(None, specs.split(',')):
        kind, _, rest = spec.partition(':')
        if kind not in TEACHER_KINDS:
            continue  # a `<module>:<function>` entry point names no file
        path = rest.partition(':')[2] if kind in NAMED_TEACHER_KINDS else rest
        if path and not os.path.isfile(path):
            raise OptionError(f"{option}={spec}: {path}: no such file")
