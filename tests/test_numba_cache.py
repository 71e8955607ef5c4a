"""numba_cache.py: numba's typed-dict functions are cached on disk once ffcv is imported after
the package, and nothing heavy is imported before that."""
import subprocess
import sys

from conftest import REPO

PROBE = """
import sys
import fkd_ffcv
assert 'numba' not in sys.modules  # importing the package compiles nothing, imports no numba
import fkd_ffcv.data.fields  # imports ffcv, which builds a typed dict
from numba.typed import typeddict
from fkd_ffcv.numba_cache import TYPED_DICT_FUNCTIONS
print(' '.join(type(getattr(typeddict, name)._cache).__name__ for name in TYPED_DICT_FUNCTIONS))
"""


def test_the_typed_dict_functions_are_cached_once_ffcv_is_imported():
    result = subprocess.run([sys.executable, '-c', PROBE], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['FunctionCache'] * 3
