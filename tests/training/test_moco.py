"""MoCo v2 as a training mode (modes/moco.py, loaders.ViewsLoader): its views, one step against
InfoNCE written out by hand, a run that exports an embedding teacher and resumes exactly, and
the refusals."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from colour_reference import assert_within_rounding, torchvision_colour
from fkd_ffcv.data.beton import Beton
from fkd_ffcv.defaults import DEFAULT_RESIZE
from fkd_ffcv.errors import TrainingError
from fkd_ffcv.labeling.teachers import Teacher
from fkd_ffcv.loading.loaders import OrderOption, ViewsLoader
from fkd_ffcv.models.heads import ProjectionHead
from fkd_ffcv.models.students import build_model
from fkd_ffcv.records.colour import COLOUR_BYTES, MOCO_V2
from fkd_ffcv.records.crops import seeded_colour, seeded_crop
from fkd_ffcv.records.resample import resize_box
from fkd_ffcv.training.loop import Trainer
from fkd_ffcv.training.modes.moco import MoCoV2
from test_training import interrupt_at, read_log, run_options

SEED = 3


def moco_options(betons, folder, **overrides):
    return run_options(betons, folder, **{
        'training__mode': 'moco', 'training__epochs': 3, 'moco__queue': 448,
        'moco__bn_splits': 4, 'data__crop_scale_min': 0.2, 'lr__lr': 0.06,
        'ssl__probe_epochs': 10, 'validation__every_passes': 0, **overrides})


@pytest.fixture(scope='module')
def moco_run(fashion_betons, tmp_path_factory):
    folder = tmp_path_factory.mktemp('moco') / 'run'
    trainer = Trainer(moco_options(fashion_betons, folder, validation__at_start=True))
    return folder, trainer, trainer.run()


@pytest.mark.parametrize('colour', [None, MOCO_V2])
def test_views_are_seeded_crops_of_one_decoded_image_with_their_own_colour(raw_tree_beton,
                                                                          colour):
    path, _ = raw_tree_beton
    beton = Beton(path)
    loader = ViewsLoader(path, batch_size=5, views=2, resolution=16, seed=SEED, num_workers=2,
                         order=OrderOption.SEQUENTIAL, drop_last=False, colour=colour)
    for epoch in (0, 1):
        views = [torch.cat(v) for v in zip(*[[x.clone() for x in batch] for batch in loader])]
        assert [tuple(v.shape) for v in views] == [(len(beton), 3, 16, 16)] * 2
        assert all(v.is_contiguous(memory_format=torch.channels_last) for v in views)
        assert not torch.equal(views[0], views[1])
        for sample in range(len(beton)):
            pixels = beton.image(sample)
            for v in range(2):
                draw = epoch * 2 + v
                i, j, h, w, flip = seeded_crop(SEED, draw, sample, *pixels.shape[:2], 0.2, 1.0,
                                               3 / 4, 4 / 3)
                want = resize_box(pixels, (i, j, h, w), 16, DEFAULT_RESIZE, bool(flip))
                if colour is not None:
                    code = np.zeros(COLOUR_BYTES, np.uint8)
                    seeded_colour(SEED, draw, sample, *colour.values(), code)
                    want = torchvision_colour(want, code)
                got = views[v][sample].permute(1, 2, 0).numpy()
                assert_within_rounding(got, want)


def context(**moco):
    opts = {'training': {'seed': 0}, 'ssl': {'temperature': 0.2, 'head_hidden': 0},
            'moco': {'queue': 16, 'momentum': 0.9, 'bn_splits': 1, **moco}}
    return SimpleNamespace(opts=opts, world_size=1, rank=0, device=torch.device('cpu'),
                           autocast={'device_type': 'cpu', 'enabled': False})


def test_a_step_is_infonce_over_the_key_and_the_queue_then_the_keys_enter_it():
    torch.manual_seed(0)
    mode, ctx = MoCoV2(), context()
    mode.dim = 8
    query = mode.student(ctx, build_model('small_resnet', 10, width=8, depth=1))
    normalise = lambda x: (x / 255 - 0.5) / 0.25  # noqa: E731 (the key uses the model's own)
    mode.key_encoder(ctx)
    mode.key_normalise = normalise
    queue = mode.queue.clone()
    key_before = [p.clone() for p in mode.key.parameters()]
    for p in query.parameters():  # the query moved on since the key encoder was made
        p.data.add_(0.001)
    views = torch.randint(0, 256, (2, 4, 3, 16, 16), dtype=torch.uint8).float()
    views[1] = views[0]  # keys of the queries' own crops: each nearly its query (a hit),
    q = query(normalise(views[0]))
    mode.queue[5] = queue[5] = F.normalize(q[0].detach(), dim=0)  # but query 0 meets itself
    # queued: a miss (scores 5.0 against its key's 4.98; the others' keys 4.99 against <= 4.67)
    loss = mode.loss(ctx, q, views[1], views[0], None, 1.0)

    # by hand: the key encoder moves 10% of the way to the query first, then embeds the keys
    for before, now, target in zip(key_before, mode.key.parameters(), query.parameters()):
        assert torch.allclose(now, 0.9 * before + 0.1 * target.detach(), atol=1e-6)
    with torch.no_grad():
        k = mode.key(normalise(views[1]))  # one BN part: the shuffle changes nothing
    scores = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], 1) / 0.2
    assert torch.allclose(loss, F.cross_entropy(scores, torch.zeros(4, dtype=torch.long)),
                          atol=1e-5)
    assert torch.allclose(mode.queue[:4], k, atol=1e-6) and torch.equal(mode.queue[4:], queue[4:])
    assert mode.pointer == 4 and mode.steps == 1
    right = (scores.argmax(1) == 0).float().mean()  # instance top-1: the key scores highest
    assert float(right) == 0.75
    assert mode.step_metrics.shape == (1,) and float(mode.step_metrics) == float(right)
    loss.backward()
    assert all(p.grad is None for p in mode.key.parameters())  # the key learns by momentum only
    assert query.fc[0].weight.grad is not None


def test_the_keys_batchnorm_sees_parts_of_a_shuffled_batch():
    """With 2 parts, each key is what the key encoder gives its own part of the shuffled batch,
    back in the batch's order."""
    torch.manual_seed(0)
    mode, ctx = MoCoV2(), context(bn_splits=2)
    mode.dim = 8
    mode.student(ctx, build_model('small_resnet', 10, width=8, depth=1))
    key = mode.key_encoder(ctx)
    views = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8).float()
    with torch.no_grad():
        keys = mode.keys(ctx, key, views)
        whole = key(mode.key_normalise(views))
    order = torch.randperm(8, generator=torch.Generator().manual_seed(0))  # step 0, seed 0
    parts = order.tensor_split(2)
    with torch.no_grad():
        for part in parts:
            assert torch.allclose(keys[part], key(mode.key_normalise(views[part])), atol=1e-5)
    assert not torch.allclose(keys, whole, atol=1e-4)


def test_a_moco_run_reads_no_label_and_exports_an_embedding_teacher(moco_run):
    folder, trainer, summary = moco_run
    log = read_log(folder)
    assert [line['epoch'] for line in log] == [0, 1, 2, 3]
    assert 'train_top1' not in log[1] and 'top1' not in log[-1]
    # The queue starts as random unit vectors (easy negatives) and holds real keys after the
    # first epoch; from there, doing better than chance (a uniform guess among the key and
    # 448 negatives: loss ln 449, 1 in 449 right) shows the two views are being matched.
    # (the final loss ranged 5.74-5.96 over 5 seeds; the instance top-1 1.6/449-6.2/449, too
    # close to chance to test here: the step test checks how it is counted)
    assert log[-1]['loss'] < math.log(449) - 0.05
    assert 'instance_top1' in log[-1]
    assert 0 <= log[-1]['knn_top1'] <= 1 and 0 <= log[-1]['probe_top1'] <= 1
    head = trainer.model.fc
    assert isinstance(head, ProjectionHead) and head.dim == 128 and head.hidden == 8 * 4
    teacher = Teacher(f"checkpoint:{folder / 'final_weights.pt'}", embedding='auto')
    assert teacher.dim == 128
    # the views loader reads the images only: no label pipeline
    assert set(trainer.train_loaders[1].loader.pipeline_specs) == {'image'}


def test_an_interrupted_moco_run_resumes_to_the_same_weights(fashion_betons, moco_run,
                                                             tmp_path, monkeypatch):
    """The key encoder, the queue, its pointer and the step count are checkpointed."""
    folder = tmp_path / 'run'
    interrupt_at(monkeypatch,
                 Trainer(moco_options(fashion_betons, folder, validation__at_start=True)),
                 lambda t: t.pass_steps[0] + 2)
    resumed = Trainer(moco_options(fashion_betons, folder, validation__at_start=True,
                                   training__resume=True))
    resumed.run()
    straight = moco_run[1]
    for name, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    assert torch.equal(resumed.mode.queue, straight.mode.queue)


@pytest.mark.parametrize('overrides, message', [
    ({'moco__queue': 100}, r'--moco.queue=100 must be a multiple of the images per step \(64'),
    ({'moco__queue': 576}, r'--moco.queue=576: the queue would hold keys of the step.s own '
                           r'images \(600 images .* give at most 512'),
    ({'training__mixup_alpha': 0.2}, 'mixes no images'),
])
def test_moco_refusals(fashion_betons, tmp_path, overrides, message):
    with pytest.raises(TrainingError, match=message):
        Trainer(moco_options(fashion_betons, tmp_path / 'run', **overrides)).run()


def test_under_ddp_every_processs_keys_enter_the_queue_in_rank_order(monkeypatch):
    """world_size 2 with torch.distributed's all_gather stubbed: rank 1's keys (here the
    negated ones) follow this rank's."""
    import torch.distributed as dist
    mode, ctx = MoCoV2(), context()
    ctx.world_size = 2
    mode.dim = 8
    mode.student(ctx, build_model('small_resnet', 10, width=8, depth=1))
    mode.key_encoder(ctx)
    keys = F.normalize(torch.randn(4, 8), dim=1)

    def all_gather(outputs, tensor):
        outputs[0].copy_(tensor)
        outputs[1].copy_(-tensor)

    monkeypatch.setattr(dist, 'all_gather', all_gather)
    mode.enqueue(ctx, keys)
    assert torch.equal(mode.queue[:8], torch.cat([keys, -keys])) and mode.pointer == 8
    mode.enqueue(ctx, keys)
    assert mode.pointer == 0  # 16 keys: the queue is full, and goes round


def test_the_export_is_measured_by_moco_s_linear_classification(moco_run, fashion_betons):
    """fkd-probe --protocol lincls: a Linear layer trained on augmented crops through the
    frozen export (its weights and BatchNorm statistics untouched), measured on centre crops."""
    import io
    from contextlib import redirect_stdout
    from fkd_ffcv.commands.probe import probe as fkd_probe
    from fkd_ffcv.models.exports import load_weights
    folder, _, _ = moco_run
    before = {k: v.clone() for k, v in load_weights(folder / 'final_weights.pt')[0]
              .state_dict().items()}
    out = io.StringIO()
    with redirect_stdout(out):
        assert fkd_probe([str(folder / 'final_weights.pt'), *map(str, fashion_betons),
                          '--protocol', 'lincls', '--epochs', '4', '--scale-min', '0.35',
                          '--batch-size', '64', '--lr', '3']) == 0
    text = out.getvalue()
    top1 = float(text.split('linear classification top-1 ')[1].split('%')[0]) / 100
    # 10 classes: chance is 0.1. 26.7%-36.0% over 5 MoCo seeds x 2 probe seeds at lr 3; at
    # MoCo's lr 30 (set for 2048-d ImageNet features) 15.3%-30.7%, too spread to test
    assert top1 > 0.2, text
    assert '4 epochs, lr 3;' in text and '300 images at 32 px' in text
    after = load_weights(folder / 'final_weights.pt')[0].state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_under_ddp_the_keys_are_embedded_in_another_processs_slice_and_come_back(monkeypatch):
    """MoCo's shuffle across processes, world_size 2 with all_gather stubbed as rank 1 would
    answer: with the key encoder in eval mode (no batch statistics) each key must be exactly
    the key encoder's embedding of its own view, wherever the shuffle sent it."""
    import torch.distributed as dist
    torch.manual_seed(0)
    mode, ctx = MoCoV2(), context()
    ctx.world_size = 2
    mode.dim = 8
    mode.student(ctx, build_model('small_resnet', 10, width=8, depth=1))
    key = mode.key_encoder(ctx).eval()
    mine, theirs = (torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8).float()
                    for _ in range(2))
    order = torch.randperm(8, generator=torch.Generator().manual_seed(0))  # seed 0, step 0
    calls = []

    def all_gather(outputs, tensor):
        calls.append(tensor.shape)
        outputs[0].copy_(tensor)
        if len(calls) == 1:  # the images: rank 1's views
            outputs[1].copy_(mode.key_normalise(theirs))
        else:  # the keys: rank 1 embeds the second slice of the shuffled batch
            batch = torch.cat([mode.key_normalise(mine), mode.key_normalise(theirs)])
            outputs[1].copy_(key(batch[order[4:]]))

    monkeypatch.setattr(dist, 'all_gather', all_gather)
    with torch.no_grad():
        keys = mode.keys(ctx, key, mine)
        assert torch.allclose(keys, key(mode.key_normalise(mine)), atol=1e-5)
    assert [tuple(c) for c in calls] == [(4, 3, 16, 16), (4, 8)]
    assert sorted(order[:4].tolist()) != [0, 1, 2, 3]  # this seed mixes the processes' images
