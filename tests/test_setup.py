"""make setup without root: it names the missing system packages and how to get them, and stops."""
import os
import shutil
import subprocess
import tempfile

from conftest import REPO


def test_setup_without_root_names_missing_packages_and_stops():
    work = tempfile.mkdtemp(prefix='fkd-setup-')
    try:
        os.chmod(work, 0o755)
        os.mkdir(os.path.join(work, 'tools'))
        shutil.copy(REPO / 'tools' / 'setup.sh', os.path.join(work, 'tools', 'setup.sh'))
        drop_root = (['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']
                     if os.geteuid() == 0 else [])
        env = dict(os.environ, APT_PACKAGES='pkg-config fkd-no-such-package')
        result = subprocess.run([*drop_root, 'bash', os.path.join(work, 'tools', 'setup.sh')],
                                env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert 'missing system packages: fkd-no-such-package' in result.stderr
        assert 'apt-get install -y fkd-no-such-package' in result.stderr
        assert 'conda install' in result.stderr
        assert not os.path.exists(os.path.join(work, '.venv'))  # stopped before doing anything
    finally:
        shutil.rmtree(work, ignore_errors=True)
