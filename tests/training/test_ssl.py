"""Self-supervised FKD (embeddings.py, probes.py, modes ssl and online_ssl): embedding records
are stored and replayed, training reads no labels, the probes measure what they should, and
the faults are named."""
import copy
import io
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from ffcv.fields import IntField
from ffcv.loader import OrderOption

from fkd_ffcv.commands.probe import probe as fkd_probe
from fkd_ffcv.data.beton import Beton
from fkd_ffcv.records.crops import cut_crops, sample_records
from fkd_ffcv.records.crops import record_index
from fkd_ffcv.records.colour import MOCO_V2
from fkd_ffcv.records.embeddings import decode, encode
from fkd_ffcv.models.heads import ProjectionHead, feature_model
from fkd_ffcv.training.losses import embedding_loss
from fkd_ffcv.errors import OptionError, TrainingError
from fkd_ffcv.data.fields import EMBEDDING_FIELD, FLAGS_FIELD, LABEL_FIELD
from fkd_ffcv.labeling.label import LabelingSettings, label_beton
from fkd_ffcv.loading.loaders import EmbeddingLoader
from fkd_ffcv.models.students import build_model
from fkd_ffcv.models.exports import load_weights
from fkd_ffcv.training import probes
from fkd_ffcv.training.probes import embed, knn_top1, linear_probe
from fkd_ffcv.labeling.teachers import Teacher
from fkd_ffcv.training.loop import Trainer
from fkd_ffcv.data.copying import copy_beton
from test_meal_v2 import export
from test_training import interrupt_at, read_log, run_options, two_process_run

RECORDS = 4


@pytest.fixture(scope='module')
def ssl_data(fashion_betons, tmp_path_factory):
    """(train beton with RECORDS embedding records per image, val beton, teacher spec, the
    same train beton with its labels scrambled): the embedding teacher is a random small
    ResNet's pooled features (32-d)."""
    out = tmp_path_factory.mktemp('ssl')
    spec = f"checkpoint:{export(out / 'teacher.pt', 10, width=8)}"
    labelled = out / 'train_ssl.beton'
    label_beton(fashion_betons[0], labelled, Teacher(spec, embedding='features'),
                LabelingSettings(num_records=RECORDS, scale=(0.35, 1.0), chunk_images=300),
                out / 'work', progress=False)
    beton = Beton(labelled)
    scrambled = np.random.default_rng(0).permutation(
        np.asarray(beton.field_metadata(LABEL_FIELD)).reshape(-1))
    copy = out / 'train_ssl_scrambled.beton'
    copy_beton(labelled, copy, {LABEL_FIELD: IntField()},
               [(int(v),) for v in scrambled],
               keep=[name for name in beton.field_names if name != LABEL_FIELD],
               progress=False)
    return labelled, fashion_betons[1], spec, copy


def ssl_options(ssl_data, folder, **overrides):
    train, val, spec, _ = ssl_data
    return run_options((train, val), folder, **{
        'training__mode': 'ssl', 'fkd__num_crops': 2, 'training__epochs': 4,
        'training__optimizer': 'adamw', 'training__weight_decay': 0.0, 'lr__lr': 0.003,
        'ssl__probe_epochs': 10, 'validation__every_passes': 0, **overrides})


@pytest.fixture(scope='module')
def ssl_run(ssl_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp('ssl_run') / 'run'
    trainer = Trainer(ssl_options(ssl_data, folder, validation__at_start=True))
    summary = trainer.run()
    return folder, trainer, summary


def test_embedding_records_are_the_teachers_unit_vectors_of_the_recorded_crops(ssl_data):
    train, _, spec, _ = ssl_data
    beton = Beton(train)
    info = beton.manifest.embeddings
    teacher = Teacher(spec, embedding='features')
    assert info.dim == teacher.dim == 32 and info.bytes_per_record == 9 + 32
    assert beton.manifest.soft_labels is None
    for i in (0, 299, 599):
        pixels = beton.image(i)
        boxes, flips = sample_records(0, i, *pixels.shape[:2], RECORDS, (0.35, 1.0))
        exact = teacher.outputs(cut_crops(pixels, boxes, flips, 32, 'area'))
        stored = torch.from_numpy(np.array(beton.array(EMBEDDING_FIELD, i)))
        assert stored.dtype == torch.int8 and stored.abs().amax(1).eq(127).all()
        assert np.array_equal(np.array(beton.array(FLAGS_FIELD, i)) & 1, flips)
        assert ((decode(stored) * exact).sum(1) > 0.9999).all()  # cosine


def test_the_loader_replays_each_crops_stored_embedding(ssl_data):
    train, *_ = ssl_data
    beton = Beton(train)
    loader = EmbeddingLoader(train, 64, 2, resolution=32, seed=5, num_workers=1,
                             order=OrderOption.SEQUENTIAL, drop_last=False)
    loader.start_at(1)  # the pass that starts at epoch 2
    images, targets = next(iter(loader))
    assert images.shape == (64, 3, 32, 32) and targets.shape == (64, 32)
    for image in (0, 13, 31):
        for slot in range(2):
            r = record_index(5, 2, image, slot, RECORDS)
            stored = torch.from_numpy(np.array(beton.array(EMBEDDING_FIELD, image))[r])
            assert torch.equal(targets[2 * image + slot], decode(stored))


def test_the_ssl_student_trains_logs_the_probes_and_exports_its_head(ssl_data, ssl_run):
    folder, trainer, summary = ssl_run
    log = read_log(folder)
    assert [line['epoch'] for line in log] == [0, 1, 2, 3, 4]
    start, end = log[0], log[-1]
    for line in (start, end):
        assert 0 <= line['knn_top1'] <= 1 and 0 <= line['probe_top1'] <= 1
        assert line['val_images'] == 300
    assert 'train_top1' not in log[1] and 'top1' not in end  # no labels, no classifier
    assert log[-1]['loss'] < log[1]['loss']
    assert summary['knn_top1'] == end['knn_top1'] and summary['top1'] is None
    head = trainer.model.fc
    assert isinstance(head, ProjectionHead) and head.dim == 32 and head.hidden == 32
    model, _, classes = load_weights(folder / 'final_weights.pt')
    assert isinstance(model.fc, ProjectionHead) and len(classes) == 10
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), copy.deepcopy(trainer.model).float().eval()(x),
                              atol=1e-5)
        assert torch.allclose(model(x).norm(dim=1), torch.ones(3))
    # a supervised fine-tune starts from the backbone: the head is new, the rest loaded
    student = build_model('small_resnet', 10, width=8, depth=1,
                          weights=str(folder / 'final_weights.pt'))
    assert isinstance(student.fc, torch.nn.Linear) and student.fc.out_features == 10
    assert torch.equal(student.stem[0].weight, model.stem[0].weight)
    from fkd_ffcv.models.exports import check_start  # MEAL V2 must start from a classifier
    with pytest.raises(ValueError, match='is an ssl export: a backbone with a projection head'):
        check_start(folder / 'final_weights.pt', classes, {'arch': 'small_resnet'})


def test_the_ssl_mode_reads_no_labels(ssl_data, ssl_run, tmp_path):
    """One run on a copy whose labels are scrambled ends with the same weights."""
    train, val, _, scrambled = ssl_data
    other = Trainer(ssl_options((scrambled, val, None, None), tmp_path / 'run',
                                validation__at_start=True))
    other.run()
    _, trainer, _ = ssl_run
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(other.model.state_dict()[name], value), name
    # the probes read the scrambled labels, so they differ; the training loss does not
    assert [line['loss'] for line in other.history[1:]] == \
        [line['loss'] for line in trainer.history[1:]]


def test_an_interrupted_ssl_run_resumes_to_the_same_weights(ssl_data, ssl_run, tmp_path,
                                                            monkeypatch):
    folder = tmp_path / 'run'
    interrupt_at(monkeypatch, Trainer(ssl_options(ssl_data, folder, validation__at_start=True)),
                 lambda t: t.pass_steps[0] + 2)
    resumed = Trainer(ssl_options(ssl_data, folder, validation__at_start=True,
                                  training__resume=True))
    resumed.run()
    straight = ssl_run[1]
    for name, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    timing = ('seconds', 'crops_per_s', 'data_wait')
    assert [{k: v for k, v in line.items() if k not in timing} for line in read_log(folder)] \
        == [{k: v for k, v in line.items() if k not in timing} for line in read_log(ssl_run[0])]


def test_online_ssl_runs_the_teacher_on_every_batch_and_reads_no_labels(ssl_data, tmp_path,
                                                                       monkeypatch):
    train, val, spec, scrambled = ssl_data
    runs = []
    real = Teacher.forward
    for beton in (train, scrambled):
        trainer = Trainer(run_options((beton, val), tmp_path / beton.stem, **{
            'training__mode': 'online_ssl', 'fkd__teacher': spec, 'training__epochs': 2,
            'training__optimizer': 'adamw', 'training__weight_decay': 0.0, 'lr__lr': 0.003,
            'ssl__probe_epochs': 0, 'validation__every_passes': 0}))
        calls = []

        def counting(self, images, calls=calls):
            calls.append(len(images))
            return real(self, images)

        monkeypatch.setattr(Teacher, 'forward', counting)
        trainer.run()
        runs.append((trainer, calls))
    (first, calls), (second, _) = runs
    assert sum(calls) >= 2 * (600 // 64) * 64  # two epochs of batches (plus the shape check)
    assert first.train_loaders[1].images.colour is None
    coloured = Trainer(run_options((train, val), tmp_path / 'coloured', **{
        'training__mode': 'online_ssl', 'fkd__teacher': spec, 'ssl__colour': 'moco_v2'}))
    coloured.prepare()  # builds the loaders; the pixels are tests/loading's
    assert coloured.train_loaders[1].images.colour is MOCO_V2
    assert 'probe_top1' not in first.history[-1] and 'knn_top1' in first.history[-1]
    for name, value in first.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[name], value), name


def test_embedded_features_keep_each_images_label(ssl_data):
    """Features and labels of several batches stay aligned (FFCV reuses its label buffers)."""
    _, val, _, _ = ssl_data
    features, labels = embed(lambda images: images.float().mean((2, 3)), val, resolution=32,
                             ratio=1.0, batch_size=64, num_workers=1)
    stored = np.asarray(Beton(val).field_metadata(LABEL_FIELD)).reshape(-1)
    assert features.shape == (300, 3) and np.array_equal(labels.numpy(), stored)


def test_gathered_rows_come_back_in_sample_order(monkeypatch):
    """Rank r embeds samples r, r + W, ...; the gather puts every row back in its place."""
    total, world = 7, 2
    shards = [torch.arange(r, total, world) * 10 for r in range(world)]

    def all_gather(parts, padded):  # what every rank receives: each rank's padded shard
        for part, shard in zip(parts, shards):
            part.zero_()
            part[:len(shard)] = shard

    monkeypatch.setattr(probes.dist, 'all_gather', all_gather)
    for rank in range(world):
        assert torch.equal(probes.gather_rows(shards[rank], total, rank, world),
                           torch.arange(total) * 10)


def test_knn_and_probe_on_a_known_case():
    torch.manual_seed(0)
    centres = F.normalize(torch.randn(3, 16), dim=1)
    labels = torch.arange(3).repeat_interleave(50)
    points = F.normalize(centres[labels] + 0.05 * torch.randn(150, 16), dim=1)
    val_labels = torch.arange(3).repeat_interleave(10)
    val = F.normalize(centres[val_labels] + 0.05 * torch.randn(30, 16), dim=1)
    assert knn_top1(points, labels, val, val_labels, 3, k=5) == 1.0
    probe = linear_probe(points, labels, val, val_labels, 3, epochs=20, lr=0.1)
    assert probe['probe_top1'] == 1.0 and probe['probe_train_top1'] == 1.0
    # the vote is weighted by exp(similarity / T): one close neighbour of class 1 outvotes two
    # far ones of class 0 at T = 0.07, and loses to them when T makes the weights equal
    train = F.normalize(torch.tensor([[0.95, 0.05], [0.6, 0.8], [0.6, -0.8]]), dim=1)
    query = torch.tensor([[1.0, 0.0]])
    assert knn_top1(train, torch.tensor([1, 0, 0]), query, torch.tensor([1]), 2, k=3) == 1.0
    assert knn_top1(train, torch.tensor([1, 0, 0]), query, torch.tensor([0]), 2, k=3,
                    temperature=100.0) == 1.0
    # a column that never varies in training and barely does in validation is not blown up
    # by the standardisation (a BatchNorm's epsilon, not a clamp of the deviation)
    flat_train = torch.cat([points, torch.zeros(150, 1)], dim=1)
    flat_val = torch.cat([val, torch.full((30, 1), 0.01)], dim=1)
    assert linear_probe(flat_train, labels, flat_val, val_labels, 3, epochs=20)['probe_top1'] \
        == 1.0
    with pytest.raises(ValueError, match='at least 2 training images'):
        linear_probe(points[:1], labels[:1], val, val_labels, 3)
    # labels that features cannot tell apart: near chance
    shuffled = labels[torch.randperm(150)]
    assert linear_probe(points, shuffled, val, val_labels, 3, epochs=20)['probe_top1'] < 0.7


def test_the_loss_and_the_stored_form():
    torch.manual_seed(0)
    s, t = torch.randn(5, 8), torch.randn(5, 8)
    q = torch.softmax(F.normalize(t, dim=1) / 0.2, dim=1)
    expected = -(q * torch.log_softmax(F.normalize(s, dim=1) / 0.2, dim=1)).sum(1).mean()
    assert torch.allclose(embedding_loss(s, t, 0.2), expected)
    assert torch.allclose(embedding_loss(3 * s, t, 0.2), expected)  # norms do not count
    stored = encode(t)
    assert stored.dtype == torch.int8 and stored.abs().amax(1).eq(127).all()
    assert ((decode(stored) * F.normalize(t, dim=1)).sum(1) > 0.9999).all()
    with pytest.raises(ValueError, match='all zero, NaN or Inf'):
        encode(torch.zeros(2, 8))


def moco_checkpoint(path, drop=None, extra=None):
    """A MoCo v2-format checkpoint of a random ResNet-18 (head 512 -> 512 -> 128): the query
    and key encoders and the queue, as MoCo's main_moco.py saves them."""
    torch.manual_seed(3)
    model = torchvision.models.resnet18()
    model.fc = ProjectionHead(512, 512, 128)
    state = {}
    for name, value in model.state_dict().items():
        state[f'module.encoder_q.{name}'] = value
        state[f'module.encoder_k.{name}'] = value.clone()
    state['module.queue'] = torch.randn(128, 64)
    state['module.queue_ptr'] = torch.zeros(1, dtype=torch.long)
    if drop:
        del state[f'module.encoder_q.{drop}']
    if extra:
        state[f'module.encoder_q.{extra}'] = torch.zeros(1)
    torch.save({'epoch': 800, 'arch': 'resnet18', 'state_dict': state}, path)
    return model.eval()


def test_a_moco_checkpoint_is_an_embedding_teacher(tmp_path):
    model = moco_checkpoint(tmp_path / 'moco.pth.tar')
    spec = f'moco:resnet18:{tmp_path}/moco.pth.tar'
    teacher = Teacher(spec, embedding='auto', input_size=32)
    assert teacher.dim == 128 and teacher.num_classes is None
    crops = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    with torch.no_grad():
        expected = model((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))
    got = teacher.outputs(crops)
    assert torch.allclose(got, expected, atol=1e-5) and torch.allclose(got.norm(dim=1),
                                                                       torch.ones(4))
    assert Teacher(spec, embedding='features', input_size=32).dim == 512
    # any other kind embeds its pooled features: a torchvision classifier's 512
    assert Teacher('torchvision:resnet18', embedding='auto', input_size=32).dim == 512


def test_moco_checkpoint_faults_are_named(tmp_path):
    moco_checkpoint(tmp_path / 'missing.pth', drop='layer1.0.conv1.weight')
    with pytest.raises(ValueError, match=r"missing \['layer1.0.conv1.weight'\]"):
        Teacher(f'moco:resnet18:{tmp_path}/missing.pth', embedding='auto')
    moco_checkpoint(tmp_path / 'extra.pth', extra='fc.3.weight')
    with pytest.raises(ValueError, match=r"unexpected \['fc.3.weight'\]"):
        Teacher(f'moco:resnet18:{tmp_path}/extra.pth', embedding='auto')
    torch.save({'state_dict': torchvision.models.resnet18().state_dict()}, tmp_path / 'p.pth')
    with pytest.raises(ValueError, match='not a MoCo checkpoint: no module.encoder_q'):
        Teacher(f'moco:resnet18:{tmp_path}/p.pth', embedding='auto')


def test_a_teacher_that_yields_no_embedding_is_named(tmp_path):
    scripted = torch.jit.script(torchvision.models.resnet18(num_classes=3).eval())
    scripted.save(str(tmp_path / 't.pt'))
    with pytest.raises(ValueError, match=r'teacher torchscript:.*t.pt yields no embedding'):
        Teacher(f'torchscript:{tmp_path}/t.pt', embedding='features')
    with pytest.raises(ValueError, match='yields no embedding: its output is'):
        Teacher('test_ssl:feature_maps', embedding='projection', input_size=32)
    with pytest.raises(ValueError, match='one model, not an ensemble'):
        Teacher(f'torchscript:{tmp_path}/t.pt,torchscript:{tmp_path}/t.pt', embedding='auto')
    with pytest.raises(ValueError, match='yields no embedding'):
        feature_model(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), 'that model')
    with pytest.raises(ValueError, match='1-dimensional embedding: its softmax is constant'):
        Teacher('test_ssl:one_number', embedding='projection', input_size=32)


def feature_maps():
    """An entry point whose output is a feature map, not one vector per image."""
    return torch.nn.Conv2d(3, 4, 3)


def one_number():
    """An entry point whose output is one number per image."""
    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(3, 1))


def test_dimension_and_record_faults_are_named_before_training(ssl_data, labelled_jpeg_beton,
                                                               tmp_path):
    with pytest.raises(OptionError, match='--ssl.dim=7: .* the 32 dimensions of the teacher '
                                          'embeddings in .*train_ssl.beton'):
        Trainer(ssl_options(ssl_data, tmp_path / 'a', ssl__dim=7))
    train, val, spec, _ = ssl_data
    with pytest.raises(TrainingError, match='--ssl.dim=7: .* 32 dimensions of the embeddings '
                                            'of --fkd.teacher'):
        Trainer(run_options((train, val), tmp_path / 'b', training__mode='online_ssl',
                            fkd__teacher=spec, ssl__dim=7)).run()
    with pytest.raises(OptionError, match='ssl mode needs crop records with teacher embeddings'):
        Trainer(ssl_options((labelled_jpeg_beton, val, None, None), tmp_path / 'c'))
    with pytest.raises(OptionError, match='fkd mode needs crop records with soft labels, and '
                                          '.* holds teacher embeddings instead .* '
                                          '--training.mode=ssl'):
        Trainer(run_options((train, val), tmp_path / 'd', training__mode='fkd'))
    with pytest.raises(OptionError, match='--fkd.temperature=2.0: the self-supervised loss'):
        Trainer(ssl_options(ssl_data, tmp_path / 'f', fkd__temperature=2.0))
    with pytest.raises(OptionError, match="--ssl.embedding=features: ssl mode replays"):
        Trainer(ssl_options(ssl_data, tmp_path / 'g', ssl__embedding='features'))
    with pytest.raises(OptionError, match="--ssl.colour=moco_v2: ssl mode replays the colour "
                                          "its records store .*--labels.colour"):
        Trainer(ssl_options(ssl_data, tmp_path / 'h', ssl__colour='moco_v2'))
    with pytest.raises(OptionError, match="--ssl.colour=s2bnn: moco mode colours its views as "
                                          "--moco.colour says"):
        Trainer(run_options((train, val), tmp_path / 'i', training__mode='moco',
                            ssl__colour='s2bnn'))
    with pytest.raises(OptionError, match='--ssl.temperature=0.5: an option of the moco, '
                                          'online_ssl and ssl modes, not of fkd mode'):
        Trainer(run_options((labelled_jpeg_beton, val), tmp_path / 'e', training__mode='fkd',
                            ssl__temperature=0.5))


def test_probe_command_on_an_export_and_on_a_beton_without_labels(ssl_data, ssl_run, tmp_path):
    folder, trainer, summary = ssl_run
    train, val, _, _ = ssl_data
    out = io.StringIO()
    with redirect_stdout(out):
        assert fkd_probe([str(folder / 'final_weights.pt'), str(train), str(val),
                          '--epochs', '10']) == 0
    text = out.getvalue()
    assert 'k-NN top-1' in text and 'linear-probe top-1' in text and '32-d features' in text
    # the export is measured as the run validated it (side, ratio, filter, precision)
    assert f"k-NN top-1 {summary['knn_top1']:.2%} (k 20)" in text
    assert text.rstrip().endswith(f"{trainer.ctx.precision})")
    # --eval-only in ssl mode measures the same, from the checkpoint or the export
    for checkpoint in ('checkpoint.pt', 'final_weights.pt'):
        again = Trainer(ssl_options(ssl_data, folder, training__eval_only=True,
                                    training__checkpoint=str(folder / checkpoint))).run()
        assert (again['knn_top1'], again['probe_top1']) == (summary['knn_top1'],
                                                            summary['probe_top1'])
    unlabelled = tmp_path / 'unlabelled.beton'
    copy_beton(val, unlabelled, keep=[n for n in Beton(val).field_names if n != LABEL_FIELD],
               progress=False)
    err = io.StringIO()
    with redirect_stderr(err):
        assert fkd_probe([str(folder / 'final_weights.pt'), str(train), str(unlabelled)]) == 1
    assert f"{unlabelled} has no 'label' field: the linear probe and k-NN need" in err.getvalue()
    with pytest.raises(TrainingError, match=f"{unlabelled} has no 'label' field"):
        Trainer(ssl_options((train, unlabelled, None, None), tmp_path / 'y')).run()
    assert not (tmp_path / 'y' / 'checkpoint.pt').exists()  # refused before training
    with pytest.raises(OptionError, match='holds an embedding model .* --training.mode=ssl '
                                          '.* fkd-probe'):
        Trainer(run_options((train, val), tmp_path / 'x', training__eval_only=True,
                            training__checkpoint=str(folder / 'final_weights.pt'))).run()


def test_ssl_eval_only_of_a_classifier_names_its_mode_and_the_fix(ssl_data, tmp_path):
    """The classifier's checkpoint in ssl mode: one error naming the mode it was trained in
    (not an attribute that only training sets)."""
    train, val, spec, _ = ssl_data
    classifier = spec[len('checkpoint:'):]  # an export of a classifier of the data's classes
    with pytest.raises(OptionError, match=r"holds a classifier \(trained in a classifier mode"
                                          r"\), and --training.mode=ssl measures embedding "
                                          r"models: leave --training.mode=ssl out .* fkd-probe"):
        Trainer(ssl_options(ssl_data, tmp_path / 'z', training__eval_only=True,
                            training__checkpoint=classifier)).run()


def test_writing_options_for_embeddings(tmp_path):
    from fkd_ffcv.training.write_options import check_writing
    data = {'source': 'fashion-mnist', 'root': '', 'split': 'all'}
    labels = {'beton': '', 'out': '', 'teacher': '', 'import_root': '', 'scale_min': 0.0,
              'scale_max': 0.0, 'label_type': '', 'embedding': 'auto'}
    with pytest.raises(OptionError, match='--labels.embedding=auto .* give --labels.teacher'):
        check_writing(data, {}, labels)
    with pytest.raises(OptionError, match='--labels.label_type=full is a soft-label type'):
        check_writing(data, {}, {**labels, 'teacher': 'x:y', 'label_type': 'full'})
    with pytest.raises(OptionError, match='--labels.temperature=2.0: embeddings are stored'):
        check_writing(data, {}, {**labels, 'teacher': 'x:y', 'temperature': 2.0})
    with pytest.raises(OptionError, match='a MoCo checkpoint gives embeddings, not class '
                                          'scores; add --labels.embedding=auto'):
        check_writing(data, {}, {**labels, 'teacher': 'moco:resnet50:m.pth', 'embedding': ''})
    with pytest.raises(ValueError, match='give moco:<torchvision arch>:<checkpoint file>'):
        Teacher('moco:resnet50', embedding='auto')


def test_two_process_ssl_run_gathers_every_image_for_the_probes(ssl_data, tmp_path):
    train, val, _, _ = ssl_data
    folder = tmp_path / 'ddp'
    result = two_process_run((train, val), folder, 29541, '--training.mode=ssl',
                             '--fkd.num_crops=2', '--lr.peak_epoch=0.5',
                             '--training.optimizer=adamw', '--lr.lr=0.003',
                             '--training.weight_decay=0', '--ssl.probe_epochs=5')
    log = read_log(folder)
    assert result.stdout.count('k-NN top-1') == 1  # rank 0 reports
    assert log[-1]['val_images'] == 300
    # the ranks' features, gathered, give what one process measures on the export (the ranks
    # share averaged BatchNorm statistics before validating, so they embed with the export's)
    out = io.StringIO()
    with redirect_stdout(out):
        assert fkd_probe([str(folder / 'final_weights.pt'), str(train), str(val),
                          '--epochs', '5']) == 0
    text = out.getvalue()
    knn = float(text.split('k-NN top-1 ')[1].split('%')[0]) / 100
    probe = float(text.split('linear-probe top-1 ')[1].split('%')[0]) / 100
    assert abs(knn - log[-1]['knn_top1']) <= 1 / 300
    assert abs(probe - log[-1]['probe_top1']) <= 2 / 300
