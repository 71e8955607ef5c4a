#!/usr/bin/env bash
# One-time (and idempotent) set-up: system packages, .venv, pinned Python packages.
# Re-running costs about a second: each step is skipped when its stamp is current.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=${APT_PACKAGES:-"pkg-config libturbojpeg0-dev libopencv-dev dataset-fashion-mnist"}
# Real photos for the benchmarks (30 MB): installed when possible, not required.
APT_OPTIONAL=${APT_OPTIONAL:-"endless-sky-data"}
PYTHON=${PYTHON:-python3}
VENV=.venv

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=""; optional=""
for pkg in $APT_PACKAGES; do installed "$pkg" || missing="$missing $pkg"; done
for pkg in $APT_OPTIONAL; do installed "$pkg" || optional="$optional $pkg"; done
if [ -n "$missing$optional" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages:$missing$optional"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing $optional >/dev/null
elif [ -n "$missing" ]; then
    cat >&2 <<MSG
setup: missing system packages:$missing
  Debian/Ubuntu (as root):  apt-get update && apt-get install -y$missing
  conda (no root):          conda install -c conda-forge pkg-config libjpeg-turbo opencv
                            (the Fashion-MNIST default data set then needs the four IDX files
                             of Fashion-MNIST in /usr/share/datasets/fashion-mnist/)
Install them and run this again.
MSG
    exit 1
elif [ -n "$optional" ]; then
    echo "setup: note: the benchmarks need$optional (apt-get install -y$optional)" >&2
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when the package list or the pins changed.
stamp="$VENV/.fkd-ffcv-installed"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing Python packages (first time: several minutes, torch is large)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[test]"
    echo "$want" > "$stamp"
fi
