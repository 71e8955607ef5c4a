#!/usr/bin/env bash
# Builds build/gpu_bundle/ for a GPU machine that has no network, no package registry and
# possibly no pip:
#   wheels/          ffcv (C extension compiled here for CPython 3.12), fastargs, terminaltables,
#                    timm and safetensors (the device image may lack them or hold other versions)
#   site/            those wheels unpacked, ready to import from PYTHONPATH (no install step)
#   site/ffcv.libs/  the shared libraries that ffcv's extension needs beyond glibc, libstdc++,
#                    libgcc_s and libz, found through DT_RPATH ($ORIGIN...) set with patchelf,
#                    so no LD_LIBRARY_PATH is needed and no other process sees them
# The device has the rest (torch, numpy, numba, opencv-python-headless, ...); see docs/gpu.md.
# Idempotent: wheels already in the bundle are kept (delete one to rebuild it); site/ is
# re-derived from the wheels each run (seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

PY312=${PY312:-/root/.pyenv/versions/3.12.1/bin/python3.12}  # device runs CPython 3.12
VENV=${BUNDLE_VENV:-/tmp/fkd-gpu-bundle-py312}                # throwaway build venv
SETUPTOOLS=${SETUPTOOLS:-setuptools==84.2.1}                  # what .venv built ffcv with
OUT=build/gpu_bundle
SITE=$OUT/site
LIBS=$SITE/ffcv.libs
pin() { grep -E "^$1==" constraints.txt || { echo "gpu_bundle: no $1== pin in constraints.txt" >&2; exit 1; }; }

# ffcv's setup.py asks pkg-config for opencv4 and libturbojpeg (it does not use numpy);
# patchelf writes the bundled libraries' search path into the extension and the libraries.
need=""
for pkg in pkg-config libturbojpeg0-dev libopencv-dev patchelf; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need="$need $pkg"
done
if [ -n "$need" ]; then
    [ "$(id -u)" = 0 ] || { echo "gpu_bundle: need root to apt-get install$need" >&2; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi
[ -x "$PY312" ] || { echo "gpu_bundle: no CPython 3.12 at $PY312 (set PY312=...)" >&2; exit 1; }

[ -x "$VENV/bin/python" ] || "$PY312" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "$SETUPTOOLS" wheel
mkdir -p "$OUT/wheels"

# --no-build-isolation: build with the pinned setuptools above, not whatever is newest.
# timm is pure Python; safetensors' wheel (compiled, abi3) is downloaded for this Python. timm
# imports without huggingface_hub, which is left out (nothing is downloaded on the device).
specs="$(pin ffcv) $(pin fastargs) $(pin terminaltables) $(pin timm) $(pin safetensors)"
for spec in $specs; do
    name=${spec%%==*}; ver=${spec##*==}
    if ls "$OUT/wheels/$name-$ver-"*.whl >/dev/null 2>&1; then continue; fi
    echo "gpu_bundle: building $spec"
    "$VENV/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT/wheels" "$spec"
done
ls "$OUT"/wheels/ffcv-*-cp312-*.whl >/dev/null

# site/: the wheels unpacked as pip would install them (pip runs here, not on the device).
# No .pyc files: the device's Python writes its own on first import.
rm -rf "${SITE:?}" "${OUT:?}/lib"    # lib/: where older versions of this script put the libraries
"$VENV/bin/python" -m pip install -q --no-index --no-deps --no-compile --find-links "$OUT/wheels" \
    --target "$SITE" $specs
rm -rf "${SITE:?}/bin"           # console scripts (none today) would point at this venv's python
ext=$(ls "$SITE"/ffcv/_libffcv*.so)

# Not bundled: glibc and the GCC C++ runtime (every image has them, and a second copy of
# libc/libstdc++ would clash with the image's), and zlib (Priority: required on Debian/Ubuntu;
# torch and Python load the image's own).
skip='^(linux-vdso|ld-linux-x86-64|libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s|libz)\.so'
# ldd lists the whole closure (dependencies of dependencies); copy the resolved files under
# the names the loader asks for (the SONAMEs), following the alternatives symlinks.
mkdir -p "$LIBS"
ldd "$ext" | awk '$2 == "=>" {print $1, $3}' | while read -r so path; do
    [[ $so =~ $skip ]] && continue
    [ -f "$path" ] || { echo "gpu_bundle: $so not found here" >&2; exit 1; }
    cp -L "$path" "$LIBS/$so"; chmod u+w "$LIBS/$so"
done

# Search paths. DT_RPATH (--force-rpath), not patchelf's default DT_RUNPATH: the loader uses a
# DT_RUNPATH only for the object's own NEEDED entries, a DT_RPATH also for those of the
# libraries it pulls in, and a DT_RPATH is searched before LD_LIBRARY_PATH. Each bundled
# library gets $ORIGIN as well, so each finds its own dependencies in ffcv.libs/ whoever
# loads it. Nothing else in the process (torch, cv2, numpy) searches ffcv.libs/; a library of
# the same SONAME that is already loaded (e.g. an image's libtbb.so.12) is shared, as always.
# shellcheck disable=SC2016  # $ORIGIN is for the loader, not the shell
patchelf --force-rpath --set-rpath '$ORIGIN/../ffcv.libs' "$ext"
for f in "$LIBS"/*; do patchelf --force-rpath --set-rpath '$ORIGIN' "$f"; done

# Closure check: every NEEDED entry of the extension and of ffcv.libs/* is bundled or skipped,
# and (with no LD_LIBRARY_PATH) the loader resolves every bundled one into ffcv.libs/.
for f in "$ext" "$LIBS"/*; do
    for n in $(objdump -p "$f" | awk '/NEEDED/ {print $2}'); do
        [[ $n =~ $skip ]] || [ -f "$LIBS/$n" ] || { echo "gpu_bundle: $f needs $n, not bundled" >&2; exit 1; }
    done
done
env -u LD_LIBRARY_PATH ldd "$ext" | awk '$2 == "=>" {print $1, $3}' | while read -r so path; do
    [[ $so =~ $skip ]] && continue
    [ "$path" -ef "$LIBS/$so" ] || { echo "gpu_bundle: $so resolves to $path, not to $LIBS" >&2; exit 1; }
done

# Oldest glibc / libstdc++ the device must have (the highest versions these files require).
maxver() { objdump -T "$ext" "$LIBS"/* | grep -o "$1_[0-9.]*" | sort -uV | tail -1; }
{
    echo "built $(date -u +%F) on $(. /etc/os-release; echo "$PRETTY_NAME") with $("$VENV/bin/python" --version)"
    echo "needs at least: $(maxver GLIBC) $(maxver GLIBCXX) $(maxver CXXABI)"
    echo "rpath: ${ext#"$OUT"/} $(patchelf --print-rpath "$ext"); ffcv.libs/* \$ORIGIN"
    (cd "$OUT" && find wheels site/ffcv.libs -type f -printf '%s %p\n' | sort -k2)
    (cd "$OUT" && du -sb site/* | grep -v 'site/ffcv.libs$' | awk '{print $1, $2 "/"}')
} > "$OUT/MANIFEST.txt"
cat "$OUT/MANIFEST.txt"
echo "gpu_bundle: $OUT is $(du -sb "$OUT" | cut -f1) bytes ($(du -sh "$OUT" | cut -f1))"
