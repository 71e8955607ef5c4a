"""The benchmarks package: every script imports as `benchmarks.<name>` (run with
`python -m benchmarks.<name>` from the repository root) without editing sys.path or reaching
into the demo; the timing table's pieces that a GPU run depends on (FKD's original data path
delivers on the trainer's device, results are written without matplotlib); every table names
its machine."""
import importlib
import json
import re

import pytest
import torch

from benchmarks import common, timing_table
from conftest import REPO
from fkd_ffcv.reporting import machine

SCRIPTS = sorted(p.stem for p in (REPO / 'benchmarks').glob('*.py') if p.stem != '__init__')


@pytest.mark.parametrize('name', SCRIPTS)
def test_scripts_import_as_modules_of_the_package(name):
    text = (REPO / 'benchmarks' / f'{name}.py').read_text()
    assert 'sys.path' not in text
    # the demo's data steps (fkd_ffcv.commands.demo_steps) are the package's; the demo is not
    assert not re.search(r'fkd_ffcv\.commands\.demo\b', text) and 'import demo' not in text
    importlib.import_module(f'benchmarks.{name}')


def test_interleaved_times_alternate_the_entries_after_a_warm_up():
    calls = []
    times = common.interleaved_times({'a': lambda: calls.append('a'),
                                      'b': lambda: calls.append('b')}, repeats=2)
    assert calls == ['a', 'b'] * 3
    assert {name: len(t) for name, t in times.items()} == {'a': 2, 'b': 2}


def test_original_data_path_delivers_on_the_trainers_device(labelled_jpeg_beton, tmp_path):
    files = common.export_original_files(labelled_jpeg_beton, tmp_path / 'files')
    # 'meta' stands for a GPU: a tensor left on the CPU would show
    path = common.OriginalFKDPath(*files, k=2, batch_images=4, side=16, workers=0,
                                  device='meta')
    batches = list(path)
    assert len(batches) == 3
    for images, classes, probs, hard in batches:
        assert {t.device.type for t in (images, classes, probs, hard)} == {'meta'}
        assert images.shape == (8, 3, 16, 16) and hard.shape == (8,)
        assert images.is_contiguous(memory_format=torch.channels_last)


def test_results_are_written_as_rows_finish_even_without_matplotlib(tmp_path, monkeypatch):
    def no_matplotlib(*args):
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(timing_table, 'plot', no_matplotlib)
    rows = [{'key': 'plain', 'name': 'plain', 'k': 1, 'seconds_per_epoch': 2.0,
             'crops_per_s': 100.0, 'data_wait': 0.1, 'precision': 'bf16', 'device': 'cuda:0',
             'wall_seconds': 9.0},
            {'key': 'fkd4', 'name': 'FKD, K=4', 'k': 4, 'seconds_per_epoch': 1.0,
             'crops_per_s': 200.0, 'data_wait': 0.0, 'precision': 'bf16', 'device': 'cuda:0',
             'wall_seconds': 20.0}]
    text = timing_table.table(rows, timing_table.PRESETS['gpu'], None, ['fkd8'])
    timing_table.save(tmp_path / 'out', 'timing_gpu', rows, text)
    written = (tmp_path / 'out' / 'timing_gpu.md').read_text()
    assert machine() in written.splitlines()[0]
    assert '| FKD, K=4 | 1.00 | 0.50x | 200 | 0% |' in written
    assert 'Not measured (time limit): FKD, K=8.' in written
    assert json.loads((tmp_path / 'out' / 'timing_gpu.json').read_text()) == rows
    assert not (tmp_path / 'out' / 'timing_gpu.png').exists()
    assert timing_table.estimate('fkd8', rows) == 2 * 8 * 9.0 / 2  # slowest epoch so far


def test_imagenet_shaped_photos_are_stored_as_imagenet_is(tmp_path):
    from PIL import Image
    if not common.LANDSCAPES.exists():
        pytest.skip(f"{common.LANDSCAPES} is not installed (make setup installs it)")
    assert common.make_photo_tree(tmp_path, 1, shape='imagenet') == 4
    sizes = sorted(Image.open(p).size for p in tmp_path.rglob('*.jpg'))
    assert sizes == [(375, 500), (375, 500), (500, 375), (500, 375)]


def test_quality_measures_of_the_resize_benchmark():
    import numpy as np
    from benchmarks.resize import psnr, ssim
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3)).astype(np.uint8)

    def noisy(sigma):
        noise = np.random.default_rng(1).normal(0, sigma, image.shape)
        return np.clip(image + noise, 0, 255).astype(np.uint8)
    assert psnr(image, image) == float('inf') and ssim(image, image) == pytest.approx(1.0)
    assert 25 < psnr(image, noisy(8)) < 35  # 8 grey levels of noise: about 30 dB
    assert 1 > ssim(image, noisy(8)) > ssim(image, noisy(32)) > 0.5


def test_own_data_rewrites_the_splits_an_interrupted_write_left(tmp_path):
    """The own-data benchmark redoes its write step until the val split exists; a train split
    left by an interrupted run must not stop it ("exists"): the step passes --overwrite."""
    import shlex
    from benchmarks.own_data import commands
    from fkd_ffcv.errors import OptionError
    from fkd_ffcv.training.write_options import check_writing
    (name, command), = [c for c in commands('python') if c[0] == 'write the photos']
    assert '--overwrite' in shlex.split(command)
    (tmp_path / 'photos' / 'train' / 'a').mkdir(parents=True)
    (tmp_path / 'photos' / 'val' / 'a').mkdir(parents=True)
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'photos_train.beton').write_bytes(b'left by an interrupted run')
    data = {'source': 'folder', 'root': str(tmp_path / 'photos'), 'split': 'all',
            'out_dir': str(tmp_path / 'data'), 'name': ''}
    labels = {'beton': '', 'teacher': '', 'import_root': '', 'scale_min': 0.0,
              'scale_max': 0.0, 'out': '', 'label_type': ''}
    with pytest.raises(OptionError, match='photos_train.beton exists'):
        check_writing(data, {'overwrite': False}, labels)
    check_writing(data, {'overwrite': True}, labels)  # what --overwrite sets


def test_the_meal_v2_table_counts_a_discriminator_dead_only_when_it_never_learnt(tmp_path):
    import math
    from benchmarks.meal_v2 import was_dead
    runs = {'dead': [(math.log(2), 0.5)] * 3, 'learnt': [(math.log(2), 0.5), (0.6, 0.7)],
            'none': []}
    for name, epochs in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / 'log.jsonl').write_text(''.join(
            json.dumps({'epoch': e, 'disc_loss': loss, 'disc_right': right}) + '\n'
            for e, (loss, right) in enumerate(epochs, 1)) or json.dumps({'epoch': 1}) + '\n')
    assert [was_dead({'folder': str(tmp_path / n)}) for n in runs] == [True, False, False]
