"""fkd-plot: runs' log.jsonl as one PNG (the demo draws with the same function); one-line
errors for what cannot be plotted."""
import json

import pytest

from fkd_ffcv.commands.plot import curves, main

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def run_folder(path, lines):
    path.mkdir(parents=True)
    (path / 'log.jsonl').write_text(''.join(json.dumps(line) + '\n' for line in lines))
    return path


def epochs(top1s, seconds=2.0, key='top1'):
    """Log lines as fkd-train writes them, a validation every second epoch."""
    out = []
    for e, top1 in enumerate(top1s, 1):
        line = {'epoch': e, 'loss': 2.0 / e, 'seconds': seconds, 'crops_per_s': 100.0}
        if e % 2 == 0:
            line.update({key: top1, 'val_loss': 1.5 / e})
        out.append(line)
    return out


def test_two_runs_make_one_png(tmp_path, capsys):
    fast = run_folder(tmp_path / 'runs' / 'fkd', epochs([0.3, 0.5, 0.6, 0.7], seconds=1.0))
    slow = run_folder(tmp_path / 'runs' / 'plain', epochs([0.2, 0.4, 0.5, 0.6]))
    out = tmp_path / 'compare.png'
    assert main([str(fast), str(slow), '--out', str(out)]) == 0
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    assert capsys.readouterr().out.strip() == f"plotted 2 run(s) into {out}"


def test_curves_sum_training_seconds_and_read_the_ssl_measures():
    c = curves([{'epoch': 0, 'seconds': 0.0, 'loss': 0.0, 'top1': 0.1},  # validation.at_start
                *epochs([0.3, 0.5], seconds=3.0)])
    assert c['accuracy'] == 'top1'
    assert (c['top1_seconds'], c['top1']) == ([0.0, 6.0], [10.0, 50.0])
    assert c['seconds'] == [3.0, 6.0]  # epoch 0 trained nothing: no training loss
    assert (c['val_seconds'], c['val_loss']) == ([6.0], [0.75])
    assert curves(epochs([0.3, 0.4], key='knn_top1'))['accuracy'] == 'knn_top1'


def test_the_demo_plots_its_students_with_it(tmp_path):
    from fkd_ffcv.commands.demo import STUDENTS, report
    folders = {name: run_folder(tmp_path / 'runs' / name, epochs([0.3, 0.5]))
               for name in STUDENTS}
    summary = {'top1': 0.5, 'top5': 0.9, 'train_seconds': 4, 'wall_seconds': 5,
               'crops_per_s': 100.0, 'precision': 'fp32'}
    report(tmp_path, {name: summary for name in STUDENTS}, folders)
    assert (tmp_path / 'results.png').read_bytes().startswith(PNG_SIGNATURE)


def test_same_folder_names_are_told_apart_by_their_paths(tmp_path):
    from fkd_ffcv.commands.plot import labels_of
    assert labels_of(['a/fkd', 'b/fkd', 'b/plain']) == ['a/fkd', 'b/fkd', 'plain']


@pytest.mark.parametrize('case, status, message', [
    ('no_log', 2, 'no log.jsonl in it: not a run folder of fkd-train'),
    ('missing', 2, 'no such run folder'),
    ('empty', 1, 'log.jsonl is empty: the run has not finished an epoch yet'),
    ('garbage', 1, 'log.jsonl, line 2: not a log line of fkd-train'),
    ('jpg', 2, 'the plot is a PNG; give a file name ending in .png'),
    ('no_parent', 2, 'to write it in (create it first)'),
    ('folder', 2, 'is a folder; give a file name ending in .png'),
    ('exists', 2, 'exists; give --overwrite to replace it, or another name'),
])
def test_what_cannot_be_plotted_is_one_line(tmp_path, capsys, case, status, message):
    good = run_folder(tmp_path / 'good', epochs([0.3, 0.5]))
    folder, out = good, tmp_path / 'plot.png'
    if case == 'no_log':
        folder = tmp_path / 'data'
        folder.mkdir()
    elif case == 'missing':
        folder = tmp_path / 'nowhere'
    elif case == 'empty':
        folder = run_folder(tmp_path / 'empty', [])
    elif case == 'garbage':
        folder = run_folder(tmp_path / 'garbage', epochs([0.3]))
        with open(folder / 'log.jsonl', 'a') as f:
            f.write('{"epoch": 2, "loss": 1.0, "seco\n')  # a line cut short
    elif case == 'jpg':
        out = tmp_path / 'plot.jpg'
    elif case == 'no_parent':
        out = tmp_path / 'no' / 'plot.png'
    elif case == 'folder':
        out = tmp_path / 'dir.png'
        out.mkdir()
    elif case == 'exists':
        out.write_bytes(b'an earlier plot')
    assert main([str(folder), '--out', str(out)]) == status
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err and len(err.strip().splitlines()) == 1
    if case == 'exists':
        assert out.read_bytes() == b'an earlier plot'
        assert main([str(folder), '--out', str(out), '--overwrite']) == 0
        assert out.read_bytes().startswith(PNG_SIGNATURE)
    elif case != 'folder':
        assert not out.exists()

