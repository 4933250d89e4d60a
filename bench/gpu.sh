#!/usr/bin/env bash
# The GPU rows of issue 23 in one command (docs/performance.md, "GPU rows"): installs the reference
# packages from the git-ignored bench/wheels/ (carried to the GPU machine), then runs bench/gpu.py.
#
#   bench/gpu.sh --fetch                  # here, with a package index: fill bench/wheels/ (pip download --no-deps)
#   bench/gpu.sh [bench/gpu.py options]   # there: install what is missing from bench/wheels/, run
#   bench/gpu.sh --device cpu --tiny      # the same code paths on CPU, in under a minute
#
# A package that is neither installed nor in bench/wheels/ is not an error: bench/gpu.py records the parts
# that need it as "not available" and runs the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${HARNESS_BENCH_WHEELS:-bench/wheels}
SITE=${HARNESS_BENCH_SITE:-/tmp/harness-bench-site}
# name==version module: the reference backends, robustbench, imagecorruptions, and what they import that the
# GPU image lacks (setuptools < 81 for pkg_resources: robustbench 1.1.1 and imagecorruptions 1.1.2 import it).
PACKAGES=(
  "torchattacks==3.5.1 torchattacks"
  "pyautoattack==0.2.0 pyautoattack"
  "robustbench==1.1.1 robustbench"
  "geotorch==0.3.0 geotorch"
  "gdown==5.1.0 gdown"
  "imagecorruptions==1.1.2 imagecorruptions"
  "setuptools==80.9.0 pkg_resources"
)

if [[ "${1:-}" == "--fetch" ]]; then
  mkdir -p "$WHEELS"
  specs=()
  for p in "${PACKAGES[@]}"; do specs+=("${p%% *}"); done
  # Pure-Python wheels for the GPU machine's Python 3.12 (x86-64); --no-deps: its image has the rest.
  exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform any -d "$WHEELS" "${specs[@]}"
fi

install=()
for p in "${PACKAGES[@]}"; do
  spec=${p%% *} module=${p##* }
  name=${spec%%==*}
  if "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$module') is None)" 2>/dev/null; then
    continue  # already importable here
  fi
  whl=$(ls "$WHEELS"/"${name}"-*.whl 2>/dev/null | head -n 1 || true)
  if [[ -n "$whl" ]]; then
    install+=("$whl")
  else
    echo "bench/gpu.sh: $name is not installed and not in $WHEELS: the parts that need it will say so" >&2
  fi
done
if ((${#install[@]})); then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${install[@]}"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" bench/gpu.py "$@"
