"""Training modes as objects in a registry: a new mode, written here, trains end to end with no
change to the trainer; its own state goes into the checkpoint."""
import pytest
import torch
import torch.nn.functional as F

from fkd_ffcv.training.losses import mixed
from fkd_ffcv.training.modes import MODES, Plain
from fkd_ffcv.training.options import options
from fkd_ffcv.training.loop import Trainer
from test_training import run_options


class CountingHardLabels(Plain):
    """Plain's loader and batches; cross-entropy without smoothing; counts its steps and
    checkpoints the count."""

    def __init__(self):
        self.steps = 0

    def loss(self, trainer, logits, labels, images255, perm, lam):
        self.steps += 1
        return mixed(lambda i: F.cross_entropy(logits.float(), labels[i]), perm, lam)

    def state_dict(self):
        return {'steps': self.steps}

    def load_state_dict(self, state):
        self.steps = state['steps']


@pytest.fixture
def toy_mode():
    MODES.register('toy')(CountingHardLabels)
    yield 'toy'
    MODES.unregister('toy')


def test_a_new_mode_is_its_class_and_a_registry_entry(toy_mode, fashion_betons, tmp_path):
    folder = tmp_path / 'run'
    trainer = Trainer(run_options(fashion_betons, folder, training__mode=toy_mode,
                                  training__mixup_alpha=0.2))
    summary = trainer.run()
    assert summary['mode'] == 'toy' and summary['num_crops'] == 1
    assert trainer.mode.steps == sum(trainer.pass_steps) > 0
    assert trainer.history[-1]['loss'] < trainer.history[0]['loss']
    state = torch.load(folder / 'checkpoint.pt', weights_only=False)
    assert state['mode'] == {'steps': trainer.mode.steps}


def test_options_know_only_registered_modes(toy_mode):
    assert options({'training.mode': 'toy'})['training']['mode'] == 'toy'
    with pytest.raises(ValueError, match="--training.mode: expected one of .*plain"):
        options({'training.mode': 'toys'})


def test_fkds_single_crop_phases_plan():
    def plan(epochs, k, warmup, schedule='cosine', phases=True):
        opts = options({'training.mode': 'fkd', 'training.epochs': epochs, 'fkd.num_crops': k,
                        'fkd.single_crop_phases': phases, 'lr.schedule': schedule,
                        'lr.warmup_epochs': warmup})
        return MODES['fkd'].pass_plan(opts)
    assert plan(300, 4, 5.0) == [1] * 5 + [4] * 73 + [1] * 3  # FKD's SReT recipe
    assert plan(10, 4, 0.0) == [4, 4, 1, 1]
    assert plan(10, 4, 1.5) == [1, 1, 4, 4]
    assert plan(8, 4, 2.0, schedule='cyclic') == [4, 4]  # cyclic: no warm-up epochs
    assert plan(8, 4, 2.0, phases=False) == [4, 4]
    with pytest.raises(ValueError, match='not a multiple of --fkd.num_crops=4.*single_crop'):
        plan(10, 4, 0.0, phases=False)
