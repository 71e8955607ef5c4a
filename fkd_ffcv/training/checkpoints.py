"""What an evaluation (`--eval-only`) reads back from a run: the model in a checkpoint.pt or a
final_weights.pt export, and the validation settings the run used; and the one refusal of
files written before the first release, whose records lack what this version reads.

A checkpoint holds the options, the model's build options and weights (and the weight
average's), the optimiser, the mode's state and the log (Trainer.save_checkpoint; the run
folder writes it); an export holds the weights with what rebuilding and feeding the model
takes (models/exports.py: save_weights) and the validation settings.
"""
from __future__ import annotations

from pathlib import Path

from fkd_ffcv.errors import OptionError, TrainingError
from fkd_ffcv.files import load_data
from fkd_ffcv.training.modes import MODES
from fkd_ffcv.training.options import PARAMS


def model_build_options(opts: dict) -> dict:
    """build_model's keywords of a run (checkpoints and exports record them)."""
    from fkd_ffcv.models.students import takes_blurpool
    m = opts['model']
    return {'arch': m['arch'], 'small_input': m['small_input'], 'width': m['width'],
            'depth': m['depth'], 'patch_size': m['patch_size'], 'image_size': m['image_size'],
            'drop_path': m['drop_path'], 'blurpool': m['blurpool'] and takes_blurpool(m['arch'])}


def refuse_prerelease(path, state: dict) -> None:
    """Raise TrainingError, saying how to rebuild it, when a checkpoint or export (`state`, as
    loaded from `path`) was written by a version before the first release: one that did not
    record the resize filter (data.resize; the loaders then used INTER_AREA), the mode's state,
    or that built the hand-written ViT (model.heads)."""
    if 'options' in state:  # a checkpoint
        signs = (('it records no data.resize', 'resize' not in state['options']['data']),
                 ("it records no mode state", 'mode' not in state),
                 ('its model has model.heads (the hand-written ViT)',
                  'heads' in state['model_options']))
    else:  # an export: save_weights' validation settings are the trainer's, and optional
        signs = (('it records no data.resize',
                  'validation' in state and 'resize' not in state['validation']),
                 ('its model has model.heads (the hand-written ViT)',
                  'heads' in state.get('arch', {})))
    found = [sign for sign, there in signs if there]
    if found:
        raise TrainingError(f"{path} was written by a version before the first release "
                            f"({'; '.join(found)}): it cannot be resumed or evaluated as its "
                            f"run was; train the run again with this version (the same "
                            f"command without --resume or --eval-only, in a new "
                            f"--logging.folder)")


def load_for_evaluation(path: Path, mode: str, classes, val_path) -> tuple:
    """(model on the CPU, its input normalisation (mean, std), the validation settings its run
    used: resolution, ratio, resize, none for an export written without them) from a
    checkpoint.pt or final_weights.pt (or another save_weights file), refused with the
    fix where the file's model is not what `mode` measures (a classifier or an ssl student) or
    was trained on other `classes`."""
    from fkd_ffcv.models.students import build_model, input_normalisation
    from fkd_ffcv.models.heads import classifier_name
    from fkd_ffcv.models.weights import is_ssl_export
    from fkd_ffcv.models.exports import load_weights
    try:
        state = load_data(path)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    if not isinstance(state, dict) or not {'classes', 'model'} <= state.keys():
        raise TrainingError(f"{path} is neither a checkpoint.pt nor a final_weights.pt")
    refuse_prerelease(path, state)
    trained_as = state['options']['training']['mode'] if 'options' in state else None
    embeds = is_ssl_export(state) or (trained_as in MODES and MODES[trained_as].probes)
    export = path if 'arch' in state else path.with_name('final_weights.pt')
    if embeds and not MODES[mode].probes:
        raise OptionError(f"{path} holds an embedding model (ssl mode) without a "
                          f"classifier: evaluate it with --training.mode=ssl (k-NN and "
                          f"linear-probe top-1), or fkd-probe {export} <train beton> "
                          f"<val beton>")
    if MODES[mode].probes and not embeds:
        raise OptionError(f"{path} holds a classifier (trained in "
                          f"{trained_as or 'a classifier'} mode), and --training.mode="
                          f"{mode} measures embedding models: leave --training.mode={mode} "
                          f"out for its top-1 and top-5 (or give --training.mode="
                          f"{trained_as or 'plain'}), or measure its features with "
                          f"fkd-probe {export} <train beton> <val beton>")
    if list(classes) != list(state['classes']):
        raise TrainingError(f"{path} was trained on {len(state['classes'])} classes; "
                            f"{val_path} has {len(classes)} (or other names)")
    if 'arch' in state:  # final_weights.pt
        model, preprocess, _ = load_weights(path)
        return model, (preprocess['mean'], preprocess['std']), state.get('validation', {})
    model = build_model(num_classes=len(classes), **state['model_options'])
    if embeds:  # the student's classifier became a projection head of these sizes
        from fkd_ffcv.models.heads import with_projection
        head = classifier_name(model)
        weights = state['ema'] or state['model']
        model = with_projection(model, weights[f'{head}.2.weight'].shape[0],
                                weights[f'{head}.0.weight'].shape[0])
    model.load_state_dict(state['ema'] or state['model'])
    options = state['options']
    return model, input_normalisation(model), {**options['validation'],
                                               'resize': options['data']['resize']}


def validate_as_run(opts: dict, run: dict) -> None:
    """Take the run's validation side, ratio and resize filter (those `run` records) into
    `opts` where they are at their defaults (what the command line did not change)."""
    for section, key in (('validation', 'resolution'), ('validation', 'ratio'),
                         ('data', 'resize')):
        if key in run and opts[section][key] == PARAMS[section][1][key].default:
            opts[section][key] = run[key]
