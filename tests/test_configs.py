"""Every training recipe in the *_configs folders is valid for train_imagenet.py."""
import pytest
import yaml

from conftest import REPO
from fkd_ffcv.models import MODELS
from fkd_ffcv.options import options

RECIPES = sorted(p for p in REPO.glob('*_configs/*.yaml') if not p.name.startswith('write_'))


def test_the_recipes_are_there():
    names = {p.name for p in RECIPES}
    for epochs in (16, 24, 32, 40, 56, 88):
        assert f'rn50_fkd_{epochs}_epochs.yaml' in names
        assert f'rn18_fkd_{epochs}_epochs.yaml' in names
    assert {'rn50_fkd_300_epochs.yaml', 'deit_tiny_fkd_300_epochs.yaml'} <= names


@pytest.mark.parametrize('path', RECIPES, ids=lambda p: p.name)
def test_recipe_is_valid(path):
    flat = {f'{section}.{key}': value
            for section, values in yaml.safe_load(path.read_text()).items()
            for key, value in values.items()}
    opts = options(flat)
    assert opts['model']['arch'] in MODELS
    t = opts['training']
    k = opts['fkd']['num_crops'] if t['mode'] == 'fkd' else 1
    assert t['epochs'] % k == 0 and t['batch_size'] % k == 0
    r = opts['resolution']
    assert r['start_ramp'] <= r['end_ramp'] <= t['epochs']
    assert r['min_res'] % r['round_to'] == 0 and r['max_res'] % r['round_to'] == 0
