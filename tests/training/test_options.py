"""Checks between options: named, before torch or ffcv loads, for both command lines."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO
from fkd_ffcv.errors import DataError, OptionError
from fkd_ffcv.training.option_checks import check
from fkd_ffcv.training.options import options
from fkd_ffcv.training.run_options import beton_samples, fit_to_run, take_recorded
from fkd_ffcv.training.write_options import check_writing


def test_checking_options_loads_neither_torch_nor_ffcv(fashion_betons):
    """The whole command-line path before training: the run's recorded options, the defaults
    fitted to the run, the checks (beton headers and architecture names included)."""
    train, val = (str(path) for path in fashion_betons)
    code = (f"import sys; import fkd_ffcv.training.options as o; "
            f"import fkd_ffcv.training.option_checks as c, fkd_ffcv.training.run_options as r; "
            f"opts = o.options({{'training.mode': "
            f"'plain', 'data.train_dataset': {train!r}, 'data.val_dataset': {val!r}, "
            f"'model.arch': 'resnet18', 'logging.folder': 'nowhere'}}); "
            f"r.take_recorded(opts, set()); r.fit_to_run(opts, set()); c.check(opts); "
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


def test_eval_only_needs_only_the_validation_beton_and_a_checkpoint(fashion_betons, tmp_path):
    _, val = fashion_betons
    with pytest.raises(OptionError, match=f"--eval-only: {tmp_path} holds no checkpoint.pt "
                                          f"\\(give --logging.folder of a run, or "
                                          f"--training.checkpoint\\)"):
        check(options({'training.eval_only': True, 'data.val_dataset': str(val),
                       'logging.folder': str(tmp_path)}))
    (tmp_path / 'checkpoint.pt').touch()
    check(options({'training.eval_only': True, 'data.val_dataset': str(val),
                   'logging.folder': str(tmp_path)}))
    with pytest.raises(OptionError, match=f"--data.val_dataset is required \\({tmp_path}/"
                                          f"config.json does not record it\\)"):
        check(options({'training.eval_only': True, 'logging.folder': str(tmp_path)}))
    with pytest.raises(OptionError, match=f"--training.checkpoint={tmp_path}/gone.pt: no such "
                                          f"checkpoint"):
        check(options({'training.eval_only': True,
                       'training.checkpoint': str(tmp_path / 'gone.pt')}))


def test_a_run_to_continue_is_named_before_the_data_it_would_give(tmp_path):
    """--eval-only or --resume of a folder that is not there: the folder is the fault, not the
    --data.val_dataset its config.json would have given."""
    for switch, fix in (('--eval-only', 'give --logging.folder of a run, or '
                                        '--training.checkpoint'),
                        ('--resume', 'nothing to resume; --logging.folder names the run')):
        done = subprocess.run([sys.executable, str(REPO / 'train_imagenet.py'), switch,
                               f'--logging.folder={tmp_path}/gone'], capture_output=True,
                              text=True, cwd=REPO)
        assert (done.returncode, done.stderr) == (
            2, f"error: {switch}: {tmp_path}/gone: no such run folder ({fix})\n")


def test_eval_only_and_resume_take_the_runs_recorded_options(fashion_betons, tmp_path):
    """What neither the command line nor a recipe gives comes from the run's config.json;
    what they give stays, and the command's own switches are never taken."""
    train, val = fashion_betons
    recorded = options({'data.train_dataset': str(train), 'data.val_dataset': str(val),
                        'training.mode': 'ssl', 'training.epochs': 4, 'lr.lr': 0.3,
                        'logging.folder': str(tmp_path / 'elsewhere')})
    (tmp_path / 'config.json').write_text(json.dumps(recorded))
    for switch, at in (({'training.eval_only': True}, {'logging.folder': str(tmp_path)}),
                       ({'training.resume': True}, {'logging.folder': str(tmp_path)}),
                       ({'training.eval_only': True},
                        {'training.checkpoint': str(tmp_path / 'final_weights.pt')})):
        opts = options({**switch, **at, 'lr.lr': 0.1})
        assert take_recorded(opts, {'lr.lr', *at}) == str(tmp_path / 'config.json')
        assert (opts['data']['val_dataset'], opts['training']['mode'],
                opts['training']['epochs'], opts['lr']['lr']) == (str(val), 'ssl', 4, 0.1)
        assert opts['training']['eval_only' if 'training.eval_only' in switch else 'resume']
        assert opts['logging']['folder'] == at.get('logging.folder', '')
    fresh = options({'logging.folder': str(tmp_path)})  # a new run takes nothing
    assert take_recorded(fresh, set()) is None and fresh['data']['val_dataset'] == ''


def test_short_runs_get_defaults_that_fit_and_given_values_are_named(fashion_betons,
                                                                      monkeypatch):
    train, val = fashion_betons  # 600 training images
    monkeypatch.setenv('WORLD_SIZE', '2')  # 300 per process
    base = {'data.train_dataset': str(train), 'data.val_dataset': str(val),
            'training.mode': 'plain', 'training.epochs': 1, 'logging.folder': 'nowhere'}
    opts = options(base)
    notes = fit_to_run(opts, set())
    check(opts)
    assert (opts['lr']['peak_epoch'], opts['training']['batch_size']) == (0.125, 300)
    assert len(notes) == 2 and notes[0].startswith('--lr.peak_epoch=0.125: the default 2') \
        and notes[1].startswith('--training.batch_size=300: the default 512')
    opts = options({**base, 'lr.peak_epoch': 2.0, 'training.batch_size': 512})
    assert fit_to_run(opts, {'lr.peak_epoch', 'training.batch_size'}) == []
    with pytest.raises(OptionError, match=r'--lr.peak_epoch=2.0 must come before the end of '
                                          r'the run \(--training.epochs=1\): set a smaller'):
        check(opts)
    opts['lr']['peak_epoch'] = 0.5
    with pytest.raises(OptionError, match=r'--training.batch_size=512: a pass over the 600 '
                                          r'images .* shared by 2 processes, .* set '
                                          r'--training.batch_size=300 or less'):
        check(opts)
    assert beton_samples(str(val)) == 300 and beton_samples(sys.executable) is None


def test_option_errors_exit_2_before_torch_with_one_line(fashion_betons, tmp_path):
    """Exit status 2 and one line, for what the command line can be told before anything is
    loaded: the batch against the beton's images, a folder that holds a run, nothing to
    resume, an unknown architecture."""
    (tmp_path / 'checkpoint.pt').touch()
    for options_, message in (
            (['--training.batch_size=1024'], '--training.batch_size=600 or less'),
            ([f'--logging.folder={tmp_path}'], 'already holds a run; continue it with --resume'),
            ([f'--logging.folder={tmp_path}/new', '--resume'], 'nothing to resume'),
            (['--model.arch=resnet5'], '--model.arch=resnet5: unknown architecture (did you '
                                       'mean resnet50?); known: resnet18'),
            (['--model.arch=nowhere:model'], '--model.arch=nowhere:model: unknown')):
        done = train_cli(fashion_betons, *options_)
        assert (done.returncode, done.stderr.count('\n')) == (2, 1), done.stderr
        assert message in done.stderr and done.stderr.startswith('error: ')


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
    (tmp_path / 'checkpoint.pt').touch()
    with pytest.raises(DataError, match=r'cut.beton is truncated: 100,000 bytes of '):
        check(options({'training.eval_only': True, 'logging.folder': str(tmp_path),
                       'data.val_dataset': str(tmp_path / 'cut.beton')}))


def test_training_and_validation_betons_of_other_classes_are_refused(fashion_betons,
                                                                     raw_tree_beton):
    train, _ = fashion_betons
    val = raw_tree_beton[0]
    message = (f"--data.train_dataset={train} and --data.val_dataset={val} have other classes "
               f"(class 0: 'T-shirt/top' against 'bird')")
    with pytest.raises(DataError, match=re.escape(message)):
        check(options({'data.train_dataset': str(train), 'data.val_dataset': str(val),
                       'training.mode': 'plain'}))
    done = train_cli((train, val), '--logging.folder=nowhere')
    assert (done.returncode, done.stderr) == (1, f"error: {message}: give betons written from "
                                                 f"the same data set\n")


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


def test_a_beton_without_records_names_where_labelling_writes(tmp_path):
    """fkd mode on the unlabelled x_train.beton: the labelled x_train_fkd.beton beside it is
    named as the beton to give; without one, the labelling command and where it writes."""
    from fkd_ffcv.defaults import CLASSES_FIELD
    from fkd_ffcv.data.manifest import records_missing
    beton, labelled = tmp_path / 'x_train.beton', tmp_path / 'x_train_fkd.beton'
    message = records_missing('fkd', str(beton), ['image', 'label'], CLASSES_FIELD)
    assert message.endswith(f"; label it with fkd-write --labels.beton={beton} "
                            f"--labels.teacher=... (it writes {labelled}), or use "
                            f"--training.mode=plain")
    labelled.touch()
    message = records_missing('fkd', str(beton), ['image', 'label'], CLASSES_FIELD)
    assert message.endswith(f"; labelling writes {labelled}: give "
                            f"--data.train_dataset={labelled}, or use --training.mode=plain")


def test_notes_print_once_under_torchrun(fashion_betons):
    """The fitted defaults' notes come from rank 0 only (training itself stubbed out)."""
    train, val = fashion_betons
    code = ("import sys; import fkd_ffcv.training.loop as t; t.main = lambda opts: 0; "
            "from fkd_ffcv.commands.train import train; sys.exit(train())")
    for rank, notes in (('0', 1), ('1', 0)):
        done = subprocess.run([sys.executable, '-c', code, f'--data.train_dataset={train}',
                               f'--data.val_dataset={val}', '--training.mode=plain',
                               '--training.batch_size=64', '--training.epochs=1',
                               '--logging.folder=nowhere'],
                              capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, 'RANK': rank})
        assert done.returncode == 0, done.stderr
        assert done.stderr.count('note: --lr.peak_epoch=0.125') == notes, done.stderr


def test_the_batch_fits_the_crops_per_image_the_plan_uses(labelled_jpeg_beton, raw_tree_beton,
                                                          monkeypatch):
    """A run shorter than K epochs (fkd.single_crop_phases) takes one crop per image in every
    pass: its batch need not be a multiple of K, nor leave K steps per pass."""
    from fkd_ffcv.training.run_options import largest_batch
    monkeypatch.setenv('WORLD_SIZE', '5')  # 12 images: 3 per process
    base = {'data.train_dataset': str(labelled_jpeg_beton),
            'data.val_dataset': str(raw_tree_beton[0]), 'training.mode': 'fkd',
            'fkd.num_crops': 4, 'training.epochs': 2, 'lr.peak_epoch': 0.5,
            'training.batch_size': 3, 'logging.folder': 'nowhere'}
    opts = options(base)  # passes of 1 crop: 3 crops a step, one step each
    assert largest_batch(opts) == 3
    check(opts)
    opts = options({**base, 'training.epochs': 4, 'fkd.single_crop_phases': False,
                    'training.batch_size': 4})  # one pass of 4 crops: too few images
    assert largest_batch(opts) == 0
    with pytest.raises(OptionError, match=r'has 12 images, too few for the 4 crops per image'):
        check(opts)


def test_step_epochs_are_checked_before_training(fashion_betons):
    train, val = fashion_betons
    base = {'data.train_dataset': str(train), 'data.val_dataset': str(val),
            'training.mode': 'plain', 'training.epochs': 4, 'lr.schedule': 'step',
            'logging.folder': 'nowhere'}
    check(options({**base, 'lr.step_epochs': '2,3'}))
    with pytest.raises(OptionError, match=r"--lr.step_epochs: '3,2': the epochs must be "
                                          r"positive and increasing"):
        check(options({**base, 'lr.step_epochs': '3,2'}))
    with pytest.raises(OptionError, match='--lr.step_epochs=2 is for --lr.schedule=step, not '
                                          'cosine'):
        check(options({**base, 'lr.schedule': 'cosine', 'lr.step_epochs': '2'}))
    with pytest.raises(OptionError, match='both place the steps: give one'):
        check(options({**base, 'lr.step_epochs': '2', 'lr.step_length': 1.0}))
