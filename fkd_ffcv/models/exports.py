"""The export file (a trainer's `final_weights.pt`, the `checkpoint:<file>` teacher spec):
plain weights (weights.export_state_dict) kept with how to rebuild the model (build_model's
keywords, a timm model's creation arguments, an ssl student's projection head), its class
names and how to feed it; and the check that an export fits a run that starts from it.
"""
from __future__ import annotations

import torch
from torch import nn

from fkd_ffcv.files import atomic_write, load_data
from fkd_ffcv.models.heads import projection_of, with_projection
from fkd_ffcv.models.resnets import add_blurpool
from fkd_ffcv.models.students import MODELS, build_model
from fkd_ffcv.models.weights import export_state_dict, is_ssl_export, unwrap


def check_start(path, classes, options: dict) -> None:
    """Raise ValueError unless an export (a save_weights file) in `path` was trained on
    `classes`, in that order, with the architecture, BlurPool and stem of `options`
    (build_model's keywords): tensor shapes show none of these, and a student that must start
    where the export stands (MEAL V2) would silently compute another function. A plain state
    dict records none of them and passes, and so does another class count, which the
    classifier's shapes show (start_from, or timm's student builder, names them)."""
    saved = load_data(path)
    if is_ssl_export(saved):
        raise ValueError(f"{path} is an ssl export: a backbone with a projection head and no "
                         f"classifier to start from (fine-tune it in another mode first)")
    if not isinstance(saved, dict) or not {'arch', 'classes'} <= saved.keys():
        return
    if len(saved['classes']) == len(classes) and list(saved['classes']) != list(classes):
        first = next(i for i, (a, b) in enumerate(zip(saved['classes'], classes)) if a != b)
        raise ValueError(f"{path} was trained on other classes or another order: class {first} "
                         f"is {saved['classes'][first]!r} there, {classes[first]!r} here")
    stem = getattr(MODELS.find(options['arch']), 'small_input', False)  # it changes the stem
    differ = [f"{key}={saved['arch'][key]!r} (this run: {options[key]!r})"
              for key in ('arch', 'blurpool') + (('small_input',) if stem else ())
              if key in saved['arch'] and saved['arch'][key] != options[key]]
    if differ:
        raise ValueError(f"{path} was exported with {', '.join(differ)}: give the same "
                         f"--model options")


def saved_options(options: dict) -> dict:
    """build_model's keywords from options recorded by an earlier version (a checkpoint's
    model_options, an export's 'arch'): 'heads' sized the hand-written ViT that timm's
    replaced, and is dropped."""
    return {k: v for k, v in options.items() if k != 'heads'}


def save_weights(path, model: nn.Module, arch: dict, classes, preprocess: dict,
                 **extra) -> None:
    """Write plain weights with their architecture options (build_model's keywords, 'arch'
    included), class names and input preprocessing (input_size, interpolation, mean, std),
    atomically. Under 'model' is a plain state dict, so tools that only know torchvision
    (`torch.load(f)['model']`) read it too; a timm model's creation arguments are under
    'timm'; an ssl student's projection head under 'embedding' (dim, hidden); a model trained
    with BlurPool computes the same function only with the filters put back (`add_blurpool`,
    as `load_weights` does)."""
    saved = {'model': export_state_dict(model), 'arch': arch, 'num_classes': len(classes),
             'classes': list(classes), 'preprocess': preprocess, **extra}
    head = projection_of(unwrap(model))
    if head is not None:  # an ssl student: rebuilt with its projection head
        saved['embedding'] = {'dim': head.dim, 'hidden': head.hidden}
    timm_args = getattr(unwrap(model), 'timm_args', None)
    if timm_args:  # timm.create_model(**saved['timm']) + load_state_dict(saved['model'])
        saved['timm'] = dict(timm_args)
    atomic_write(path, lambda f: torch.save(saved, f))


def load_weights(path) -> tuple:
    """(model in eval mode, preprocess dict, class names) from a `save_weights` file."""
    saved = load_data(path)
    if not isinstance(saved, dict) or not {'arch', 'model', 'preprocess'} <= saved.keys():
        raise ValueError(f"{path} was not written by save_weights (a trainer's "
                         f"final_weights.pt); for a plain state dict use "
                         f"timm:<name>:{path} or torchvision:<arch>:{path}")
    arch = saved_options(saved['arch'])
    blurpool = arch.pop('blurpool', False)  # the weights carry plain names: wrap after loading
    model = build_model(arch.pop('arch'), saved['num_classes'], **arch)
    if 'embedding' in saved:
        model = with_projection(model, saved['embedding']['dim'], saved['embedding']['hidden'])
    model.load_state_dict(saved['model'])
    return (add_blurpool(model) if blurpool else model).eval(), saved['preprocess'], \
        saved['classes']
