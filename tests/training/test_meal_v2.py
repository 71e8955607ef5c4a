"""MEAL V2 (modes meal_v2 and online_meal_v2, discriminator.py): the student starts exactly from
its weights, the discriminator is trained, checkpointed and resumed, and the faults are named."""
import pytest
import torch

from fkd_ffcv.training.discriminator import Discriminator, discriminator_loss
from fkd_ffcv.errors import OptionError, TrainingError
from fkd_ffcv.labeling.label import LabelingSettings, label_beton
from fkd_ffcv.defaults import IMAGENET_MEAN, IMAGENET_STD
from fkd_ffcv.models.exports import save_weights
from fkd_ffcv.models.students import build_model
from fkd_ffcv.data.sources import FashionMNISTSource
from fkd_ffcv.labeling.teachers import Teacher
from fkd_ffcv.training.loop import Trainer
from test_training import interrupt_at, metrics, read_log, run_options, two_process_run

SMALL = dict(arch='small_resnet', width=8, depth=1)
PREPROCESS = {'input_size': 32, 'interpolation': 'area', 'mean': list(IMAGENET_MEAN),
              'std': list(IMAGENET_STD)}


def export(path, seed, classes=FashionMNISTSource.classes, **arch):
    torch.manual_seed(seed)
    arch = {**SMALL, **arch}
    save_weights(path, build_model(num_classes=len(classes), **arch), arch, classes,
                 PREPROCESS)
    return path


@pytest.fixture(scope='module')
def meal_data(fashion_betons, tmp_path_factory):
    """(labelled train beton, val beton, teacher specs, start weights): the train subset with 4
    records per image labelled by an ensemble of two random small ResNets of other widths, and
    a random student export as the starting point."""
    out = tmp_path_factory.mktemp('meal')
    specs = [f"checkpoint:{export(out / f't{i}.pt', 10 + i, width=12 + 4 * i)}"
             for i in range(2)]
    labelled = out / 'train_meal.beton'
    label_beton(fashion_betons[0], labelled, Teacher(specs),
                LabelingSettings(num_records=4, label_type='marginal_smoothing_k3',
                                 chunk_images=300), out / 'work', progress=False)
    return labelled, fashion_betons[1], specs, export(out / 'start.pt', 0)


def meal_options(meal_data, folder, **overrides):
    train, val, specs, start = meal_data
    return run_options((train, val), folder, **{
        'training__mode': 'meal_v2', 'model__weights': str(start), 'training__epochs': 4,
        'fkd__num_crops': 2, 'lr__schedule': 'step', 'lr__lr': 0.05, 'lr__step_length': 3.0,
        'training__weight_decay': 0.0, 'validation__at_start': True, 'meal__teachers': 2,
        **overrides})


class Recording(Trainer):
    """Keeps the discriminator's state as the run started."""

    def prepare(self):
        super().prepare()
        self.disc_start = {k: v.clone() for k, v in
                           self.mode.discriminator.state_dict().items()}


@pytest.fixture(scope='module')
def meal_run(meal_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp('meal_run') / 'run'
    trainer = Recording(meal_options(meal_data, folder))
    trainer.run()
    return folder, trainer


def test_the_student_starts_where_eval_only_on_its_weights_does(meal_data, meal_run):
    folder, trainer = meal_run
    start = trainer.history[0]
    assert start['epoch'] == 0 and read_log(folder)[0] == start
    train, val, _, weights = meal_data
    alone = Trainer(run_options((train, val), folder.parent / 'eval', training__eval_only=True,
                                training__checkpoint=str(weights))).run()
    assert {k: alone[k] for k in ('top1', 'top5', 'val_loss', 'val_images')} == \
        {k: start[k] for k in ('top1', 'top5', 'val_loss', 'val_images')}
    trained = trainer.history[1:]
    assert [line['epoch'] for line in trained] == [1, 2, 3, 4]
    # logged: the distillation term, the discriminator's BCE (the loss is their sum, weight 1)
    # and the share of vectors it tells right
    for line in trained:
        assert 0 <= line['disc_right'] <= 1 and line['disc_loss'] > 0
        assert line['loss'] == pytest.approx(line['kd_loss'] + line['disc_loss'], rel=1e-5)
    assert trained[-1]['kd_loss'] < trained[0]['kd_loss']


def test_the_discriminator_learns_at_its_share_of_the_students_rate(meal_run):
    _, trainer = meal_run
    groups = trainer.optimizer.param_groups
    disc = groups[-1]
    assert [id(p) for p in disc['params']] == [id(p) for p in
                                                trainer.mode.discriminator.parameters()]
    assert disc['lr'] == groups[0]['lr'] * 1.0 and disc['weight_decay'] == 0.0
    now = trainer.mode.discriminator.state_dict()
    assert any(not torch.equal(now[k], v) for k, v in trainer.disc_start.items())


def test_the_discriminators_state_survives_resume_exactly(meal_data, meal_run, tmp_path,
                                                          monkeypatch):
    folder = tmp_path / 'run'
    interrupt_at(monkeypatch, Trainer(meal_options(meal_data, folder)),
                 lambda t: t.pass_steps[0] + 3)  # inside the second pass
    saved = torch.load(folder / 'checkpoint.pt', weights_only=True)
    assert saved['passes_done'] == 1 and set(saved['mode']) == {'discriminator'}
    resumed = Trainer(meal_options(meal_data, folder, training__resume=True))
    resumed.run()
    straight = meal_run[1]
    assert metrics(resumed.history) == metrics(straight.history)
    for name, value in straight.mode.discriminator.state_dict().items():
        assert torch.equal(resumed.mode.discriminator.state_dict()[name], value), name
    assert [line['disc_loss'] for line in resumed.history[1:]] == \
        [line['disc_loss'] for line in straight.history[1:]]


def test_online_meal_v2_runs_the_ensemble_with_meal_v2s_shared_gradient(meal_data, tmp_path):
    train, val, specs, _ = meal_data
    trainer = Trainer(meal_options(meal_data, tmp_path / 'run', training__mode='online_meal_v2',
                                   data__train_dataset=str(val), fkd__teacher=','.join(specs),
                                   meal__disc_gradient='shared', meal__disc_lr_ratio=0.5,
                                   fkd__num_crops=1, training__epochs=2,
                                   validation__at_start=False))
    trainer.run()
    assert len(trainer.mode.teacher.models) == 2
    groups = trainer.optimizer.param_groups
    assert groups[-1]['lr'] == pytest.approx(groups[0]['lr'] * 0.5)
    assert [line['epoch'] for line in trainer.history] == [1, 2]
    assert all('disc_right' in line for line in trainer.history)


def test_without_the_discriminator_it_is_distillation_from_the_weights(meal_data, tmp_path):
    """MEAL V2's FKD variant crashed without its discriminator flag; here it trains."""
    trainer = Trainer(meal_options(meal_data, tmp_path / 'run', meal__discriminator=False,
                                   training__epochs=2, validation__at_start=False))
    trainer.run()
    assert trainer.mode.discriminator is None
    assert 'disc_loss' not in trainer.history[-1]
    assert len(trainer.optimizer.param_groups) == 2  # the student's: with and without decay
    state = torch.load(tmp_path / 'run' / 'checkpoint.pt', weights_only=True)
    assert state['mode'] == {}


def test_the_gradient_choice_negates_what_the_student_gets():
    torch.manual_seed(0)
    disc = Discriminator(10, open_start=True)  # seed 0 starts dead with PyTorch's biases
    teacher = torch.softmax(torch.randn(6, 10), -1)
    grads = {}
    for gradient in ('shared', 'reversed'):
        student = torch.softmax(torch.randn(6, 10, generator=torch.Generator().manual_seed(1)),
                                -1).requires_grad_()
        disc.zero_grad()
        loss, right = discriminator_loss(disc, student, teacher, gradient)
        loss.backward()
        grads[gradient] = (student.grad.clone(), [p.grad.clone() for p in disc.parameters()])
        assert 0 <= float(right) <= 1
    assert torch.equal(grads['reversed'][0], -grads['shared'][0])
    assert grads['shared'][0].abs().sum() > 0
    # the discriminator itself learns the same way in both
    assert all(torch.equal(a, b) for a, b in zip(grads['shared'][1], grads['reversed'][1]))


def test_the_discriminator_has_meal_v2s_shape():
    widths = [m.out_channels for m in Discriminator(1000).modules()
              if isinstance(m, torch.nn.Conv2d)]
    assert widths == [125, 15, 2]
    scores = Discriminator(10)(torch.softmax(torch.randn(4, 10), -1))
    assert scores.shape == (4, 2) and (scores >= 0).all()  # ReLU after the last layer too
    assert len(Discriminator(10, last_relu=False).layers) == 5


def test_an_open_start_leaves_no_discriminator_dead():
    """With PyTorch's default initialisation alone (MEAL V2's, the default), seeds 0, 2 and 5
    of 0-11 start with both last ReLUs closed for every input (a quarter of them): no gradient,
    ever. Started open (meal.disc_open_start), none does."""
    x = torch.softmax(3 * torch.randn(256, 10, generator=torch.Generator().manual_seed(0)), -1)
    dead = []
    for seed in range(12):
        torch.manual_seed(seed)
        if (Discriminator(10)(x) == 0).all():
            dead.append(seed)
    assert dead == [0, 2, 5]
    for seed in range(50):
        torch.manual_seed(seed)
        assert (Discriminator(10, open_start=True)(x) > 0).all(), seed


def test_bad_inputs_are_named(meal_data, tmp_path, capsys):
    train, val, specs, start = meal_data
    with pytest.raises(OptionError, match='meal_v2 mode starts the student from weights'):
        Trainer(meal_options(meal_data, tmp_path / 'a', model__weights=''))
    with pytest.raises(OptionError, match=r"--meal.disc_weight=0.5: an option of the meal_v2 "
                                          r"and online_meal_v2 modes, not of fkd mode"):
        Trainer(meal_options(meal_data, tmp_path / 'b', training__mode='fkd',
                             model__weights='', meal__teachers=0, meal__disc_weight=0.5))
    five = export(tmp_path / 'five.pt', 0, classes=[str(i) for i in range(5)])
    with pytest.raises(TrainingError, match=r"five.pt does not fit the model: 2 tensor\(s\) of "
                                            r"other shapes.*fc.weight \(5, 32\) against "
                                            r"\(10, 32\)"):
        Trainer(meal_options(meal_data, tmp_path / 'c', model__weights=str(five))).run()
    wide = export(tmp_path / 'wide.pt', 0, width=16)
    with pytest.raises(TrainingError, match=r"wide.pt does not fit the model: .* e\.g\. \S+ "
                                            r"\(16, "):
        Trainer(meal_options(meal_data, tmp_path / 'd', model__weights=str(wide))).run()
    blurred = export(tmp_path / 'blurred.pt', 0, blurpool=True)  # no tensor shows BlurPool
    with pytest.raises(TrainingError, match=r"blurred.pt was exported with blurpool=True \(this "
                                            r"run: False\): give the same --model options"):
        Trainer(meal_options(meal_data, tmp_path / 'f', model__weights=str(blurred))).run()
    reordered = export(tmp_path / 'reordered.pt', 0, classes=FashionMNISTSource.classes[::-1])
    with pytest.raises(TrainingError, match=r"reordered.pt was trained on other classes or "
                                            r"another order: class 0 is 'Ankle boot' there, "
                                            r"'T-shirt/top' here"):
        Trainer(meal_options(meal_data, tmp_path / 'g', model__weights=str(reordered))).run()
    capsys.readouterr()
    Trainer(meal_options(meal_data, tmp_path / 'e', meal__teachers=3)).prepare()
    err = capsys.readouterr().err
    assert f"come from 2 teacher(s) ({specs[0]}, {specs[1]}); the recipe asks for an " \
           f"ensemble of 3 (--meal.teachers)" in err


def test_two_process_gloo_run_from_the_command_line(meal_data, tmp_path):
    """Under torchrun the discriminator is under DDP as the student is; the recipe's options
    work from the command line."""
    train, val, _, start = meal_data
    folder = tmp_path / 'ddp'
    result = two_process_run((train, val), folder, 29533, f'--model.weights={start}',
                             '--training.mode=meal_v2', '--fkd.num_crops=2',
                             '--lr.schedule=step', '--lr.lr=0.05', '--training.weight_decay=0',
                             '--meal.disc_lr_ratio=10', '--meal.teachers=2')
    assert 'ensemble of' not in result.stderr  # two teachers, as asked
    log = read_log(folder)
    assert [line['epoch'] for line in log] == [1, 2] and log[-1]['val_images'] == 300
    assert all(0 < line['disc_loss'] for line in log)
    saved = torch.load(folder / 'checkpoint.pt', weights_only=True)
    assert saved['world_size'] == 2 and 'discriminator' in saved['mode']


def test_the_last_relu_closes_while_the_two_cannot_be_told_apart(one_torch_thread):
    """BCE's gradient on a score z >= 0 averages to sigmoid(z) - 1/2 >= 0 over the two labels,
    so a discriminator that cannot separate its inputs (here: the same vectors as student and
    as teacher) drives every score to 0, where the last ReLU passes no gradient: shown
    separable inputs after that, it learns nothing. Without that ReLU it can still learn
    (seeds 1 and 2 of 0-3 here tell 76% apart; in the others an inner ReLU layer closed)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.softmax(3 * torch.randn(64, 10, generator=generator), -1)
    smoothed = 0.5 * torch.softmax(3 * torch.randn(64, 10, generator=generator), -1) + 0.05
    best = {}
    for last_relu in (True, False):
        for seed in range(4):
            torch.manual_seed(seed)
            disc = Discriminator(10, last_relu)
            optimiser = torch.optim.SGD(disc.parameters(), lr=0.5, momentum=0.9)
            for teacher in [x] * 300 + [smoothed] * 300:
                loss, right = discriminator_loss(disc, x, teacher, 'shared')
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            if last_relu:
                assert (disc(x) == 0).all() and float(right) == 0.5
                assert all(p.grad.abs().sum() == 0 for p in disc.parameters())
            best[last_relu] = max(best.get(last_relu, 0), float(right))
    assert best[False] > 0.7


def test_meal_v2_with_no_meal_options_follows_the_papers_objective_by_hand():
    """One Fast MEAL V2 step at the option defaults against the same step written out by hand
    from MEAL V2's equations: the student's cross-entropy to the ensemble's distribution q, plus
    the discriminator's BCE on [z; q] labelled [1, 0] and [0, 1] (z the student's logits, as
    MEAL V2's FKD variant feeds them), one objective that
    the student and the discriminator both descend (the shared gradient), through
    PyTorch-initialised 1 x 1 layers with a ReLU after each, the last one too."""
    from types import SimpleNamespace
    from fkd_ffcv.training.modes.meal_v2 import FastMealV2
    from fkd_ffcv.training.options import options
    opts = options()
    meal = opts['meal']
    assert (meal['disc_gradient'], meal['disc_last_relu'], meal['disc_open_start'],
            meal['disc_softmax'], meal['disc_weight'], opts['fkd']['temperature']) == \
        ('shared', True, False, False, 1.0, 1.0)
    n, c = 6, 10
    torch.manual_seed(3)
    z = torch.randn(n, c, requires_grad=True)
    q = torch.softmax(2 * torch.randn(n, c), -1)
    disc = Discriminator(c, meal['disc_last_relu'], meal['disc_open_start'])
    mode = FastMealV2()
    mode.discriminator = mode.train_discriminator = disc
    mode.distribution = lambda *args: q
    mode.loss(SimpleNamespace(opts=opts), z, None, None, None, None).backward()
    convs = [m for m in disc.layers if isinstance(m, torch.nn.Conv2d)]
    got = [z.grad] + [g for m in convs for g in (m.weight.grad[:, :, 0, 0], m.bias.grad)]

    # by hand: softmax, the three layers as matrices, BCE-with-logits as softplus(s) - y s
    z2 = z.detach().clone().requires_grad_()
    params = [t.detach().clone().requires_grad_() for m in convs
              for t in (m.weight[:, :, 0, 0], m.bias)]
    p = torch.exp(z2 - torch.logsumexp(z2, 1, keepdim=True))
    distillation = -(q * torch.log(p)).sum(1).mean()
    h = torch.cat([z2, q])  # FKD_train.py: the student's raw logits against the stored label
    for weight, bias in zip(params[0::2], params[1::2]):
        h = torch.relu(h @ weight.T + bias)
    y = torch.tensor([[1.0, 0.0]] * n + [[0.0, 1.0]] * n)
    bce = (torch.nn.functional.softplus(h) - y * h).mean()
    expected = torch.autograd.grad(distillation + bce, [z2, *params])
    assert expected[1].abs().sum() > 0  # a discriminator alive at this seed: its gradient counts
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_run_recorded_before_the_variants_were_options_resumes_as_it_ran():
    """Runs recorded before meal.disc_open_start and meal.disc_softmax existed started the
    discriminator open wherever it had its last ReLU and fed it softmax outputs: a resume
    compares against that, not against today's defaults."""
    from fkd_ffcv.training.run_folder import _current
    assert _current({'meal': {'disc_last_relu': True}}, 'meal', 'disc_open_start') is True
    assert _current({'meal': {'disc_last_relu': False}}, 'meal', 'disc_open_start') is False
    assert _current({'meal': {}}, 'meal', 'disc_softmax') is True
    assert _current({'meal': {'disc_softmax': False}}, 'meal', 'disc_softmax') is False
    assert _current({}, 'lr', 'step_epochs') == ''  # any other new option: its default


def test_online_meal_v2_feeds_the_discriminator_the_ensembles_mean_logits(meal_data):
    """As MEAL V2's train.py: the student's raw logits against the mean of the teachers'
    logits (not of their probabilities), on the same images the distillation target comes
    from."""
    from types import SimpleNamespace
    from fkd_ffcv.training.modes.meal_v2 import OnlineMealV2
    _, _, specs, _ = meal_data
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    alone = [Teacher(spec) for spec in specs]
    p, logits = Teacher(specs).forward(images, with_logits=True)
    one_by_one = [t.forward(images, with_logits=True) for t in alone]
    assert torch.allclose(p, sum(q for q, _ in one_by_one) / 2, atol=1e-6)
    assert torch.allclose(logits, sum(z for _, z in one_by_one) / 2, atol=1e-5)
    assert torch.allclose(torch.softmax(one_by_one[0][1], -1), one_by_one[0][0], atol=1e-6)
    mode = OnlineMealV2()
    mode.teacher = Teacher(specs)
    q = mode.distribution(SimpleNamespace(), None, images, None, None)
    student = torch.randn(4, 10)
    fed = mode.discriminator_inputs(student, q)
    assert torch.equal(fed[0], student) and torch.allclose(fed[1], logits, atol=1e-6)
    assert torch.allclose(q, p, atol=1e-6)
