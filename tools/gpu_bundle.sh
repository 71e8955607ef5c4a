#!/usr/bin/env bash
# Builds build/gpu_bundle/ for a lent GPU machine that has no network and no package registry:
#   wheels/  ffcv (C extension compiled here for CPython 3.12), fastargs, terminaltables
#   lib/     the shared libraries that ffcv's extension needs beyond glibc/libstdc++/libgcc_s
# The device has the rest (torch, numpy, numba, opencv-python-headless, ...); see docs/gpu.md.
# Idempotent: wheels already in the bundle are kept (delete one to rebuild it); lib/ is
# re-derived from the extension each run (seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

PY312=${PY312:-/root/.pyenv/versions/3.12.1/bin/python3.12}  # device runs CPython 3.12
VENV=${BUNDLE_VENV:-/tmp/fkd-gpu-bundle-py312}                # throwaway build venv
SETUPTOOLS=${SETUPTOOLS:-setuptools==84.2.1}                  # what .venv built ffcv with
OUT=build/gpu_bundle
pin() { grep -E "^$1==" constraints.txt; }                    # same versions as CI

# ffcv's setup.py asks pkg-config for opencv4 and libturbojpeg (it does not use numpy).
need=""
for pkg in pkg-config libturbojpeg0-dev libopencv-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need="$need $pkg"
done
if [ -n "$need" ]; then
    [ "$(id -u)" = 0 ] || { echo "gpu_bundle: need root to apt-get install$need" >&2; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi

[ -x "$VENV/bin/python" ] || "$PY312" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "$SETUPTOOLS" wheel
mkdir -p "$OUT/wheels" "$OUT/lib"

# --no-build-isolation: build with the pinned setuptools above, not whatever is newest.
for spec in "$(pin ffcv)" "$(pin fastargs)" "$(pin terminaltables)"; do
    name=${spec%%==*}; ver=${spec##*==}
    if ls "$OUT/wheels/$name-$ver-"*.whl >/dev/null 2>&1; then continue; fi
    echo "gpu_bundle: building $spec"
    "$VENV/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT/wheels" "$spec"
done
whl=$(ls "$OUT"/wheels/ffcv-*-cp312-*.whl)

# The extension, unpacked once, to read what it links.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$VENV/bin/python" -m zipfile -e "$whl" "$tmp"
ext=$(ls "$tmp"/ffcv/_libffcv*.so)

# Not bundled: glibc and the GCC C++ runtime (every image has them, and a second copy of
# libc/libstdc++ would clash with the image's), and zlib (Priority: required on Debian/Ubuntu;
# a copy first on LD_LIBRARY_PATH would replace the image's own for torch and Python too).
skip='^(linux-vdso|ld-linux-x86-64|libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s|libz)\.so'
# ldd lists the whole closure (dependencies of dependencies); copy the resolved files under
# the names the loader asks for (the SONAMEs), following the alternatives symlinks.
rm -f "$OUT"/lib/*
ldd "$ext" | awk '$2 == "=>" {print $1, $3}' | while read -r so path; do
    [[ $so =~ $skip ]] && continue
    [ -f "$path" ] || { echo "gpu_bundle: $so not found here" >&2; exit 1; }
    cp -L "$path" "$OUT/lib/$so"
done

# Closure check: every NEEDED entry of the extension and of lib/* is in lib/ or skipped.
for f in "$ext" "$OUT"/lib/*; do
    for n in $(objdump -p "$f" | awk '/NEEDED/ {print $2}'); do
        [[ $n =~ $skip ]] || [ -f "$OUT/lib/$n" ] || { echo "gpu_bundle: $f needs $n, not bundled" >&2; exit 1; }
    done
done

# Oldest glibc / libstdc++ the device must have (the highest versions these files require).
maxver() { objdump -T "$ext" "$OUT"/lib/* | grep -o "$1_[0-9.]*" | sort -uV | tail -1; }
{
    echo "built $(date -u +%F) on $(. /etc/os-release; echo "$PRETTY_NAME") with $("$VENV/bin/python" --version)"
    echo "needs at least: $(maxver GLIBC) $(maxver GLIBCXX) $(maxver CXXABI)"
    (cd "$OUT" && ls -l wheels lib | awk 'NF > 4 {print $5, $NF}')
} > "$OUT/MANIFEST.txt"
cat "$OUT/MANIFEST.txt"
echo "gpu_bundle: $OUT is $(du -sb "$OUT" | cut -f1) bytes ($(du -sh "$OUT" | cut -f1))"
