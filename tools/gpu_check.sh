#!/usr/bin/env bash
# The one-call GPU check: prepares the machine, then runs tools/gpu_check.py's steps (write,
# label, train FKD/plain/online KD, resume + eval-only, torchrun, timing table), each under its
# own time cap, writing results under --out as they finish. docs/gpu.md says how to run it.
#
#     bash tools/gpu_check.sh --out DIR [--budget SECONDS] [--dry-run]
#
# On a GPU machine after `make setup`: bash tools/gpu_check.sh --out build/gpu-check. On one
# without network, copy the checkout with build/gpu_bundle (bash tools/gpu_bundle.sh where there
# is network; FKD_GPU_BUNDLE=DIR for another place). Without CUDA it is a CPU dry run of the
# same steps (under 2 minutes here), which .ci/run runs. Exits non-zero when a step failed or
# timed out.
set -euo pipefail
cd "$(dirname "$0")/.."
export FKD_GPU_CHECK_STARTED=$(date +%s)  # the budget counts the preparation too

out=""
for ((i = 1; i <= $#; i++)); do
    case "${!i}" in
        --out) j=$((i + 1)); out=${!j:-} ;;
        --out=*) out=${!i#--out=} ;;
    esac
done
[ -n "$out" ] || { echo "usage: bash tools/gpu_check.sh --out DIR [--budget S] [--dry-run]" >&2; exit 2; }
mkdir -p "$out"
log="$out/gpu_check.log"
: > "$log"
say() { echo "gpu_check: $*" | tee -a "$log"; }

# The interpreter: this checkout's .venv where it exists (here, CI), else the image's python3.
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHON=$PY PYTHONUNBUFFERED=1

# Prepare: ffcv and fastargs from the carried bundle when the interpreter lacks them.
if ! "$PY" -c 'import ffcv, fastargs' >/dev/null 2>&1; then
    bundle=$(cd "${FKD_GPU_BUNDLE:-build/gpu_bundle}" 2>/dev/null && pwd || echo "${FKD_GPU_BUNDLE:-build/gpu_bundle}")
    say "ffcv or fastargs missing from $PY: using the bundle $bundle"
    if ! bash tools/gpu_prepare.sh --bundle "$bundle" > >(tee -a "$log") 2>&1; then
        say "preparation failed (see above)"; exit 1
    fi
    export PYTHONPATH="$bundle/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    # A dry run imports timm and safetensors as the device will, from the bundle, when one
    # was built here (its ffcv is for CPython 3.12, so only these two are put in front).
    site=${FKD_GPU_BUNDLE:-build/gpu_bundle}/site
    if [ -d "$site/timm" ] && [ -d "$site/safetensors" ]; then
        overlay=$(mktemp -d)
        ln -s "$(cd "$site" && pwd)/timm" "$(cd "$site" && pwd)/safetensors" "$overlay/"
        export PYTHONPATH="$overlay:$PYTHONPATH"
        say "timm and safetensors from the bundle ($site), as on the device"
    fi
fi
say "python $("$PY" -c 'import sys; print(sys.version.split()[0])') at $PY"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader \
        2>&1 | sed 's/^/gpu_check: nvidia-smi: /' | tee -a "$log"
fi

"$PY" tools/gpu_check.py "$@"
