# Prepares a lent GPU machine (no network; the image's python3 3.12 already has torch, numpy,
# numba, opencv) to run this repo, from the bundle that tools/gpu_bundle.sh built here and the
# device run carried (carry=["build/gpu_bundle"]). Meant to be SOURCED from the repo root:
#     source tools/gpu_prepare.sh && python3 ...
# so that LD_LIBRARY_PATH (ffcv's extension links the bundled OpenCV/libjpeg-turbo libraries)
# and PYTHONPATH (the repo itself, not installed) stay set for the commands that follow.
# Run with bash instead, it only installs and checks. Idempotent: pip keeps installed versions.

_fkd_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced: do the work in a child bash, where set -e holds (bash ignores it inside
    # `source ... && ...` and in functions called from `if`), then export into this shell.
    if bash "${BASH_SOURCE[0]}"; then
        case ":${LD_LIBRARY_PATH:-}:" in *":$_fkd_root/build/gpu_bundle/lib:"*) ;;
            *) export LD_LIBRARY_PATH=$_fkd_root/build/gpu_bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ;; esac
        case ":${PYTHONPATH:-}:" in *":$_fkd_root:"*) ;;
            *) export PYTHONPATH=$_fkd_root${PYTHONPATH:+:$PYTHONPATH} ;; esac
        echo "gpu_prepare: exported LD_LIBRARY_PATH=$LD_LIBRARY_PATH PYTHONPATH=$PYTHONPATH"
        unset _fkd_root; return 0
    fi
    unset _fkd_root; return 1
fi

set -euo pipefail
cd "$_fkd_root"
PY=${PYTHON:-python3}
B=build/gpu_bundle
ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
    || { echo "gpu_prepare: no $PY on PATH" >&2; exit 1; }
# The ffcv wheel holds a C extension compiled for CPython 3.12 only.
[ "$ver" = 3.12 ] || { echo "gpu_prepare: $PY is Python $ver; the bundle is built for 3.12 (set PYTHON=...)" >&2; exit 1; }
if ! ls "$B"/wheels/ffcv-*-cp312-*.whl >/dev/null 2>&1 || [ ! -f "$B/lib/libopencv_core.so.406" ]; then
    echo "gpu_prepare: $_fkd_root/$B is missing or incomplete: run 'bash tools/gpu_bundle.sh' on the" >&2
    echo "  build machine and carry build/gpu_bundle to this one (see docs/gpu.md)" >&2; exit 1
fi

"$PY" -m pip install -q --no-index --no-deps --find-links "$B/wheels" ffcv fastargs terminaltables

export LD_LIBRARY_PATH=$_fkd_root/$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONPATH=$_fkd_root${PYTHONPATH:+:$PYTHONPATH}
# find_spec of a top-level package does not import it (importing ffcv pulls in torch).
ext=$(ls "$("$PY" -c 'import importlib.util as u; print(u.find_spec("ffcv").submodule_search_locations[0])')"/_libffcv*.so)
if ldd "$ext" | grep "not found" >&2; then
    echo "gpu_prepare: $ext lacks the libraries above (not in $B/lib, not on this image)" >&2; exit 1
fi
"$PY" - <<'EOF'
import importlib.metadata as md, sys
import ffcv, fastargs, fkd_ffcv.loaders, torch
print("gpu_prepare: python", sys.version.split()[0], "|",
      ", ".join(f"{p} {md.version(p)}" for p in ("ffcv", "fastargs", "torch", "torchvision", "numpy", "numba")))
print("gpu_prepare: cuda available:", torch.cuda.is_available(),
      "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no device")
EOF
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu --format=csv,noheader \
    2>/dev/null | sed 's/^/gpu_prepare: nvidia-smi: /' || echo "gpu_prepare: nvidia-smi not available"
