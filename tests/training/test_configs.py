"""Every recipe in the *_configs folders is valid for its command line: training recipes for
train_imagenet.py, write_*.yaml for write_dataset.py."""
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from fkd_ffcv.config import unknown_keys
from fkd_ffcv.models.students import check_arch
from fkd_ffcv.training.modes import MODES
from fkd_ffcv.training.options import PARAMS, options

RECIPES = sorted(p for p in [*REPO.glob('*_configs/*.yaml'), *REPO.glob('fkd_ffcv/*_configs/*.yaml')]
                 if not p.name.startswith('write_'))
WRITE_RECIPES = sorted(REPO.glob('*_configs/write_*.yaml'))


def test_the_recipes_are_there():
    names = {p.name for p in RECIPES}
    for epochs in (16, 24, 32, 40, 56, 88):
        assert f'rn50_fkd_{epochs}_epochs.yaml' in names
        assert f'rn18_fkd_{epochs}_epochs.yaml' in names
    assert {'rn50_fkd_300_epochs.yaml', 'deit_tiny_fkd_300_epochs.yaml'} <= names


@pytest.mark.parametrize('path', RECIPES, ids=lambda p: p.name)
def test_recipe_is_valid(path):
    known = [(section, key) for section, (_, params) in PARAMS.items() for key in params]
    assert unknown_keys(yaml.safe_load(path.read_text()), known) == []
    flat = {f'{section}.{key}': value
            for section, values in yaml.safe_load(path.read_text()).items()
            for key, value in values.items()}
    opts = options(flat)
    check_arch(opts["model"]["arch"])  # raises for an unknown one
    t = opts['training']
    mode = MODES[t['mode']]
    assert t['batch_size'] % mode.crops_per_image(opts) == 0
    assert sum(mode.pass_plan(opts)) == t['epochs']
    r = opts['resolution']
    assert r['start_ramp'] <= r['end_ramp'] <= t['epochs']
    assert r['min_res'] % r['round_to'] == 0 and r['max_res'] % r['round_to'] == 0


@pytest.mark.parametrize('path', WRITE_RECIPES, ids=lambda p: p.name)
def test_write_recipe_is_valid(path):
    """Every key of a writing recipe names an option of write_dataset.py (an unknown one is
    refused with exit 2 before anything runs: shown with a misspelt copy)."""
    bad = path.parent / f'.{path.stem}-misspelt.yaml'
    bad.write_text(path.read_text() + '\nwrite:\n  jpeg_qualty: 80\n')
    try:
        done = [subprocess.run([sys.executable, 'write_dataset.py', '--config-file', str(p),
                                '--data.split=val', '--data.source=folder',
                                '--data.root=/nonexistent'],
                               capture_output=True, text=True, cwd=REPO, timeout=60)
                for p in (path, bad)]
    finally:
        bad.unlink()
    assert done[0].returncode == 2 and '/nonexistent: no such directory' in done[0].stderr
    assert done[1].returncode == 2 and 'jpeg_qualty; did you mean write.jpeg_quality' in \
        done[1].stderr


def test_the_deit_recipe_is_fkds():
    """FKD's DeiT-Tiny recipe on timm's model: 1,024 crops per step over 8 processes."""
    raw = yaml.safe_load((REPO / 'deit_configs' / 'deit_tiny_fkd_300_epochs.yaml').read_text())
    opts = options({f'{s}.{k}': v for s, values in raw.items() for k, v in values.items()})
    m, t, lr = opts['model'], opts['training'], opts['lr']
    assert m['arch'] == 'timm:deit_tiny_patch16_224' and m['drop_path'] == 0.1
    assert (t['optimizer'], t['weight_decay'], t['epochs']) == ('adamw', 0.05, 300)
    assert (lr['lr'], lr['schedule'], lr['warmup_epochs']) == (0.002, 'cosine', 5)
    assert opts['fkd']['num_crops'] == 4 and t['batch_size'] * 8 == 1024


def test_the_sret_recipe_is_fkds():
    """FKD's SReT-LT recipe, with its single-crop warm-up and tail (5 x 1, 73 x 4, 3 x 1)."""
    from fkd_ffcv.training.modes import MODES
    raw = yaml.safe_load((REPO / 'sret_configs' / 'sret_lt_fkd_300_epochs.yaml').read_text())
    opts = options({f'{s}.{k}': v for s, values in raw.items() for k, v in values.items()})
    m, t, lr = opts['model'], opts['training'], opts['lr']
    assert (m['arch'], m['drop_path']) == ('sret_lt', 0.1)
    assert (t['optimizer'], t['weight_decay'], t['epochs']) == ('adamw', 0.05, 300)
    assert (lr['lr'], lr['schedule'], lr['warmup_epochs']) == (0.002, 'cosine', 5)
    assert lr['lr'] * lr['end_factor'] == pytest.approx(1e-5)
    assert MODES['fkd'].pass_plan(opts) == [1] * 5 + [4] * 73 + [1] * 3
    assert t['batch_size'] * 8 == 1024


@pytest.mark.parametrize('epochs', [180, 88])
def test_the_meal_v2_recipes_are_meal_v2s(epochs):
    """MEAL V2's optimiser and FKD variant's 64 images x 8 crops per step over 8 processes;
    K = 8 leaves 4 of 180 epochs to single-crop passes."""
    raw = yaml.safe_load((REPO / 'rn50_configs' /
                          f'rn50_meal_v2_fkd_{epochs}_epochs.yaml').read_text())
    opts = options({f'{s}.{k}': v for s, values in raw.items() for k, v in values.items()})
    t, lr, meal = opts['training'], opts['lr'], opts['meal']
    assert (t['mode'], t['optimizer'], t['momentum'], t['weight_decay']) == \
        ('meal_v2', 'sgd', 0.9, 0.0)
    assert (lr['lr'], lr['schedule'], lr['step_ratio']) == (0.01, 'step', 0.1)
    assert lr['step_length'] / epochs == pytest.approx(100 / 180, abs=0.01)
    assert opts['fkd']['num_crops'] == 8 and t['batch_size'] * 8 == 512
    assert opts['fkd']['temperature'] == 1.0 and meal['discriminator'] and \
        meal['disc_weight'] == 1.0 and meal['teachers'] == 2
    # MEAL V2's discriminator, gradient reversed and biases open (measured: docs/training.md)
    assert meal['disc_last_relu'] and meal['disc_lr_ratio'] == 1.0 and \
        meal['disc_gradient'] == 'reversed' and meal['disc_open_start'] and meal['disc_softmax']
    assert opts['model']['arch'].startswith('timm:resnet50') and opts['model']['weights']
    plan = MODES['meal_v2'].pass_plan(opts)
    assert plan == [8] * (epochs // 8) + [1] * (epochs % 8)


def test_the_ssl_recipes_are_s2_bnns():
    """S2-BNN's distillation-only facts: Adam (AdamW without decay) 3e-4, linear decay, tau
    0.2, 256 crops per step, 200 epochs at 224 px; the demo's recipe keeps the loss and the
    optimiser."""
    raw = yaml.safe_load((REPO / 'rn18_configs' / 'rn18_ssl_fkd_200_epochs.yaml').read_text())
    opts = options({f'{s}.{k}': v for s, values in raw.items() for k, v in values.items()})
    t, lr, ssl = opts['training'], opts['lr'], opts['ssl']
    assert (t['mode'], t['optimizer'], t['weight_decay'], t['epochs'], t['batch_size']) == \
        ('ssl', 'adamw', 0.0, 200, 256)
    assert (lr['lr'], lr['schedule'], lr['peak_epoch'], lr['end_factor']) == \
        (3e-4, 'cyclic', 0.0, 0.0)
    assert ssl['temperature'] == 0.2 and opts['model']['arch'] == 'resnet18'
    assert opts['resolution']['min_res'] == opts['resolution']['max_res'] == 224
    assert MODES['ssl'].pass_plan(opts) == [4] * 50
    small = yaml.safe_load((REPO / 'fkd_ffcv' / 'small_configs' /
                            'fashion_mnist_ssl.yaml').read_text())
    assert small['training']['mode'] == 'ssl' and small['ssl']['temperature'] == 0.2
    assert small['training']['optimizer'] == 'adamw' and small['training']['weight_decay'] == 0


def test_the_published_fast_meal_v2_recipe_runs_fkds_schedule_with_meal_v2s_defaults():
    """FKD's MEAL V2 instructions: 200 epochs, the rate x0.1 at 100 and 180, MEAL V2's optimiser;
    the discriminator at the option defaults (MEAL V2's method), 25 passes of 8 crops."""
    from fkd_ffcv.training.schedules import lr_factor, step_epochs
    raw = yaml.safe_load((REPO / 'rn50_configs' / 'rn50_meal_v2_fkd_200_epochs.yaml').read_text())
    opts = options({f'{s}.{k}': v for s, values in raw.items() for k, v in values.items()})
    t, lr, meal = opts['training'], opts['lr'], opts['meal']
    assert (t['mode'], t['epochs'], t['optimizer'], t['momentum'], t['weight_decay']) == \
        ('meal_v2', 200, 'sgd', 0.9, 0.0)
    factor = lambda e: lr['lr'] * lr_factor(e, schedule=lr['schedule'], epochs=t['epochs'],
                                            step_ratio=lr['step_ratio'],
                                            decays=step_epochs(lr['step_epochs']))
    assert [factor(e) for e in (0, 99.9, 100, 179.9, 180, 199.9)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001])
    assert (meal['discriminator'], meal['disc_weight'], opts['fkd']['temperature']) == \
        (True, 1.0, 1.0)
    assert (meal['disc_gradient'], meal['disc_last_relu'], meal['disc_open_start'],
            meal['disc_softmax'], meal['disc_lr_ratio'], meal['teachers']) == \
        ('shared', True, False, False, 1.0, 2)
    assert MODES['meal_v2'].pass_plan(opts) == [8] * 25
    assert t['batch_size'] * 8 == 512
