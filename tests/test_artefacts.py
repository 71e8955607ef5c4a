"""Artefacts written by the code before the subpackage layout (commit b0929b5) load with this
code: a labelled beton and its manifest, a teacher export, a finished and an interrupted run
folder (config.json, log, checkpoint, export) and the teacher specs they record, one by its
former module path. tests/artefacts/before_layout/README.md says how they were made."""
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from fkd_ffcv.data.beton import Beton
from fkd_ffcv.data.fields import SOFT_LABEL_FIELDS
from fkd_ffcv.records.crops import cut_crops
from fkd_ffcv.records.soft_labels import FLAG_FLIP, LabelSpec

ARCHIVE = Path(__file__).parent / 'artefacts' / 'before_layout' / 'before_layout.tar.xz'
TRAIN, VAL = 'data/fashion_mnist_train_fkd.beton', 'data/fashion_mnist_val.beton'


@pytest.fixture(scope='module')
def before(tmp_path_factory):
    """The artefacts unpacked; their recorded paths are relative to this folder."""
    folder = tmp_path_factory.mktemp('before_layout')
    with tarfile.open(ARCHIVE) as archive:  # the extraction filter exists from 3.10.12, 3.11.4
        archive.extractall(folder, **({'filter': 'data'} if hasattr(tarfile, 'data_filter')
                                      else {}))
    return folder


@pytest.fixture
def inside(before, monkeypatch):
    monkeypatch.chdir(before)
    return before


def test_the_beton_and_its_manifest_read(inside, capsys):
    from fkd_ffcv.commands import inspect_beton
    beton = Beton(TRAIN)
    assert len(beton) == 32 and len(Beton(VAL)) == 16
    assert beton.classes[:2] == ['T-shirt/top', 'Trouser']
    assert set(SOFT_LABEL_FIELDS) <= set(beton.field_names)
    labels = beton.manifest.soft_labels  # read only if its fingerprint is the beton's
    assert (labels.label_type, labels.num_records, labels.num_classes) == (
        'marginal_smoothing_k5', 4, 10)
    assert beton.image(0).shape == (16, 16, 3)
    assert inspect_beton.main([TRAIN]) == 0
    out = capsys.readouterr().out
    assert f'{TRAIN}: 32 samples' in out
    assert 'crop records: 4 per image, marginal_smoothing_k5 of 10 classes' in out
    assert 'teacher: checkpoint:teacher/final_weights.pt at 16 px (antialias)' in out


def test_a_loader_reads_a_batch_with_soft_labels(inside):
    from fkd_ffcv.loading.loaders import FKDLoader
    info = Beton(TRAIN).manifest.soft_labels
    spec = LabelSpec.parse(info.label_type, info.num_classes)
    loader = FKDLoader(TRAIN, batch_size=8, num_crops=1, resolution=16, device='cpu')
    images, classes, probs, labels = next(iter(loader))
    assert tuple(images.shape[:1]) == (8,) and 16 in tuple(images.shape)
    assert classes.shape[0] == probs.shape[0] == labels.shape[0] == 8
    assert classes.shape[1] == spec.k and int(classes.max()) < 10
    assert ((probs > 0) & (probs <= 1)).all()


def test_the_recorded_teacher_specs_resolve(inside):
    """The labelling teacher (an export of the code before) gives the stored top class of each
    record again; the run's teacher, named by its former module path, builds."""
    from fkd_ffcv.labeling import teachers
    from fkd_ffcv.moved import forward
    beton = Beton(TRAIN)
    recorded = beton.manifest.soft_labels.teacher
    teacher = teachers.Teacher(','.join(recorded['specs']), input_size=recorded['input_size'],
                      interpolation=recorded['interpolation'])
    assert teacher.dim == 10
    for i in range(4):
        rec = {name: np.array(beton.array(name, i)) for name in SOFT_LABEL_FIELDS}
        crops = cut_crops(beton.image(i), rec['fkd_boxes'], rec['fkd_flags'] & FLAG_FLIP > 0,
                          recorded['input_size'], recorded['interpolation'])
        assert np.array_equal(teacher.outputs(crops).argmax(1).numpy(),
                              rec['fkd_classes'][:, 0])
    spec = json.loads(Path('run/config.json').read_text())['fkd']['teacher']
    assert spec == 'fkd_ffcv.teachers:efficientnet_lite0'  # the former module path
    # Asked of fkd_ffcv.moved, which the import system consults for a former module (in a
    # checkout beside an editable install of an older tree, that tree's module may come first);
    # not built here: test_labeling builds it.
    module, _, function = spec.partition(':')
    assert forward(module.rpartition('.')[2], function) is teachers.efficientnet_lite0


def train(given: dict) -> tuple:
    """fkd-train's path (commands/train.py) for options given as {'section.key': value}:
    the run's recorded options, the fitted defaults, the check, the run. (exit status, summary
    printed)."""
    from fkd_ffcv.training.loop import main
    from fkd_ffcv.training.option_checks import check
    from fkd_ffcv.training.options import options
    from fkd_ffcv.training.run_options import fit_to_run, take_recorded
    opts = options(given)
    take_recorded(opts, set(given))
    fit_to_run(opts, set(given))
    check(opts)
    return main(opts)


def test_eval_only_of_the_run_folder_prints_its_recorded_top1(inside, capsys):
    shutil.copytree('run', 'run_eval')
    summary = json.loads(Path('run/summary.json').read_text())
    assert train({'training.eval_only': True, 'logging.folder': 'run_eval'}) == 0
    out = capsys.readouterr().out
    assert f"top-1 {summary['top1']:.2%}" in out and f"top-5 {summary['top5']:.2%}" in out


def test_resume_continues_an_interrupted_run_by_an_epoch(inside, capsys):
    """run_interrupted: a 2-epoch run stopped by Ctrl-C after its first epoch. Resumed where
    it stands (the checkpoint records its folder, and a resume keeps every option)."""
    assert train({'training.resume': True, 'logging.folder': 'run_interrupted'}) == 0
    log = [json.loads(line) for line in
           Path('run_interrupted/log.jsonl').read_text().splitlines()]
    assert [line['epoch'] for line in log] == [1, 2]
    assert json.loads(Path('run_interrupted/summary.json').read_text())['epochs'] == 2
    assert Path('run_interrupted/final_weights.pt').is_file()
    assert 'fkd small_resnet: 2 epochs' in capsys.readouterr().out
