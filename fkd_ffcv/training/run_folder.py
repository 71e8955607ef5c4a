"""A training run's folder (`logging.folder`): what a run writes and what a resume reads.

- `config.json`: the effective options;
- `log.jsonl`: a JSON line per epoch (validation results on the lines that end an evaluated
  pass; with `validation.at_start`, a first line for epoch 0: the starting point's);
- `checkpoint.pt`: everything to continue, written atomically after every pass;
- `final_weights.pt`: plain weights with what rebuilding and feeding the model takes
  (models/exports.py: save_weights), on the CPU;
- `summary.json`.

Only the main process writes; every file appears under its name only when complete.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from fkd_ffcv.files import atomic_write, load_data
from fkd_ffcv.training.checkpoints import refuse_prerelease
from fkd_ffcv.training.options import PARAMS
from fkd_ffcv.training.run_options import other_modes_sections
from fkd_ffcv.errors import OptionError, TrainingError

CHECKPOINT_FORMAT = 'fkd-ffcv checkpoint 1'
# Options that may change when a run is resumed (precise BN changes what is evaluated, not the
# training); any other change is refused.
RESUMABLE_CHANGES = {('training', 'resume'), ('data', 'num_workers'), ('logging', 'progress'),
                     ('training', 'checkpoint'), ('training', 'eval_only'),
                     ('validation', 'precise_bn')}


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def _current(recorded: dict, section: str, key: str):
    """The recorded value of an option; an option added after the run was recorded counts as
    what that run did (`BEFORE_THE_OPTION`), else as its default."""
    values = recorded.get(section, {})
    if key in values:
        return values[key]
    if (section, key) in BEFORE_THE_OPTION:
        return BEFORE_THE_OPTION[section, key](values)
    return PARAMS[section][1][key].default


# What runs recorded before an option existed did, from what they recorded: the discriminator's
# biases started at 1 with its last ReLU, and it was fed softmax outputs.
BEFORE_THE_OPTION = {
    ('meal', 'disc_open_start'): lambda meal: meal.get('disc_last_relu', True),
    ('meal', 'disc_softmax'): lambda meal: True,
}


class RunFolder:
    def __init__(self, path, is_main: bool = True):
        self.path, self.is_main = Path(path), is_main
        self.checkpoint = self.path / 'checkpoint.pt'
        self.weights = self.path / 'final_weights.pt'

    def start(self, opts: dict, resumed_history=None) -> None:
        """Write the config; a new run starts an empty log, a resumed one keeps the lines of
        the passes its checkpoint holds (those of the interrupted pass are dropped)."""
        if not self.is_main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        _write_text(self.path / 'config.json', json.dumps(opts, indent=2))
        _write_text(self.path / 'log.jsonl',
                    ''.join(json.dumps(line) + '\n' for line in resumed_history or []))

    def append_log(self, line: dict) -> None:
        if self.is_main:
            with open(self.path / 'log.jsonl', 'a') as f:
                f.write(json.dumps(line) + '\n')

    def save_checkpoint(self, state: dict) -> None:
        if self.is_main:
            atomic_write(self.checkpoint,
                         lambda f: torch.save({'format': CHECKPOINT_FORMAT, **state}, f))

    def read_checkpoint(self, opts: dict, world_size: int, device) -> dict:
        """The folder's checkpoint, refused if it belongs to a run with other options or
        another process count."""
        if not self.checkpoint.is_file():
            raise TrainingError(f"--resume: {self.checkpoint} does not exist (nothing to resume)")
        try:
            state = load_data(self.checkpoint, device)
        except ValueError as e:
            raise TrainingError(str(e)) from None
        if not isinstance(state, dict) or state.get('format') != CHECKPOINT_FORMAT:
            raise TrainingError(f"{self.checkpoint} is not a fkd-ffcv checkpoint")
        refuse_prerelease(self.checkpoint, state)
        recorded = state['options']
        unread = other_modes_sections(opts['training']['mode'])
        changed = [f'{s}.{k} (checkpoint: {_current(recorded, s, k)})'
                   for s, values in opts.items() if s not in unread for k, v in values.items()
                   if (s, k) not in RESUMABLE_CHANGES and _current(recorded, s, k) != v]
        if changed:
            raise OptionError(f"--resume: options differ from the checkpointed run's: "
                              f"{', '.join(changed)} (resume with the same options)")
        if state['world_size'] != world_size:
            raise OptionError(f"--resume: {self.checkpoint} was written by a run of "
                              f"{state['world_size']} process(es), this one has "
                              f"{world_size}; batch sizes are per process, so the run would "
                              f"change (resume with the same process count)")
        return state

    def export(self, model, model_options: dict, classes, preprocess: dict,
               validation: dict) -> Path:
        from fkd_ffcv.models.exports import save_weights
        if self.is_main:
            save_weights(self.weights, model, model_options, classes, preprocess,
                         validation=validation)
        return self.weights

    def write_summary(self, summary: dict) -> None:
        if self.is_main:
            _write_text(self.path / 'summary.json', json.dumps(summary, indent=2))
