"""Checks between options: named, before torch or ffcv loads, for both command lines."""
import subprocess
import sys

import pytest

from conftest import REPO
from fkd_ffcv.errors import DataError, OptionError
from fkd_ffcv.options import check, check_writing, options


def test_checking_options_loads_neither_torch_nor_ffcv(fashion_betons):
    code = (f"import sys; import fkd_ffcv.options as o; o.check(o.options({{'training.eval_only':"
            f" True, 'data.val_dataset': {str(fashion_betons[1])!r}}})); "
            f"print(sorted(m for m in ('torch', 'ffcv', 'numba') if m in sys.modules))")
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


def test_a_data_set_that_is_not_a_beton_is_a_data_error(fashion_betons, tmp_path):
    """exit status 1 (data), not 2 (options), and before torch loads."""
    train, val = fashion_betons
    done = train_cli((f'{train}.json', val))
    assert done.returncode == 1
    assert done.stderr == (f"error: {train}.json is not an FFCV beton (it is a JSON file; "
                           f"{train} is the beton it describes)\n")
    (tmp_path / 'cut.beton').write_bytes(val.read_bytes()[:100_000])
    with pytest.raises(DataError, match=r'cut.beton is truncated: 100,000 bytes of '):
        check(options({'training.eval_only': True, 'data.val_dataset': str(tmp_path / 'cut.beton')}))


def test_training_and_validation_betons_of_other_classes_are_refused(fashion_betons,
                                                                     raw_tree_beton):
    train, _ = fashion_betons
    val = raw_tree_beton[0]
    with pytest.raises(OptionError, match=rf"--data.train_dataset={train} and "
                                          rf"--data.val_dataset={val} have other classes "
                                          rf"\(class 0: 'T-shirt/top' against 'bird'\)"):
        check(options({'data.train_dataset': str(train), 'data.val_dataset': str(val),
                       'training.mode': 'plain'}))


def writing(tmp_path, **labels):
    data = {'source': 'fashion-mnist', 'root': '', 'split': 'all', 'out_dir': str(tmp_path),
            'name': ''}
    return data, {'beton': '', 'teacher': '', 'import_root': '', 'scale_min': 0.0,
                  'scale_max': 0.0, 'out': '', 'label_type': '', **labels}


def test_existing_outputs_need_overwrite(fashion_betons, tmp_path):
    data, labels = writing(tmp_path)
    check_writing(data, {}, labels)  # nothing there yet
    (tmp_path / 'fashion_mnist_val.beton').write_bytes(b'an earlier write')
    with pytest.raises(OptionError, match=rf"^{tmp_path}/fashion_mnist_val.beton exists: give "
                                          rf"--overwrite to replace it, or another "
                                          rf"--data.out_dir or --data.name$"):
        check_writing(data, {}, labels)
    check_writing(data, {'overwrite': True}, labels)
    # labelling writes <stem>_fkd.beton beside the beton by default, refused where it exists
    train, _ = fashion_betons
    data, labels = writing(tmp_path, beton=str(train), teacher='torchvision:resnet18')
    check_writing(data, {}, labels)
    labelled = train.with_name('train_fkd.beton')
    labelled.write_bytes(b'an earlier labelling')
    try:
        with pytest.raises(OptionError, match=rf"^{labelled} exists: give --overwrite to "
                                              rf"replace it, or another --labels.out$"):
            check_writing(data, {}, labels)
    finally:
        labelled.unlink()
    # labelling in place is an overwrite too
    with pytest.raises(OptionError, match=rf"^{train} exists \(written "):
        check_writing(data, {}, {**labels, 'out': str(train)})


def test_an_impossible_label_type_is_refused_before_the_teacher_loads(raw_tree_beton,
                                                                      tmp_path):
    data, labels = writing(tmp_path, beton=str(raw_tree_beton[0]), teacher='no_such:teacher',
                           label_type='marginal_smoothing_k5')
    with pytest.raises(OptionError, match=r"^--labels.label_type: marginal_smoothing_k5: k must "
                                          r"be in \[1, 2\] for 3 classes \(.*train.beton\); "
                                          r"without the option, marginal_smoothing_k2 is chosen"):
        check_writing(data, {}, labels)
    check_writing(data, {}, {**labels, 'label_type': 'marginal_renorm_k2'})
