"""The training loop and what it is made of: the option sections of fkd-train and fkd-write and
the checks between them (torch-free, so a wrong command line fails before torch loads;
fkd-eval-teacher, fkd-probe, fkd-inspect and fkd-plot parse their own arguments in commands/),
the modes (plain, FKD, online KD, MEAL V2, self-supervised), losses, evaluation, schedules,
mixing, the discriminator, the probes, the trainer and the run folder.

Enters: option dicts and betons. Leaves: run folders (logs, checkpoints, exports).
May import: the base modules and every subpackage before it (data, records, loading, models,
labeling). Importing this package (and its options modules) loads no torch.
"""


def __getattr__(name: str):  # names of the former fkd_ffcv/training.py module
    from fkd_ffcv.moved import forward
    return forward('training', name)
