"""Checks between options: named, before torch or ffcv loads, for both command lines."""
import subprocess
import sys

import pytest

from conftest import REPO
from fkd_ffcv.errors import OptionError
from fkd_ffcv.options import check, check_writing, options


def test_checking_options_loads_neither_torch_nor_ffcv():
    code = ("import sys; import fkd_ffcv.options as o; o.check(o.options({'training.eval_only': "
            "True, 'data.val_dataset': sys.executable})); "
            "print(sorted(m for m in ('torch', 'ffcv', 'numba') if m in sys.modules))")
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '[]'


def train_cli(betons, *options):
    train, val = betons
    return subprocess.run([sys.executable, str(REPO / 'train_imagenet.py'),
                           f'--data.train_dataset={train}', f'--data.val_dataset={val}',
                           '--training.mode=plain', *options],
                          capture_output=True, text=True, cwd=REPO)


def test_the_command_line_stops_on_a_bad_combination_with_the_options_named(fashion_betons):
    done = train_cli(fashion_betons, '--resolution.min_res=100')
    assert done.returncode == 2
    assert '--resolution.min_res=100 is not a multiple of --resolution.round_to=32' in done.stderr


@pytest.mark.parametrize('labels, message', [
    ({'beton': 'x.beton'}, '--labels.teacher or --labels.import_root'),
    ({'teacher': 't', 'import_root': 'r'}, 'choose one'),
    ({'teacher': 't', 'scale_min': 0.3}, 'needs --labels.scale_max'),
    ({'teacher': 't', 'scale_min': 0.5, 'scale_max': 0.4}, 'is above --labels.scale_max'),
])
def test_writing_options_that_do_not_fit_together(labels, message):
    data = {'source': 'fashion-mnist', 'root': '', 'split': 'all'}
    labels = {'beton': '', 'teacher': '', 'import_root': '', 'scale_min': 0.0,
              'scale_max': 0.0, **labels}
    with pytest.raises(OptionError, match=message):
        check_writing(data, {}, labels)


def test_labels_for_a_split_that_is_not_written_are_refused():
    with pytest.raises(OptionError, match='--data.split=val'):
        check_writing({'source': 'fashion-mnist', 'root': '', 'split': 'val'}, {},
                      {'beton': '', 'teacher': 't', 'import_root': '', 'scale_min': 0.0,
                       'scale_max': 0.0})


def test_eval_only_needs_only_the_validation_beton(fashion_betons):
    _, val = fashion_betons
    check(options({'training.eval_only': True, 'data.val_dataset': str(val)}))
    with pytest.raises(OptionError, match='--data.val_dataset is required'):
        check(options({'training.eval_only': True}))


def test_an_unknown_architecture_is_an_option_error(fashion_betons):
    """Architectures are known once models.py is loaded (its registry), still before any data
    or model is."""
    done = train_cli(fashion_betons, '--model.arch=resnet5')
    assert done.returncode == 2
    assert "--model.arch: unknown architecture 'resnet5'; known:" in done.stderr


def test_timm_names_and_options_are_checked_before_training(fashion_betons):
    done = train_cli(fashion_betons, '--model.arch=timm:resnet5o')
    assert done.returncode == 2
    assert "--model.arch: unknown timm model 'resnet5o'; close: resnet50" in done.stderr
    train, val = fashion_betons
    with pytest.raises(OptionError, match='--model.drop_path=0.1: not an option of resnet18'):
        check(options({'data.train_dataset': str(train), 'data.val_dataset': str(val),
                       'training.mode': 'plain', 'model.arch': 'resnet18',
                       'model.drop_path': 0.1}))


def test_a_teacher_file_that_is_not_there_is_named_at_once(fashion_betons):
    done = train_cli(fashion_betons, '--training.mode=online_kd',
                     '--fkd.teacher=torchvision:resnet18,checkpoint:nowhere/final_weights.pt')
    assert done.returncode == 2
    assert 'checkpoint:nowhere/final_weights.pt: nowhere/final_weights.pt: no such file' in \
        done.stderr
    with pytest.raises(OptionError, match='--labels.teacher=torchvision:resnet18:gone.pt'):
        check_writing({'source': 'fashion-mnist', 'root': '', 'split': 'all'}, {},
                      {'beton': '', 'teacher': 'torchvision:resnet18:gone.pt', 'import_root': '',
                       'scale_min': 0.0, 'scale_max': 0.0, 'out': ''})
