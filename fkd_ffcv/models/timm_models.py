"""timm models as students (`--model.arch=timm:<name>`) and teachers
(`timm:<name>[.<tag>]:<checkpoint>`, read by labeling/teacher_specs.py), with weights only ever
from local files.

A name is timm's: an architecture, optionally with a pretrained tag (`resnet50.a1_in1k`).
Names timm keeps as deprecated aliases (FKD's `tf_efficientnet_l2_ns_475`, MEAL V2's
`gluon_senet154`) are resolved to what they now stand for. The pretrained configuration of
that name and tag says how the weights were trained to be fed (input size, interpolation, mean
and std); timm's crop fraction is not used, as a teacher labels exactly the recorded box.

Weights are loaded through timm's own loader (`pretrained_cfg_overlay={'state_dict': ...}`),
so its per-family filter adapts checkpoints written in the original repositories' layouts and
resamples position and patch embeddings for another image or patch size; the load is strict,
and a misfit is named with its first keys. timm is imported only when a timm model is asked for.
"""
from __future__ import annotations

import difflib
import sys

from fkd_ffcv.defaults import IMAGENET_CROP, IMAGENET_MEAN, IMAGENET_STD, RESIZE_FILTERS
from fkd_ffcv.files import load_data
from fkd_ffcv.models.weights import plain_state_dict

PREFIX = 'timm:'


def timm():
    try:
        import timm as module
    except ImportError:
        raise ImportError("timm models need timm: `pip install timm` (make setup installs the "
                          "pinned version)") from None
    return module


def resolve(name: str) -> str:
    """timm's current name for `name` (a deprecated alias is replaced by its target), refused
    with the closest known names if timm does not know it, or with the model's tags if the
    tag is not one of them."""
    t = timm()
    arch, dot, tag = name.partition('.')
    moved = t.models.get_deprecated_models()
    if arch in moved:
        if tag:
            raise ValueError(f"timm model {arch!r} is an old name for {moved[arch]!r}; give "
                             f"that name with its tag instead of {name!r}")
        return moved[arch]
    if not t.is_model(arch):
        close = difflib.get_close_matches(arch, t.list_models() + sorted(moved), n=5,
                                          cutoff=0.6)
        raise ValueError(f"unknown timm model {arch!r}"
                         + (f"; close: {', '.join(close)}" if close else
                            "; timm.list_models('*pattern*') lists them"))
    if tag:
        tags = [n.partition('.')[2] for n in t.list_pretrained(arch + '.*')]
        if tag not in tags:
            raise ValueError(f"timm model {arch!r} has no pretrained tag {tag!r}; its tags: "
                             f"{', '.join(tags) or 'none'}")
    return name


def pretrained_config(name: str) -> dict:
    """timm's pretrained configuration for a resolved name (its default tag when it has none);
    an architecture without one gets ImageNet's 224 px bicubic defaults."""
    cfg = timm().models.get_pretrained_cfg(name)
    if cfg is None:
        return dict(input_size=(3, 224, 224), interpolation='bicubic', fixed_input_size=False,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=IMAGENET_CROP,
                    num_classes=1000, classifier=None)
    return cfg.to_dict()


def preprocessing(name: str) -> dict:
    """(input_size, interpolation, mean, std) of the pretrained configuration, as a teacher's
    Preprocess takes them; crop_pct and fixed_input_size beside them for whoever needs them."""
    cfg = pretrained_config(name)
    _, height, width = cfg['input_size']
    if height != width:
        raise ValueError(f"timm model {name!r} takes {height}x{width} inputs; crops here are "
                         f"square")
    # timm feeds PIL images: its bilinear is PIL's antialiased one, its bicubic antialiased too
    interpolation = cfg.get('interpolation') or 'bicubic'
    interpolation = {'bilinear': 'antialias'}.get(interpolation, interpolation)
    if interpolation not in RESIZE_FILTERS:
        raise ValueError(f"timm model {name!r} was trained with {interpolation!r} "
                         f"interpolation; crops are cut with one of {', '.join(RESIZE_FILTERS)}")
    return dict(input_size=height, interpolation=interpolation, mean=tuple(cfg['mean']),
                std=tuple(cfg['std']), crop_pct=cfg.get('crop_pct') or IMAGENET_CROP,
                fixed_input_size=bool(cfg.get('fixed_input_size')))


def _classifiers(cfg: dict) -> tuple:
    names = cfg.get('classifier') or ()
    return (names,) if isinstance(names, str) else tuple(names)


def checkpoint_classes(name: str, state: dict) -> int:
    """The class count of `state`'s classifier (0 if it has none)."""
    for head in _classifiers(pretrained_config(name)):
        if head + '.weight' in state:
            return state[head + '.weight'].shape[0]
    return 0


def _misfit(name: str, model_args: dict, state: dict, source) -> str:
    """Why `state` does not load into the model: first missing, unexpected and resized keys
    ('' when the keys and shapes all fit, and the cause lies elsewhere)."""
    own = timm().create_model(name, pretrained=False, **model_args).state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    resized = [f"{k} {tuple(state[k].shape)} against {tuple(own[k].shape)}"
               for k in own if k in state and state[k].shape != own[k].shape]
    parts = [f"{label} {keys[:4]} ({len(keys)} in all)" for label, keys in
             (('missing', missing), ('unexpected', extra), ('other shapes', resized)) if keys]
    if not parts:  # every key and shape fits: the cause lies elsewhere
        return ''
    return f"{source} does not fit timm {name}: " + '; '.join(parts)


def create(name: str, num_classes: int, state: dict = None, source='the checkpoint',
           **model_args):
    """A timm model of a resolved `name`, fresh or holding the tensors of `state` (a plain
    state dict read from `source`). With a state, the model is built with the checkpoint's
    own class count, so the load is strict; the caller may replace the classifier after."""
    t = timm()
    if state is None:
        return t.create_model(name, pretrained=False, num_classes=num_classes, **model_args)
    try:
        return t.create_model(name, pretrained=True, num_classes=num_classes,
                              pretrained_cfg_overlay={'state_dict': state,
                                                      'num_classes': num_classes},
                              **model_args)
    except (RuntimeError, KeyError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        try:
            why = _misfit(name, dict(model_args, num_classes=num_classes), state, source)
        except Exception:  # the model itself cannot be built: timm's own message says why
            why = ''
        raise ValueError(why or f"{source} does not fit timm {name}: {first}") from None


def student(arch: str, num_classes: int, *, image_size: int, patch_size: int,
            drop_path: float, weights: str = '', new_head: bool = True, **_):
    """`timm:<name>` as a student: fresh, or started from `weights` (a checkpoint of this
    architecture, e.g. timm's pretrained weights kept locally; another class count gets a new
    classifier, unless `new_head` is False). ViT-like models take inputs of any size
    (dynamic_img_size), so progressive resizing and validation at another side work. The
    arguments the model was created with are kept on it (`timm_args`) and recorded by the
    export."""
    name = resolve(arch[len(PREFIX):])
    args = {'drop_path_rate': drop_path} if drop_path else {}
    args.update({k: v for k, v in (('img_size', image_size), ('patch_size', patch_size)) if v})
    state = plain_state_dict(load_data(weights)) if weights else None
    classes = checkpoint_classes(name, state) if state is not None else num_classes
    source = weights or 'the checkpoint'
    try:
        model = create(name, classes, state, source, dynamic_img_size=True, **args)
        args['dynamic_img_size'] = True
    except TypeError as e:  # a model without that argument (CNNs take any size)
        if 'dynamic_img_size' not in str(e):
            raise ValueError(f"timm {name}: {e}") from None
        try:
            model = create(name, classes, state, source, **args)
        except TypeError as e:
            given = [f"--model.{key}" for key, arg in (('image_size', 'img_size'),
                                                       ('patch_size', 'patch_size'))
                     if arg in args]
            raise ValueError(f"timm {name} takes no {' or '.join(given) or 'such argument'} "
                             f"(they size ViT-like models): {e}") from None
    fresh = []
    if classes != num_classes and not new_head:
        heads = [f"{k} {tuple(state[k].shape)}" for head in _classifiers(pretrained_config(name))
                 for k in (head + '.weight', head + '.bias') if k in state]
        raise ValueError(f"{weights} holds a classifier for {classes} classes "
                         f"({', '.join(heads)}); the data set has {num_classes}")
    if classes != num_classes:  # timm's reset knows each model's classifiers (DeiT-distilled: 2)
        model.reset_classifier(num_classes)
        fresh = [k for head in _classifiers(pretrained_config(name))
                 for k in (head + '.weight', head + '.bias') if k in model.state_dict()]
        print(f"note: started from {weights}; new classifier for {num_classes} classes "
              f"(the checkpoint has {classes}): {', '.join(fresh)}", file=sys.stderr)
    cfg = preprocessing(name)
    model.input_normalisation = (cfg['mean'], cfg['std'])
    model.timm_args = {'model_name': name, 'num_classes': num_classes, **args}
    return model


def teacher(name: str, path: str):
    """A timm model of `name` (with its tag, if any) holding the classifier checkpoint in
    `path` -> (model, preprocessing dict). The class count is the checkpoint's; the
    preprocessing is the pretrained configuration's for that name, and `model` names the timm
    model and tag it resolved to (recorded in labelled betons)."""
    name = resolve(name)
    state = plain_state_dict(load_data(path))
    classes = checkpoint_classes(name, state)
    if not classes:
        misfit = _misfit(name, {'num_classes': 0}, state, path)  # another architecture?
        if misfit:
            raise ValueError(misfit)
        heads = [h + '.weight' for h in _classifiers(pretrained_config(name))]
        raise ValueError(f"{path} holds no classifier for timm {name} (looked for "
                         f"{', '.join(heads) or 'none named by timm'}; its first keys: "
                         f"{list(state)[:4]}): a teacher must predict classes")
    model = create(name, classes, state, path)
    cfg = pretrained_config(name)
    full = name if '.' in name or not cfg.get('tag') else f"{name}.{cfg['tag']}"
    return model, dict(preprocessing(name), model=f'timm:{full}')
