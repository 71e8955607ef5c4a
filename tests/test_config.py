"""Recipes (--config-file) and command lines are checked alike: an unknown section, key or
option is an error (exit status 2) naming it and its closest valid key."""
import subprocess
import sys

import pytest

from conftest import REPO
from fkd_ffcv.config import ConfigError, read_config_file, unknown_arguments, unknown_keys

KNOWN = [('training', 'epochs'), ('training', 'mode'), ('lr', 'lr'), ('lr', 'schedule')]

# A command line with one section, as the scripts declare theirs.
SCRIPT = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from fastargs import Param, Section
from fkd_ffcv.config import load_config
Section('training', 'the optimisation').params(epochs=Param(int, 'epochs', default=16),
                                               mode=Param(str, 'mode', default='fkd'))
config = load_config('test', aliases={{'--plain': '--training.mode=plain'}})
print(config['training.epochs'], config['training.mode'], sys.argv[1:])
"""


def cli(tmp_path, *args):
    (tmp_path / 'cli.py').write_text(SCRIPT)
    return subprocess.run([sys.executable, str(tmp_path / 'cli.py'), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)


def test_known_keys_pass_in_both_spellings():
    assert unknown_keys({'training': {'epochs': 4}, 'lr': {'lr': 0.1}}, KNOWN) == []
    assert unknown_keys({'training.epochs': 4, 'lr': {'schedule': 'step'}}, KNOWN) == []
    assert unknown_keys({}, KNOWN) == []


@pytest.mark.parametrize('recipe, message', [
    ({'training': {'epoch': 4}}, 'unknown key training.epoch; did you mean training.epochs?'),
    ({'training': {'epochz': 4}}, 'unknown key training.epochz; did you mean training.epochs?'),
    ({'trainingg': {'epochs': 4}}, 'unknown section trainingg; did you mean training?'),
    ({'training.epoch': 4}, 'unknown key training.epoch; did you mean training.epochs?'),
    ({'optimizer': {'lr': 1}}, 'unknown section optimizer; known: lr, training'),
    ({'training': 4}, 'training is a section: give its keys (training: {key: value}), not 4'),
])
def test_unknown_sections_and_keys_name_the_closest_valid_one(recipe, message):
    assert unknown_keys(recipe, KNOWN) == [message]


def test_a_name_cut_short_suggests_the_option_it_begins():
    known = [('write', 'max_pixels'), ('write', 'max_resolution'), ('write', 'jpeg_quality')]
    # difflib alone finds max_pixels more alike than max_resolution
    assert unknown_keys({'write': {'max_res': 256}}, known) == [
        'unknown key write.max_res; did you mean write.max_resolution?']
    assert unknown_arguments(['--write.max_res=256'], ['--write.max_pixels',
                                                       '--write.max_resolution']) == [
        'unknown option --write.max_res; did you mean --write.max_resolution?']
    assert unknown_keys({'write': {'max': 1}}, known) == [
        'unknown key write.max; did you mean write.max_pixels?']  # the most alike of those begun


def test_unknown_command_line_tokens_name_the_closest_option():
    options = ['--training.epochs', '--training.mode', '--config-file']
    assert unknown_arguments(['--training.epoch=4'], options) == [
        'unknown option --training.epoch; did you mean --training.epochs?']
    assert unknown_arguments(['--training.epoch', '4', 'stray'], options) == [
        'unknown option --training.epoch; did you mean --training.epochs?',
        "unexpected argument 'stray': options are --section.key=value"]
    assert unknown_arguments(['--zzz'], options) == ['unknown option --zzz (see --help)']


def test_config_files_are_read_as_fastargs_reads_them(tmp_path):
    (tmp_path / 'a.json').write_text('{"training": {"epochs": 3}}')
    (tmp_path / 'empty.yaml').write_text('# nothing set\n')
    (tmp_path / 'list.yaml').write_text('- 1\n- 2\n')
    (tmp_path / 'broken.yaml').write_text('training: {epochs: 4\n')
    assert read_config_file(tmp_path / 'a.json') == {'training': {'epochs': 3}}
    assert read_config_file(tmp_path / 'empty.yaml') == {}
    with pytest.raises(ConfigError, match='expected sections of keys'):
        read_config_file(tmp_path / 'list.yaml')
    with pytest.raises(ConfigError, match='neither JSON nor YAML'):
        read_config_file(tmp_path / 'broken.yaml')
    with pytest.raises(ConfigError, match='no such file'):
        read_config_file(tmp_path / 'missing.yaml')


def test_recipes_apply_in_order_and_the_command_line_wins(tmp_path):
    (tmp_path / 'a.yaml').write_text('training:\n  epochs: 4\n  mode: plain\n')
    (tmp_path / 'b.yaml').write_text('training.epochs: 8\n')
    done = cli(tmp_path, '--config-file', 'a.yaml')
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('4 plain')
    assert cli(tmp_path, '-C', 'a.yaml', '--config-file=b.yaml').stdout.startswith('8 plain')
    done = cli(tmp_path, '-C', 'a.yaml', '--training.epochs=12', '--training.mode=online_kd')
    assert done.stdout.startswith('12 online_kd')
    # aliases expand; the caller's sys.argv keeps its recipe files
    assert cli(tmp_path, '-C', 'a.yaml', '--plain').stdout.strip().endswith(
        "['-C', 'a.yaml', '--training.mode=plain']")


@pytest.mark.parametrize('content, message', [
    ('training:\n  epoch: 4\n', 'unknown key training.epoch; did you mean training.epochs?'),
    ('trainingg:\n  epochs: 4\n', 'unknown section trainingg; did you mean training?'),
    ('training:\n  epochz: 4\n', 'unknown key training.epochz; did you mean training.epochs?'),
])
def test_a_recipe_with_an_unknown_key_is_refused(tmp_path, content, message):
    (tmp_path / 'r.yaml').write_text(content)
    done = cli(tmp_path, '--config-file', 'r.yaml')
    assert done.returncode == 2 and done.stdout == ''
    assert done.stderr == f"error: r.yaml: {message}\n"


def test_a_wrong_value_is_named_where_it_was_given(tmp_path):
    (tmp_path / 'a.yaml').write_text('training:\n  epochs: two\n')
    (tmp_path / 'b.yaml').write_text('training.epochs: three\n')
    (tmp_path / 'c.yaml').write_text('training:\n  mode: plain\n')
    done = cli(tmp_path, '--config-file', 'a.yaml')
    assert (done.returncode, done.stderr) == (
        2, "error: a.yaml: key training.epochs: expected an int, got 'two'\n")
    done = cli(tmp_path, '-C', 'a.yaml', '-C', 'b.yaml', '-C', 'c.yaml')  # the last that sets it
    assert done.stderr == "error: b.yaml: key training.epochs: expected an int, got 'three'\n"
    done = cli(tmp_path, '-C', 'a.yaml', '--training.epochs', 'four')  # the command line wins
    assert done.stderr == "error: --training.epochs: expected an int, got 'four'\n"


def test_abbreviations_and_unknown_options_are_refused(tmp_path):
    done = cli(tmp_path, '--training.epoch=4')  # argparse took it for --training.epochs
    assert done.returncode == 2
    assert done.stderr == "error: unknown option --training.epoch; did you mean --training.epochs?\n"
    done = cli(tmp_path, '--plian')
    assert done.returncode == 2 and 'did you mean --plain?' in done.stderr


def test_a_missing_config_file_is_one_line(tmp_path):
    done = cli(tmp_path, '--config-file', 'nope.yaml')
    assert (done.returncode, done.stderr) == (2, "error: --config-file nope.yaml: no such file\n")


@pytest.mark.parametrize('script', ['train_imagenet.py', 'write_dataset.py'])
def test_both_command_lines_check_recipes_and_options(tmp_path, script):
    key = 'training.epoch' if script == 'train_imagenet.py' else 'write.jpeg_qualty'
    right = 'training.epochs' if script == 'train_imagenet.py' else 'write.jpeg_quality'
    section, name = key.split('.')
    (tmp_path / 'r.yaml').write_text(f'{section}:\n  {name}: 4\n')
    for args in (['--config-file', str(tmp_path / 'r.yaml')], [f'--{key}=4']):
        done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                              cwd=REPO, timeout=60)
        assert done.returncode == 2, done.stderr
        assert f'{key}; did you mean ' in done.stderr and right in done.stderr
        assert 'Traceback' not in done.stderr
