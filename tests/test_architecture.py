"""The import-direction check (tools/check_imports.py): fkd_ffcv passes it, and it catches what
it is there to catch (an upward import, a circle, torch reached from a torch-free module)."""
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / 'tools' / 'check_imports.py'


def run_check(*args):
    return subprocess.run([sys.executable, str(CHECK), *map(str, args)], capture_output=True,
                          text=True, timeout=60)


def test_fkd_ffcv_imports_point_down_without_circles():
    result = run_check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith('check_imports: OK')


def write_package(root: Path, files: dict) -> Path:
    for name, text in files.items():
        path = root / 'pkg' / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / 'pkg'


def test_check_catches_upward_import_circle_and_torch(tmp_path):
    package = write_package(tmp_path, {
        '__init__.py': '',
        'errors.py': '',
        'defaults.py': 'from pkg.files import save\n',  # torch-free, reaches torch via files
        'files.py': 'import torch\n\ndef save():\n    pass\n',
        'config.py': ('from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n'
                      'def f():\n    import numba\n'),  # neither runs on import: clean
        'progress.py': 'def bar():\n    from pkg.commands import cli\n',  # base -> commands
        'data/__init__.py': '',
        'data/header.py': 'import numpy\n',
        'data/beton.py': 'from pkg.training.loop import train\n',  # data -> training
        'records/__init__.py': '',
        'records/label_types.py': '',
        'records/crops.py': 'def f():\n    from . import resample\n',  # circle, relative
        'records/resample.py': 'from pkg.records.crops import f\n',
        'training/__init__.py': '',
        'training/options.py': 'from pkg.data.header import x\n',  # torch-free, clean
        'training/loop.py': 'from pkg.data.beton import y\ndef train():\n    pass\n',
        'commands/__init__.py': '',
        'commands/cli.py': 'import pkg.training.loop\n',
    })
    result = run_check(package)
    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stdout
    upward = [line for line in lines if 'upward import' in line]
    assert len(upward) == 2, result.stdout
    assert any(line.startswith('pkg/data/beton.py:1: ') and 'data may not import training'
               in line for line in upward), result.stdout
    assert any(line.startswith('pkg/progress.py:2: ') and 'base may not import commands'
               in line for line in upward), result.stdout
    circles = [line for line in lines if 'import circle' in line]
    assert len(circles) == 2, result.stdout  # inside records, and data <-> training
    assert any('pkg.records.crops -> pkg.records.resample -> pkg.records.crops' in line
               for line in circles), result.stdout
    assert any('pkg.data.beton -> pkg.training.loop -> pkg.data.beton' in line
               for line in circles), result.stdout
    torch = [line for line in lines if 'torch-free' in line]
    assert len(torch) == 1, result.stdout
    assert torch[0].startswith('pkg/defaults.py:1: torch-free module pkg.defaults imports torch')
    assert 'pkg.defaults -> pkg.files -> torch' in torch[0]
    assert lines[-1].startswith('check_imports: 5 problem(s)')


def test_check_passes_a_clean_package_and_names_a_missing_one(tmp_path):
    package = write_package(tmp_path, {
        '__init__.py': '', 'errors.py': '', 'defaults.py': 'from . import errors\n',
        'config.py': '', 'data/__init__.py': '', 'data/header.py': '',
        'records/__init__.py': '', 'records/label_types.py': 'from pkg.data import header\n',
        'training/__init__.py': '', 'training/options.py': '', 'training/options_x.py': '',
    })
    result = run_check(package)
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith('check_imports: OK, 11 modules')
    missing = run_check(tmp_path / 'nothing')
    assert missing.returncode == 2
    assert 'not a package' in missing.stdout
