"""The user-facing commands: write_dataset.py and python -m fkd_ffcv.commands.inspect_beton."""
import json
import re
import subprocess
import sys
import time

import pytest

from conftest import REPO, smooth_image, save
from fkd_ffcv.commands import inspect_beton as inspect


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
    result = run('-m', 'fkd_ffcv.commands.inspect_beton', str(out / 'fashion_mnist_val.beton'),
                 '--read', '--resolution=32', '--ratio=1', '--batch-size=512')
    assert result.returncode == 0, result.stderr
    assert '300 samples' in result.stdout and '10 classes' in result.stdout
    # one batch (it pays for numba's compilation): the rate is timed on a second pass
    assert re.search(r'read back 300 images at 32 px, labels match: [\d,]+ images/s with',
                     result.stdout)


def test_folder_source_with_yaml_config_and_skips(tmp_path):
    for label, name in enumerate(['a', 'b']):
        for i in range(3):
            save(tmp_path / 'photos' / 'train' / name / f'{i}.jpg',
                 smooth_image(label * 3 + i, 40, 50))
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
    (['--data.source=folder', '--data.root=/nonexistent'],
     '--data.root=/nonexistent: no such directory; a folder source is laid out as '
     '<root>/train/<class>/<image>'),
    (['--data.source=folder', '--data.root={tmp}'],
     '--data.root={tmp} has no train/ folder; a folder source is laid out as '
     '<root>/train/<class>/<image>'),
    (['--data.root={tmp}'], 'and --data.source is fashion-mnist (the default); for images '
                            'laid out as <root>/train/<class>/<image> (val likewise), the '
                            'source must be folder: --data.source=folder'),
    (['--labels.beton=missing.beton', '--labels.teacher=torchvision:resnet18:t.pt'],
     '--labels.beton=missing.beton: no such file'),
    (['--labels.import_root={tmp}/nope'], '--labels.import_root={tmp}/nope: no such directory'),
    (['--write.jpeg_qualty=80'], 'unknown option --write.jpeg_qualty; did you mean '
                                 '--write.jpeg_quality?'),
    (['--write.jpeg=80'], 'unknown option --write.jpeg; did you mean'),  # no abbreviations
    (['--config-file', 'nope.yaml'], 'error: --config-file nope.yaml: no such file'),
])
def test_bad_options_fail_at_once_with_status_2_and_a_message(args, message, tmp_path):
    """Before ffcv or torch load: well under 3 s (a second or so on a loaded 2-core machine)."""
    args = [a.replace('{tmp}', str(tmp_path)) for a in args]
    started = time.perf_counter()
    result = run('write_dataset.py', f'--data.out_dir={tmp_path}', *args)
    elapsed = time.perf_counter() - started
    assert result.returncode == 2, result.stderr
    assert message.replace('{tmp}', str(tmp_path)) in result.stderr
    assert 'Traceback' not in result.stderr and len(result.stderr.splitlines()) == 1
    assert elapsed < 3


def test_import_takes_every_record_of_the_files_by_default(fashion_dir, tmp_path):
    """FKD files of 20 records import without --labels.num_records (it used to default to
    500 and refuse them); asking for more than the files hold names the option."""
    import numpy as np
    import torch
    from fkd_ffcv.data.beton import Beton
    from fkd_ffcv.labeling.fkd_import import fkd_label_path
    out, _ = fashion_dir
    val = out / 'fashion_mnist_val.beton'
    rng = np.random.default_rng(0)
    for rel, label in zip(Beton(val).paths(), Beton(val).field_metadata('label')):
        path = fkd_label_path(tmp_path / 'fkd', rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = rng.uniform(0.3, 0.9, (2, 20))
        coords = np.stack([rng.uniform(0, 1 - h), rng.uniform(0, 1 - w), h, w], 1)
        torch.save([coords.astype(np.float16), rng.random(20) < 0.5,
                    np.full(20, int(label), np.int64)], path)
    done = run('write_dataset.py', f'--labels.beton={val}', f'--labels.out={tmp_path / "i.beton"}',
               f'--labels.import_root={tmp_path / "fkd"}')
    assert done.returncode == 0, done.stderr
    assert 'imported FKD soft labels' in done.stdout and '300 images' in done.stdout
    assert Beton(tmp_path / 'i.beton').manifest.soft_labels.num_records == 20
    done = run('write_dataset.py', f'--labels.beton={val}', f'--labels.out={tmp_path / "j.beton"}',
               f'--labels.import_root={tmp_path / "fkd"}', '--labels.num_records=500')
    assert done.returncode == 1
    assert '--labels.num_records=500: the FKD files hold 20 records per image' in done.stderr


def test_inspect_refuses_a_non_beton(fashion_dir, tmp_path, capsys):
    (tmp_path / 'x.beton').write_bytes(b'not a beton at all, just some bytes here')
    assert inspect.main([str(tmp_path / 'x.beton')]) == 1
    assert capsys.readouterr().err == (f"error: {tmp_path / 'x.beton'} is not an FFCV beton "
                                       f"(format version 28526 where FFCV writes 2; it starts "
                                       f"b'not a be')\n")
    assert inspect.main([str(tmp_path / 'missing.beton')]) == 1
    assert 'no such beton file' in capsys.readouterr().err
    val = fashion_dir[0] / 'fashion_mnist_val.beton'
    (tmp_path / 'cut.beton').write_bytes(val.read_bytes()[:3_000_000])
    assert inspect.main([str(tmp_path / 'cut.beton')]) == 1
    assert capsys.readouterr().err == (f"error: {tmp_path / 'cut.beton'} is truncated: 3,000,000 "
                                       f"bytes of {val.stat().st_size:,} (write it again)\n")


def test_labelling_a_file_that_is_not_a_beton_stops_before_the_teacher(fashion_dir):
    """The teacher (an entry point that does not exist) is never loaded: the beton is read
    first."""
    train = fashion_dir[0] / 'fashion_mnist_train.beton'
    done = run('write_dataset.py', f'--labels.beton={train}.json',
               '--labels.teacher=no_such_module:teacher')
    assert (done.returncode, done.stderr) == (1, f"error: {train}.json is not an FFCV beton (it "
                                                 f"is a JSON file; {train} is the beton it "
                                                 f"describes)\n")


def test_writing_again_needs_overwrite(tmp_path):
    args = ('write_dataset.py', f'--data.out_dir={tmp_path}', '--data.split=val',
            '--data.subset=20')
    assert run(*args).returncode == 0
    beton = tmp_path / 'fashion_mnist_val.beton'
    first = beton.read_bytes()
    again = run(*args)
    assert again.returncode == 2
    assert re.fullmatch(rf"error: {beton} exists \(written [^)]+\): give --overwrite to replace "
                        rf"it, or another --data.out_dir or --data.name\n", again.stderr)
    assert beton.read_bytes() == first
    done = run(*args, '--overwrite')
    assert done.returncode == 0 and f'wrote {beton}: 20 images' in done.stdout
    assert beton.stat().st_size < 2 * 2 ** 21 + 4096  # 2 MiB pages: a small set stays small


def test_label_an_existing_beton_with_a_teacher(fashion_dir, tmp_path, capsys):
    import torch
    import torchvision
    out, _ = fashion_dir
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / 't.pt')
    labelling = ('write_dataset.py', f'--labels.beton={out / "fashion_mnist_val.beton"}',
                 f'--labels.out={tmp_path / "val_fkd.beton"}',
                 f'--labels.teacher=torchvision:resnet18:{tmp_path / "t.pt"}',
                 '--labels.input_size=32', '--labels.num_records=4',
                 '--labels.label_type=marginal_renorm_k3')
    result = run(*labelling)
    assert result.returncode == 0, result.stderr
    assert (f"labelled {tmp_path / 'val_fkd.beton'}: 300 images x 4 crop records "
            f"(marginal_renorm_k3) by torchvision:resnet18:{tmp_path / 't.pt'}, from "
            f"{out / 'fashion_mnist_val.beton'}\n") in result.stdout  # no work folder named
    again = run(*labelling)
    assert again.returncode == 2 and again.stderr.startswith(
        f"error: {tmp_path / 'val_fkd.beton'} exists (written ")
    assert again.stderr.endswith("give --overwrite to replace it, or another --labels.out\n")
    # an estimate of the whole run comes once the teacher has done two batches (of 256)
    assert 'labelling estimate: 300 images x 4 records = 1,200 crops at' in result.stdout
    assert inspect.main([str(tmp_path / 'val_fkd.beton'), '--epochs=16']) == 0
    shown = capsys.readouterr().out
    assert '4 per image, marginal_renorm_k3 of 10 classes, 18.0 B per record' in shown
    assert 'each is reused about 4.0 times' in shown
    from fkd_ffcv.data.beton import Beton
    teacher = Beton(tmp_path / 'val_fkd.beton').manifest.soft_labels.teacher
    assert (teacher['precision'], teacher['device']) == ('fp32', 'cpu')  # the default: exact

    # labelling it again is refused with the ways on; the copy without records is one command
    result = run('write_dataset.py', f'--labels.beton={tmp_path / "val_fkd.beton"}',
                 f'--labels.out={tmp_path / "val_images.beton"}')
    assert result.returncode == 0, result.stderr
    assert 'without crop records (fields: image, label, path)' in result.stdout
    assert list(Beton(tmp_path / 'val_images.beton').fields) == ['image', 'label', 'path']
    result = run('write_dataset.py', f'--labels.beton={tmp_path / "val_images.beton"}',
                 f'--labels.out={tmp_path / "again.beton"}')
    assert result.returncode == 1 and 'holds no crop records' in result.stderr


# A file or folder the user may not read (the tests run as root, who reads anything: the
# refusal is stubbed where the commands meet it, numpy's header read and os.scandir).
DENY = ("import importlib, numpy, os, sys\n"
        "def deny(path, *args, **kwargs):\n"
        "    raise PermissionError(13, 'Permission denied', os.fspath(path))\n"
        "real = os.scandir\n"
        "numpy.fromfile = deny\n"
        "os.scandir = lambda path='.': deny(path) if 'secret' in os.fspath(path) else real(path)\n"
        "command = sys.argv.pop(1)\n"
        "sys.exit(getattr(importlib.import_module(f'fkd_ffcv.commands.{command}'), command)())\n")


def test_an_unreadable_beton_or_folder_is_one_line_naming_it(fashion_dir, tmp_path,
                                                             monkeypatch, capsys):
    import numpy
    train, val = (fashion_dir[0] / f'fashion_mnist_{split}.beton' for split in ('train', 'val'))
    denied = "Permission denied; check its permissions\n"
    done = run('-c', DENY, 'train', f'--data.train_dataset={train}',
               f'--data.val_dataset={val}', '--training.mode=plain')
    assert (done.returncode, done.stderr) == (1, f"error: {train}: {denied}")
    (tmp_path / 'secret' / 'train' / 'a').mkdir(parents=True)
    done = run('-c', DENY, 'write', '--data.source=folder',
               f'--data.root={tmp_path / "secret"}', f'--data.out_dir={tmp_path}')
    assert (done.returncode, done.stderr) == (1, f"error: {tmp_path / 'secret' / 'train'}: "
                                                 f"{denied}")
    def deny(path, *args, **kwargs):
        raise PermissionError(13, 'Permission denied', str(path))
    monkeypatch.setattr(numpy, 'fromfile', deny)
    assert inspect.main([str(val)]) == 1
    assert capsys.readouterr().err == f"error: {val}: {denied}"
