"""Import paths from before the package was split into subpackages, kept working.

Recipes, run folders and scripts name modules such as `fkd_ffcv.teachers:efficientnet_lite0`
or `python -m fkd_ffcv.demo`. Each former module maps to the modules that now hold its names
(searched in order); importing the old name gives the new module (one target) or a module that
forwards attribute look-ups (several), so old specs, pickled names and `-m` keep working.
Three former modules share their name with a subpackage (`models`, `labeling`,
`training`); those subpackages forward unknown attributes here (`forward`). Names renamed in
the split (`RENAMED`) resolve to the new object, or, where its arguments changed, raise an
AttributeError that names it; `devices` is still a module, and forwards its three former
names the same way.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

FORMER_MODULES = {
    'beton': ['data.beton', 'data.manifest'], 'fields': ['data.fields'],
    'header': ['data.header'], 'sources': ['data.sources'],
    'writer': ['data.writer', 'data.copying', 'data.safe_write', 'data.sources'],
    'crops': ['records.crops'], 'resample': ['records.resample'],
    'label_types': ['records.label_types'],
    'soft_labels': ['records.soft_labels', 'training.losses'],
    'embeddings': ['records.embeddings', 'models.heads', 'training.losses'],
    'ffcv_loader': ['loading.ffcv_loader'], 'decoders': ['loading.decoders'],
    'loaders': ['loading.loaders'],
    'models': ['models.students', 'models.resnets', 'models.heads', 'models.weights',
               'models.exports'],
    'sret': ['models.sret'], 'timm_models': ['models.timm_models'],
    'teachers': ['labeling.teachers', 'labeling.teacher_specs'], 'labeling': ['labeling.label'],
    'fkd_import': ['labeling.fkd_import'],
    'options': ['training.options', 'training.option_checks', 'training.run_options',
                'training.write_options', 'data.manifest'],
    'training': ['training.loop', 'training.batchnorm', 'training.report'],
    'modes': ['training.modes', 'training.losses'],
    'discriminator': ['training.discriminator'], 'mixing': ['training.mixing'],
    'schedules': ['training.schedules'], 'run_folder': ['training.run_folder'],
    'probes': ['training.probes'],
    'cli': ['commands.write', 'commands.train', 'commands.eval_teacher', 'commands.probe',
            'commands.common', 'data.splits'],
    'inspect': ['commands.inspect_beton'], 'plots': ['commands.plot'],
    'demo': ['commands.demo'], 'recipes': ['commands.demo_steps', 'training.options'],
}
RENAMED = {  # (former module, former name): the name's new home
    ('teachers', 'evaluate'): 'training.evaluation.teacher_top_k',
    ('probes', 'evaluate'): 'training.probes.knn_and_probe_top1',
    ('cli', 'label'): 'labeling.relabel.label_or_strip',
    ('options', 'run_folder'): 'training.options.run_folder_path',
    ('ffcv_loader', 'pass_of'): 'loading.ffcv_loader.first_epoch_of',
    ('ffcv_loader', 'pass_tag_query'): 'loading.ffcv_loader.first_epoch_tag',
    ('devices', 'machine'): 'reporting.machine',
    ('devices', 'cpu_model'): 'reporting.cpu_model',
    ('devices', 'precision_of'): 'reporting.precision_of',
}
NEW_ARGUMENTS = {('cli', 'label'): 'takes the output path as a fourth argument'}
PACKAGE = __name__.rpartition('.')[0]


def _targets(former: str) -> list:
    return [f'{PACKAGE}.{target}' for target in FORMER_MODULES.get(former, [])]


def forward(former: str, name: str):
    """Attribute `name` of the former module `former`: its renamed object (RENAMED), or the
    same name in the modules that now hold the module's names."""
    if (former, name) in RENAMED:
        module, _, new = f'{PACKAGE}.{RENAMED[former, name]}'.rpartition('.')
        if (former, name) in NEW_ARGUMENTS:
            raise AttributeError(f"{PACKAGE}.{former}.{name} is now {module}.{new}, which "
                                 f"{NEW_ARGUMENTS[former, name]}")
        return getattr(importlib.import_module(module), new)
    moved_to = f" (its names moved to {', '.join(_targets(former))})" if _targets(former) else ''
    for target in _targets(former):
        module = importlib.import_module(target)
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module '{PACKAGE}.{former}' has no attribute '{name}'{moved_to}")


class _Forwarding(types.ModuleType):
    def __getattr__(self, name: str):
        return forward(self.__name__.rpartition('.')[2], name)


class _FormerModule(importlib.abc.Loader):
    def __init__(self, former: str):
        self.former = former

    def create_module(self, spec):
        targets = _targets(self.former)
        if len(targets) == 1 and not any(former == self.former for former, _ in RENAMED):
            module = importlib.import_module(targets[0])
            self.own_spec = module.__spec__  # importlib sets the alias's spec on it next
            return module
        return _Forwarding(spec.name)

    def exec_module(self, module) -> None:
        if getattr(self, 'own_spec', None) is not None:
            module.__spec__ = self.own_spec

    def get_code(self, name: str):  # `python -m fkd_ffcv.<former>` runs the first new module
        target = _targets(self.former)[0]
        return importlib.util.find_spec(target).loader.get_code(target)


class _FormerModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        package, _, former = fullname.rpartition('.')
        if package != PACKAGE or former not in FORMER_MODULES:
            return None
        if former in ('models', 'labeling', 'training'):
            return None  # now a subpackage, which forwards its former names itself
        return importlib.machinery.ModuleSpec(fullname, _FormerModule(former))


def install() -> None:
    if not any(isinstance(finder, _FormerModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _FormerModuleFinder())  # before an editable install's finder
