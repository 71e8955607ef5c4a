# Prepares a GPU machine without network (no registry, maybe no pip; its python3 3.12 already
# has torch, numpy, numba, opencv) to run this repo, from the bundle that tools/gpu_bundle.sh
# built on a machine with network and that was copied over with the checkout (docs/gpu.md).
# Nothing is installed: the bundle's site/ holds ffcv, fastargs, terminaltables, timm and
# safetensors unpacked (timm imports without huggingface_hub, which is not carried), and
# ffcv's extension finds its libraries in site/ffcv.libs/ through its own RPATH, so no
# LD_LIBRARY_PATH is set. Meant to be SOURCED from bash:
#     source tools/gpu_prepare.sh && python3 ...
# so that PYTHONPATH=<bundle>/site:<repo> (the repo is used in place) stays set for the commands
# that follow; returns non-zero when a check fails. Run with bash instead, it only checks.
# Options: --bundle DIR (or FKD_GPU_BUNDLE=DIR; default <repo>/build/gpu_bundle);
# PYTHON=... for an interpreter other than python3. When sourced, other arguments are ignored
# (bash hands a sourced file the caller's own arguments when it is given none).

_fkd_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_fkd_bundle=${FKD_GPU_BUNDLE:-$_fkd_root/build/gpu_bundle}
case "${1:-}" in
    --bundle) _fkd_bundle=${2:-} ;;
    --bundle=*) _fkd_bundle=${1#--bundle=} ;;
    *) if [ "${BASH_SOURCE[0]}" = "$0" ] && [ $# -gt 0 ]; then
           echo "gpu_prepare: unknown argument '$1' (usage: bash tools/gpu_prepare.sh [--bundle DIR])" >&2
           exit 2
       fi ;;
esac
# Absolute (relative to the caller's directory), as PYTHONPATH outlives any cd.
[ -d "$_fkd_bundle" ] && _fkd_bundle=$(cd "$_fkd_bundle" && pwd)

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced: do the work in a child bash, where set -e holds (bash ignores it inside
    # `source ... && ...` and in functions called from `if`), then export into this shell.
    if bash "${BASH_SOURCE[0]}" --bundle "$_fkd_bundle"; then
        for _fkd_p in "$_fkd_root" "$_fkd_bundle/site"; do   # ends as site:repo:...
            case ":${PYTHONPATH:-}:" in *":$_fkd_p:"*) ;;
                *) export PYTHONPATH=$_fkd_p${PYTHONPATH:+:$PYTHONPATH} ;; esac
        done
        echo "gpu_prepare: exported PYTHONPATH=$PYTHONPATH"
        unset _fkd_root _fkd_bundle _fkd_p; return 0
    fi
    unset _fkd_root _fkd_bundle; return 1
fi

set -euo pipefail
cd "$_fkd_root"
PY=${PYTHON:-python3}
B=$_fkd_bundle
[ -n "$B" ] || { echo "gpu_prepare: --bundle needs a directory" >&2; exit 2; }
SITE=$B/site
ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
    || { echo "gpu_prepare: cannot run $PY (set PYTHON=...)" >&2; exit 1; }
# ffcv's extension is compiled for CPython 3.12 only.
[ "$ver" = 3.12 ] || { echo "gpu_prepare: $PY is Python $ver; the bundle is built for 3.12 (set PYTHON=...)" >&2; exit 1; }
ext=$(ls "$SITE"/ffcv/_libffcv.cpython-312-*.so 2>/dev/null | head -1) || true
if [ -z "$ext" ] || [ ! -d "$SITE/fastargs" ] || [ ! -d "$SITE/terminaltables" ] \
        || [ ! -d "$SITE/timm" ] || [ ! -d "$SITE/safetensors" ] \
        || ! ls "$SITE"/ffcv.libs/lib*.so* >/dev/null 2>&1; then
    echo "gpu_prepare: $B is missing or incomplete (no site/ with ffcv, its ffcv.libs/, fastargs," >&2
    echo "  terminaltables, timm, safetensors): run 'bash tools/gpu_bundle.sh' on a machine with network and copy" >&2
    echo "  build/gpu_bundle to this one (see docs/gpu.md), or point --bundle/FKD_GPU_BUNDLE at it" >&2
    exit 1
fi

# The extension's RPATH must resolve every library it needs, and the bundled ones from the
# bundle (not from this image). Same system set as tools/gpu_bundle.sh leaves out.
skip='^(linux-vdso|ld-linux-x86-64|libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s|libz)\.so'
if command -v ldd >/dev/null; then
    deps=$(ldd "$ext") || { echo "gpu_prepare: ldd failed on $ext" >&2; exit 1; }
    if grep "not found" <<<"$deps" >&2; then
        echo "gpu_prepare: $ext lacks the libraries above (not in $SITE/ffcv.libs, not on this image)" >&2
        exit 1
    fi
    bad=$(awk '$2 == "=>" {print $1, $3}' <<<"$deps" | while read -r so path; do
        [[ $so =~ $skip ]] || [ "$path" -ef "$SITE/ffcv.libs/$so" ] || echo "  $so => $path"
    done)
    if [ -n "$bad" ]; then
        echo "gpu_prepare: these libraries of $ext resolve outside $SITE/ffcv.libs (RPATH lost?):" >&2
        echo "$bad" >&2; exit 1
    fi
    echo "gpu_prepare: ldd: $(grep -c "/ffcv.libs/" <<<"$deps") libraries from the bundle, none missing"
else
    echo "gpu_prepare: no ldd here; the imports below still load the extension"
fi

export PYTHONPATH=$SITE:$_fkd_root${PYTHONPATH:+:$PYTHONPATH}
# Imports, versions, and ffcv's JPEG decode (libjpeg-turbo) and resize (OpenCV) on one image.
"$PY" - "$SITE" <<'EOF'
import importlib.metadata as md, os, sys
sys.modules["huggingface_hub"] = None  # timm must import without it, as the check runs it
import numpy as np
import ffcv, fastargs, fkd_ffcv.loading.loaders, torch, timm, safetensors
import cv2
from ffcv.libffcv import imdecode, resize_crop
site = os.path.realpath(sys.argv[1])
for m in (ffcv, fastargs, timm, safetensors):
    if not os.path.realpath(m.__file__).startswith(site + os.sep):
        sys.exit(f"gpu_prepare: {m.__name__} comes from {m.__file__}, not from {site}")
img = np.add.outer(np.arange(48) * 5, np.arange(64) * 3).astype(np.uint8)[..., None].repeat(3, 2)
jpg = np.frombuffer(cv2.imencode(".jpg", img)[1].tobytes(), np.uint8)
dec = np.zeros_like(img)
if imdecode(jpg, dec, 48, 64, 48, 64, 0, 0, 1, 1, False, False) != 0 or abs(dec.astype(int) - img).mean() > 3:
    sys.exit("gpu_prepare: ffcv's imdecode failed")
small = np.zeros((24, 32, 3), np.uint8)
resize_crop(dec, 0, 48, 0, 64, small)
if abs(small.astype(int) - cv2.resize(dec, (32, 24), interpolation=cv2.INTER_AREA)).max() > 1:
    sys.exit("gpu_prepare: ffcv's resize disagrees with cv2.resize")
def version(p):
    try:
        return md.version(p)
    except md.PackageNotFoundError:
        return "absent"
print("gpu_prepare: python", sys.version.split()[0], "|",
      ", ".join(f"{p} {version(p)}" for p in ("ffcv", "fastargs", "timm", "safetensors", "torch", "torchvision", "numpy", "numba")),
      "| ffcv imdecode/resize ok")
print("gpu_prepare: cuda available:", torch.cuda.is_available(),
      "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no device")
EOF
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu --format=csv,noheader \
    2>/dev/null | sed 's/^/gpu_prepare: nvidia-smi: /' || echo "gpu_prepare: nvidia-smi not available"
