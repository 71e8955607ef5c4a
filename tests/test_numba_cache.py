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


NOWHERE_TO_CACHE = """
import numpy as np
from numba.core import caching
def refuse(self, py_func):  # what numba raises with no writable cache location
    raise RuntimeError(f'cannot cache function {py_func.__name__!r}: no locator available')
caching.FunctionCache.__init__ = refuse
import fkd_ffcv.loading.decoders  # every module with numba functions, and ffcv
from fkd_ffcv.records.crops import box_pixels
from fkd_ffcv.numba_cache import on_disk
print(on_disk(), type(box_pixels._cache).__name__,
      box_pixels(np.array([0, 0, 32767, 32767], np.int16), 10, 20))
"""


def test_without_a_writable_cache_location_everything_compiles_in_the_process():
    """A read-only install with no writable home: numba refuses `cache=True` at import, so the
    package asks first (`on_disk`) and compiles in each process instead."""
    result = subprocess.run([sys.executable, '-c', NOWHERE_TO_CACHE], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split('\n')[0] == 'False NullCache (0, 0, 10, 20)'
