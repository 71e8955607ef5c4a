"""The user-facing commands: write_dataset.py and python -m fkd_ffcv.inspect."""
import json
import subprocess
import sys

import pytest

from conftest import REPO, smooth_image, save
from fkd_ffcv import inspect


def run(*args, timeout=120):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope='module')
def fashion_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp('fmnist')
    result = run('write_dataset.py', f'--data.out_dir={out}', '--data.subset=300')
    assert result.returncode == 0, result.stderr
    return out, result


def test_default_writes_fashion_mnist_train_and_val(fashion_dir):
    out, result = fashion_dir
    for split in ('train', 'val'):
        path = out / f'fashion_mnist_{split}.beton'
        assert f'wrote {path}: 300 images' in result.stdout
        manifest = json.loads((out / f'fashion_mnist_{split}.beton.json').read_text())
        assert manifest['num_samples'] == 300 and manifest['classes'][0] == 'T-shirt/top'
        assert manifest['source']['split'] == split


def test_inspect_reads_everything_back(fashion_dir):
    out, _ = fashion_dir
    result = run('-m', 'fkd_ffcv.inspect', str(out / 'fashion_mnist_val.beton'), '--read',
                 '--resolution=32', '--ratio=1')
    assert result.returncode == 0, result.stderr
    assert '300 samples' in result.stdout and '10 classes' in result.stdout
    assert 'read back 300 images at 32 px, labels match' in result.stdout


def test_folder_source_with_yaml_config_and_skips(tmp_path):
    for label, name in enumerate(['a', 'b']):
        for i in range(3):
            save(tmp_path / 'photos' / 'train' / name / f'{i}.jpg', smooth_image(label * 3 + i, 40, 50))
    (tmp_path / 'photos' / 'train' / 'b' / 'broken.jpg').write_bytes(b'\xff\xd8 nope')
    (tmp_path / 'cfg.yaml').write_text(
        f"data:\n  source: folder\n  root: {tmp_path / 'photos'}\n  split: train\n"
        f"  out_dir: {tmp_path / 'out'}\nwrite:\n  write_mode: jpg\n")
    failed = run('write_dataset.py', '--config-file', str(tmp_path / 'cfg.yaml'))
    assert failed.returncode == 1
    assert 'photos/train/b/broken.jpg: cannot decode' in failed.stderr
    assert not (tmp_path / 'out' / 'photos_train.beton').exists()

    skipped = run('write_dataset.py', '--config-file', str(tmp_path / 'cfg.yaml'),
                  '--write.on_error=skip')
    assert skipped.returncode == 0, skipped.stderr
    assert 'wrote' in skipped.stdout and '6 images' in skipped.stdout
    assert 'broken.jpg: cannot decode' in skipped.stdout


@pytest.mark.parametrize('args, message', [
    (['--write.jpeg_quality=101'], '--write.jpeg_quality'),
    (['--data.split=test'], '--data.split'),
    (['--data.source=folder'], '--data.root is required'),
    (['--data.source=folder', '--data.root=/nonexistent'], '/nonexistent/train: no such directory'),
])
def test_bad_options_exit_non_zero_with_a_message(args, message, tmp_path):
    result = run('write_dataset.py', f'--data.out_dir={tmp_path}', *args)
    assert result.returncode != 0 and message in result.stderr


def test_inspect_refuses_a_non_beton(tmp_path, capsys):
    (tmp_path / 'x.beton').write_bytes(b'not a beton at all, just some bytes here')
    assert inspect.main([str(tmp_path / 'x.beton')]) == 1
    assert 'error:' in capsys.readouterr().err
    assert inspect.main([str(tmp_path / 'missing.beton')]) == 1
    assert 'no such beton file' in capsys.readouterr().err


def test_label_an_existing_beton_with_a_teacher(fashion_dir, tmp_path, capsys):
    import torch
    import torchvision
    out, _ = fashion_dir
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / 't.pt')
    result = run('write_dataset.py', f'--labels.beton={out / "fashion_mnist_val.beton"}',
                 f'--labels.out={tmp_path / "val_fkd.beton"}',
                 f'--labels.teacher=torchvision:resnet18:{tmp_path / "t.pt"}',
                 '--labels.input_size=32', '--labels.num_records=4',
                 '--labels.label_type=marginal_renorm_k3')
    assert result.returncode == 0, result.stderr
    assert 'labelled' in result.stdout and '300 images x 4 crop records' in result.stdout
    assert inspect.main([str(tmp_path / 'val_fkd.beton'), '--epochs=16']) == 0
    shown = capsys.readouterr().out
    assert '4 per image, marginal_renorm_k3 of 10 classes, 18.0 B per record' in shown
    assert 'each is reused about 4.0 times' in shown
    from fkd_ffcv.beton import Beton
    teacher = Beton(tmp_path / 'val_fkd.beton').manifest['soft_labels']['teacher']
    assert (teacher['precision'], teacher['device']) == ('fp32', 'cpu')  # the default: exact
