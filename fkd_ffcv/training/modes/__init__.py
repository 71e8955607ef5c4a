"""Training modes: what a run needs from the beton, its training loader, how it reads a batch,
its loss, and any state it checkpoints. `MODES` holds them by name (`training.mode`); a new
mode is a new class registered in the module of its family, and the trainer needs no new
branch. A mode reads the run through its `RunContext` (training/context.py: device,
precision, plan, betons, classes, options), never the trainer; the losses are
training/losses.py's.

base.py holds `Mode` and the `MODES` registry; classification.py the modes that learn a
classifier (plain, online_kd, fkd); meal_v2.py MEAL V2's (meal_v2, online_meal_v2); ssl.py
the self-supervised ones (ssl, online_ssl), moco.py MoCo v2's (moco: a self-supervised
teacher). Importing this package registers them all.

Nothing heavy is imported at module level: the option checks (training/option_checks.py) read
the modes' facts (crops per image, a teacher needed, crop records read) to check a command line
before torch is loaded.
"""
from fkd_ffcv.training.modes.base import MODES, Mode
from fkd_ffcv.training.modes.classification import FKD, OnlineKD, Plain, RunsTeacher
from fkd_ffcv.training.modes.meal_v2 import FastMealV2, OnlineMealV2, WithDiscriminator
from fkd_ffcv.training.modes.moco import MoCoV2
from fkd_ffcv.training.modes.ssl import (EmbeddingDistillation, OnlineSelfSupervised,
                                         SelfSupervisedFKD)

__all__ = ['MODES', 'Mode', 'Plain', 'RunsTeacher', 'OnlineKD', 'FKD', 'WithDiscriminator',
           'FastMealV2', 'OnlineMealV2', 'EmbeddingDistillation', 'SelfSupervisedFKD',
           'OnlineSelfSupervised', 'MoCoV2']
