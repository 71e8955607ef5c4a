"""The installed commands: what `pip install .` gives a user (console scripts, the demo's recipes
inside the package), fkd-eval-teacher, interrupts that say what was kept (bars:
test_progress.py)."""
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp('wheel')
    built = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q',
                            '--no-build-isolation', '-w', str(out), str(REPO)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    return next(out.glob('fkd_ffcv-*.whl'))


def test_the_wheel_installs_commands_and_carries_the_demos_recipes(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = next(z.read(n).decode() for n in names if n.endswith('entry_points.txt'))
    for name in ('plain', 'fkd', 'online_kd', 'teacher', 'ssl'):
        assert f'fkd_ffcv/small_configs/fashion_mnist_{name}.yaml' in names
    for command in ('fkd-write = fkd_ffcv.commands.write:write',
                    'fkd-train = fkd_ffcv.commands.train:train',
                    'fkd-eval-teacher = fkd_ffcv.commands.eval_teacher:eval_teacher',
                    'fkd-probe = fkd_ffcv.commands.probe:probe',
                    'fkd-inspect = fkd_ffcv.commands.inspect_beton:main',
                    'fkd-plot = fkd_ffcv.commands.plot:main',
                    'fkd-demo = fkd_ffcv.commands.demo:command'):
        assert command in entry_points


def test_eval_teacher_scores_an_export_on_a_validation_beton(fashion_betons, tmp_path, capsys):
    import torch
    from fkd_ffcv.commands.eval_teacher import eval_teacher
    from fkd_ffcv.models.exports import save_weights
    from fkd_ffcv.models.students import build_model
    from fkd_ffcv.data.sources import FashionMNISTSource
    torch.manual_seed(0)
    arch = {'arch': 'small_resnet', 'width': 4, 'depth': 1}
    save_weights(tmp_path / 'w.pt', build_model(num_classes=10, **arch), arch,
                 FashionMNISTSource.classes, {'input_size': 32, 'interpolation': 'area',
                                              'mean': [0.5] * 3, 'std': [0.25] * 3})
    _, val = fashion_betons
    assert eval_teacher([f"checkpoint:{tmp_path / 'w.pt'}", str(val), '--ratio=1']) == 0
    line = capsys.readouterr().out
    assert 'top-1 ' in line and '(300 images at 32 px, ratio 1.000, area resize, no flip, fp32)' \
        in line  # an export without the run's validation settings: the teacher's own
    assert eval_teacher(['checkpoint:nowhere.pt', str(val)]) == 2
    assert eval_teacher([f"checkpoint:{tmp_path / 'w.pt'}", str(tmp_path / 'x.beton')]) == 2
    # a timm teacher: its own input size and, by default, its own crop fraction (crop_pct)
    import timm
    torch.save(timm.create_model('test_resnet', num_classes=10).state_dict(), tmp_path / 't.pth')
    assert eval_teacher([f"timm:test_resnet:{tmp_path / 't.pth'}", str(val),
                         '--batch-size=100']) == 0
    assert '(300 images at 160 px, ratio 0.950, ' in capsys.readouterr().out


def test_an_interrupted_labelling_says_what_was_kept(fashion_betons, tmp_path, monkeypatch,
                                                     capsys):
    from fkd_ffcv.commands.write import write
    from fkd_ffcv.labeling import label as labeling

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(labeling, 'label_beton', interrupted)
    train, _ = fashion_betons
    monkeypatch.setattr(sys, 'argv', ['fkd-write', f'--labels.beton={train}',
                                      '--labels.teacher=torchvision:resnet18',
                                      f'--labels.out={tmp_path / "out.beton"}'])
    assert write() == 130
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith('interrupted: labelling ') and 'same command resumes' in message


def test_an_interrupted_write_says_what_is_on_disk(tmp_path, monkeypatch, capsys):
    from fkd_ffcv.commands.write import write
    from fkd_ffcv.data import writer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, 'write_beton', interrupted)
    from fastargs.state import STATE  # a fresh option store (another test's values linger)
    monkeypatch.setitem(STATE, 'config', None)
    out = tmp_path / 'fashion_mnist_val.beton'
    argv = ['fkd-write', f'--data.out_dir={tmp_path}', '--data.split=val', '--data.subset=10']
    monkeypatch.setattr(sys, 'argv', argv)
    assert write() == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"interrupted: writing {out} stopped: no {out} was written, and nothing half-written "
        f"is left (betons written before it are complete); the same command writes it again "
        f"(with --overwrite where a beton of its names exists)")
    out.write_bytes(b'an earlier beton')
    STATE['config'] = None
    monkeypatch.setattr(sys, 'argv', argv + ['--overwrite'])
    assert write() == 130
    assert f"stopped: the earlier {out} is kept as it was, and nothing half-written" in \
        capsys.readouterr().err


def test_recipes_take_sections_or_dotted_keys_and_refuse_unknown_ones(tmp_path):
    from fkd_ffcv.training.options import recipe
    (tmp_path / 'a.yaml').write_text('training.epochs: 8\nmodel:\nlr: {lr: 0.05}\n')
    opts = recipe(tmp_path / 'a.yaml', {'lr.peak_epoch': 1.0})
    assert (opts['training']['epochs'], opts['lr']['lr'], opts['lr']['peak_epoch']) == \
        (8, 0.05, 1.0)
    assert recipe('plain')['training']['mode'] == 'plain'  # the demo's, from the package
    (tmp_path / 'b.yaml').write_text('training: {epoch: 4}\n')
    with pytest.raises(ValueError, match='training.epoch; did you mean training.epochs'):
        recipe(tmp_path / 'b.yaml')


@pytest.mark.parametrize('script', ['train_imagenet.py', 'write_dataset.py'])
def test_help_is_plain_text_that_fits_a_log(script):
    done = subprocess.run([sys.executable, script, '--help'], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.returncode == 0
    assert '\x1b' not in done.stdout and not any(ch in done.stdout for ch in '┌┐└┘│─')
    assert max(len(line) for line in done.stdout.splitlines()) <= 100
    assert 'checkpoint:<final_weights.pt>' in done.stdout  # the teacher kinds, listed


def test_former_import_paths_of_the_commands_and_options_still_resolve():
    """Console scripts installed before the commands were split name `fkd_ffcv.cli:train`;
    scripts and notebooks import fkd_ffcv.options and fkd_ffcv.recipes. (Asked of
    fkd_ffcv.moved directly: in a checkout beside an editable install of an older tree, the
    import system may find that tree's fkd_ffcv/cli.py first.)"""
    from fkd_ffcv.commands import eval_teacher, probe, train, write
    from fkd_ffcv.data.splits import drop_records
    from fkd_ffcv.moved import forward
    from fkd_ffcv.training import option_checks, options, run_options, write_options
    assert [forward('cli', name) for name in ('write', 'train', 'eval_teacher', 'probe',
                                              'drop_records')] == \
        [write.write, train.train, eval_teacher.eval_teacher, probe.probe, drop_records]
    assert [forward('options', name) for name in ('options', 'check', 'take_recorded',
                                                  'check_writing')] == \
        [options.options, option_checks.check, run_options.take_recorded,
         write_options.check_writing]
    assert forward('recipes', 'recipe') is options.recipe


def test_names_renamed_in_the_split_resolve_or_name_their_new_home():
    """A renamed function is the new one where its arguments stayed (through the former
    module's alias too, and through devices.py, still a module); where they changed, the
    error names its new home."""
    import importlib
    from fkd_ffcv import devices, reporting
    from fkd_ffcv.loading import ffcv_loader
    from fkd_ffcv.moved import forward
    from fkd_ffcv.training import evaluation, probes
    assert forward('teachers', 'evaluate') is evaluation.teacher_top_k
    assert forward('probes', 'evaluate') is probes.knn_and_probe_top1
    assert forward('ffcv_loader', 'pass_of') is ffcv_loader.first_epoch_of
    assert forward('ffcv_loader', 'pass_tag_query') is ffcv_loader.first_epoch_tag
    assert importlib.import_module('fkd_ffcv.probes').evaluate is probes.knn_and_probe_top1
    assert importlib.import_module('fkd_ffcv.probes').embed is probes.embed
    assert importlib.import_module('fkd_ffcv.ffcv_loader').pass_of is ffcv_loader.first_epoch_of
    assert [devices.machine, devices.cpu_model, devices.precision_of] == \
        [reporting.machine, reporting.cpu_model, reporting.precision_of]
    with pytest.raises(AttributeError, match=r'fkd_ffcv\.cli\.label is now fkd_ffcv\.labeling'):
        forward('cli', 'label')
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        devices.nothing
