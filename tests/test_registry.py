"""Registries: names and prefixes to builders, so that model and teacher families plug in."""
import numpy as np
import pytest
import torch
from torch import nn

from fkd_ffcv.models.students import MODELS, build_model
from fkd_ffcv.registry import Registry
from fkd_ffcv.labeling.teacher_specs import TEACHERS
from fkd_ffcv.labeling.teachers import Teacher


def test_exact_names_beat_prefixes_and_the_longest_prefix_wins():
    table = Registry('thing')
    table.register('timm:')(lambda: 'family')  # a plain name that happens to end in ':'
    table.register('timm:', prefix=True)(lambda: 'short')
    table.register('timm:vit', prefix=True)(lambda: 'long')
    assert table['timm:']() == 'family'
    assert table['timm:resnet50']() == 'short' and table['timm:vit_small']() == 'long'
    with pytest.raises(ValueError, match="unknown thing 'other'; known: timm:, timm:..."):
        table['other']
    with pytest.raises(ValueError, match='already registered'):
        table.register('timm:vit', prefix=True)(lambda: None)
    assert 'timm:x' in table and 'other' not in table
    assert Registry('thing', default=lambda: 'fallback')['anything']() == 'fallback'


@pytest.fixture
def toy_families():
    def build(arch, num_classes, *, width, **_):
        return nn.Sequential(nn.Conv2d(3, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(width, num_classes))

    def teacher(spec):
        from fkd_ffcv.labeling.teacher_specs import Preprocess
        torch.manual_seed(0)
        return build(spec, 4, width=8), Preprocess(input_size=16)

    MODELS.register('toy:', prefix=True)(build)
    TEACHERS.register('toy:', prefix=True)(teacher)
    yield
    MODELS.unregister('toy:')
    TEACHERS.unregister('toy:')


def test_model_and_teacher_families_plug_in_by_registering(toy_families):
    model = build_model('toy:any', 5, width=6, blurpool=True)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 5)
    teacher = Teacher('toy:small')
    probs = teacher.outputs(np.zeros((3, 16, 16, 3), np.uint8))
    assert teacher.num_classes == 4 and probs.shape == (3, 4)
    assert torch.allclose(probs.sum(1), torch.ones(3))


def test_the_torch_free_list_of_architectures_is_the_registrys():
    """option_checks.py checks names against defaults.STUDENT_ARCHS without importing torch."""
    from fkd_ffcv.defaults import STUDENT_ARCHS, STUDENT_PREFIXES
    assert MODELS.names() == sorted(STUDENT_ARCHS) + sorted(p + '...' for p in STUDENT_PREFIXES)


def test_the_torch_free_list_of_teacher_kinds_is_the_registrys():
    """option_checks.check_teacher_files finds a spec's file by defaults.TEACHER_KINDS without
    importing torch."""
    from fkd_ffcv.defaults import NAMED_TEACHER_KINDS, TEACHER_KINDS
    assert TEACHERS.names() == sorted(f'{kind}:...' for kind in TEACHER_KINDS)
    assert set(NAMED_TEACHER_KINDS) < set(TEACHER_KINDS)


def test_entry_point_specs_of_earlier_module_paths_still_load():
    """Betons, exports and recipes of earlier versions name entry points by the module paths
    of their day (`fkd_ffcv.teachers:efficientnet_lite0`); fkd_ffcv/moved.py serves them."""
    from fkd_ffcv.labeling import teacher_specs, teachers
    from fkd_ffcv.models import exports, heads
    from fkd_ffcv.moved import forward
    from fkd_ffcv.registry import find_entry_point
    for spec in ('fkd_ffcv.teachers:efficientnet_lite0',
                 'fkd_ffcv.labeling.teachers:efficientnet_lite0'):
        assert find_entry_point(spec) is not None and find_entry_point(spec).__name__ == \
            'efficientnet_lite0'
    assert forward('teachers', 'efficientnet_lite0') is teachers.efficientnet_lite0
    assert forward('teachers', 'Preprocess') is teacher_specs.Preprocess
    assert forward('embeddings', 'ProjectionHead') is heads.ProjectionHead
    assert forward('models', 'load_weights') is exports.load_weights
    assert find_entry_point('fkd_ffcv.nowhere:model') is None
    assert find_entry_point('no_colon') is None
