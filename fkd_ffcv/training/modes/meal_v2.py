"""MEAL V2's modes: a discriminator on top of a distillation mode, on the soft labels stored in
the beton (meal_v2) or on an ensemble that runs on every batch (online_meal_v2)."""
from __future__ import annotations

from fkd_ffcv.training.modes.base import MODES
from fkd_ffcv.training.modes.classification import FKD, OnlineKD


class WithDiscriminator:
    """MEAL V2 (discriminator.py) on top of a distillation mode that gives the teacher's
    distribution: the student starts from --model.weights, learns the soft cross-entropy to
    the teacher's distribution (no hard labels) plus --meal.disc_weight x the discriminator's
    BCE, and the discriminator is a second optimiser group at --meal.disc_lr_ratio x the
    student's learning rate, checkpointed with the run."""
    starts_from_weights = True
    sections = ('meal',)

    def __init__(self):
        super().__init__()
        self.discriminator = None  # setup: the discriminator, when --meal.discriminator
        self.train_discriminator = None  # setup: the discriminator as it trains (DDP)

    def check_teacher_count(self, ctx, specs, where: str) -> None:
        """Warn when the labels come from another number of teachers than --meal.teachers
        asks for (`specs`: the teachers' specs, None where they were not recorded)."""
        import sys
        wanted = ctx.opts['meal']['teachers']
        if not wanted or (specs and len(specs) == wanted) or not ctx.is_main:
            return
        came = (f"{len(specs)} teacher(s) ({', '.join(specs)})" if specs else
                "teachers that were not recorded (imported labels)")
        print(f"warning: {where} come from {came}; the recipe asks for an ensemble of "
              f"{wanted} (--meal.teachers)", file=sys.stderr)

    def setup(self, ctx):
        super().setup(ctx)
        import torch
        from fkd_ffcv.training.discriminator import Discriminator
        meal = ctx.opts['meal']
        if not meal['discriminator']:
            return
        with torch.random.fork_rng(devices=[]):  # its own seed, whatever ran before
            torch.manual_seed(ctx.opts['training']['seed'] + 7919)
            self.discriminator = Discriminator(ctx.num_classes, meal['disc_last_relu'],
                                               meal['disc_open_start']).to(ctx.device)
        self.train_discriminator = ctx.parallel(self.discriminator)
        self.metrics = ('kd_loss', 'disc_loss', 'disc_right')

    def parameter_groups(self, ctx):
        return [] if self.discriminator is None else [
            {'params': list(self.discriminator.parameters()), 'weight_decay': 0.0,
             'always': True, 'lr_scale': ctx.opts['meal']['disc_lr_ratio']}]

    def loss(self, ctx, logits, targets, images255, perm, lam):
        import torch
        from fkd_ffcv.training.discriminator import discriminator_loss
        from fkd_ffcv.training.losses import dense_cross_entropy
        q = self.distribution(ctx, targets, images255, perm, lam)
        loss = dense_cross_entropy(logits, q, ctx.opts['fkd']['temperature'])
        if self.discriminator is None:
            return loss
        meal = ctx.opts['meal']
        student, teacher = (torch.softmax(logits.float(), dim=-1), q) if meal['disc_softmax'] \
            else self.discriminator_inputs(logits, q)
        bce, right = discriminator_loss(self.train_discriminator, student, teacher,
                                        meal['disc_gradient'])
        self.step_metrics = torch.stack([loss.detach(), bce.detach(), right])
        return loss + meal['disc_weight'] * bce

    def discriminator_inputs(self, logits, q) -> tuple:
        """(the student's, the teacher's) vectors the discriminator tells apart, as MEAL V2's
        FKD variant (FKD_train.py) feeds it: the student's raw logits against the labels'
        probabilities (its stored labels are after the softmax)."""
        return logits.float(), q

    def state_dict(self):
        return {} if self.discriminator is None else \
            {'discriminator': self.discriminator.state_dict()}

    def load_state_dict(self, state):
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state['discriminator'])


@MODES.register('meal_v2')
class FastMealV2(WithDiscriminator, FKD):
    """Fast MEAL V2: MEAL V2 on the soft labels an ensemble stored in the beton (FKD's
    variant): K recorded crops per decoded image, the discriminator on the recovered labels."""

    def check_data(self, ctx):
        super().check_data(ctx)
        info = ctx.train_beton.manifest.soft_labels
        self.check_teacher_count(ctx, (info.teacher or {}).get('specs'),
                                 f"the soft labels of {ctx.opts['data']['train_dataset']}")


@MODES.register('online_meal_v2')
class OnlineMealV2(WithDiscriminator, OnlineKD):
    """MEAL V2 as published: the ensemble (--fkd.teacher, comma-separated) runs on every batch,
    on the student's crops, and the discriminator sees raw logits (the student's, and the mean
    of the teachers'); the baseline Fast MEAL V2 is timed against."""

    def __init__(self):
        super().__init__()
        self.teacher_logits = None  # per step: the ensemble's mean logits, for the discriminator

    def setup(self, ctx):
        super().setup(ctx)
        self.check_teacher_count(ctx, self.teacher.specs, "the online distributions")

    def distribution(self, ctx, labels, images255, perm, lam):
        """The ensemble's mean probabilities on the (mixed) images; its mean logits are kept
        for the discriminator."""
        import torch
        with torch.no_grad():
            q, self.teacher_logits = self.teacher.forward(images255, with_logits=True)
        return q

    def discriminator_inputs(self, logits, q) -> tuple:
        """The student's raw logits against the ensemble's mean logits, as MEAL V2's
        train.py feeds its discriminator."""
        return logits.float(), self.teacher_logits
