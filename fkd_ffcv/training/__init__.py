"""The training loop and what it is made of: the trainer, the modes (plain, FKD, online KD,
MEAL V2, self-supervised), losses, evaluation, schedules, mixing, the discriminator, the probes
and the run folder.

May import: every subpackage before it (data, records, loading, models, labeling, options).
"""


def __getattr__(name: str):  # names of the former fkd_ffcv/training.py module
    from fkd_ffcv.moved import forward
    return forward('training', name)
