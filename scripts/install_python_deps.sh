#!/usr/bin/env bash
# The Python side of `make install`: the TensorFlow build for this machine, the core requirements
# (requirements-core.txt, then requirements.txt: training, Keras and export), those of each role named
# (requirements-ROLE.txt, the extras of pyproject.toml), then voxtrace itself, editable. Idempotent: pip skips what is already installed.
#
#   scripts/install_python_deps.sh [ROLE...]    e.g. corpus serve export whisper onnx tflite test
#   scripts/install_python_deps.sh --tensorflow print the TensorFlow requirement this machine gets
#
# TensorFlow: tensorflow[and-cuda] where an NVIDIA GPU is present (`nvidia-smi -L` works, or the driver's
# /proc/driver/nvidia exists) or with GPU=1; otherwise tensorflow-cpu on x86_64 and tensorflow elsewhere
# (GPU=0 forces this). The version is the one pinned in requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
NVIDIA_DRIVER_DIR=${NVIDIA_DRIVER_DIR:-/proc/driver/nvidia}
TENSORFLOW_LINE='^tensorflow(-cpu)?(\[[^]]*\])?(==| |;|$)'

nvidia_gpu_present() {
  nvidia-smi -L >/dev/null 2>&1 || [ -d "$NVIDIA_DRIVER_DIR" ]
}

tensorflow_requirement() {
  local version
  version=$(sed -n -E 's/^tensorflow(-cpu)?==([^ ;#]+).*/\2/p' requirements.txt | head -n 1)
  if [ -z "$version" ]; then
    echo "requirements.txt pins no TensorFlow version (a line tensorflow==X or tensorflow-cpu==X)" >&2
    return 1
  fi
  local gpu=${GPU:-}
  if [ -z "$gpu" ]; then
    if nvidia_gpu_present; then gpu=1; else gpu=0; fi
  fi
  case "$gpu" in
    1) echo "tensorflow[and-cuda]==$version" ;;
    0) if [ "$(uname -m)" = x86_64 ]; then echo "tensorflow-cpu==$version"; else echo "tensorflow==$version"; fi ;;
    *) echo "GPU must be 1 (CUDA build), 0 (CPU build) or unset (detect an NVIDIA GPU); got GPU=$gpu" >&2
       return 1 ;;
  esac
}

if [ "${1:-}" = "--tensorflow" ]; then
  tensorflow_requirement
  exit
fi

tensorflow=$(tensorflow_requirement)
core=$(mktemp)
trap 'rm -f "$core"' EXIT
grep -v -E "$TENSORFLOW_LINE" requirements.txt >"$core"  # TensorFlow comes from the line chosen above
requirements=(-r requirements-core.txt -r "$core")
for role in "$@"; do
  if [ ! -f "requirements-$role.txt" ]; then
    echo "unknown role '$role': there is no requirements-$role.txt" >&2
    exit 1
  fi
  requirements+=(-r "requirements-$role.txt")
done

# The CPU build and the standard one install the same `tensorflow` module: never keep both.
case "$tensorflow" in
  tensorflow-cpu*) other=tensorflow ;;
  *) other=tensorflow-cpu ;;
esac
if "$PYTHON" -m pip show --quiet "$other" >/dev/null 2>&1; then
  echo "removing $other: this machine gets $tensorflow"
  "$PYTHON" -m pip uninstall --quiet --yes "$other"
fi

echo "installing $tensorflow, requirements-core.txt, requirements.txt${*:+ and the roles: $*}"
"$PYTHON" -m pip install --quiet -c requirements-constraints.txt "$tensorflow" "${requirements[@]}"
"$PYTHON" -m pip install --quiet --no-deps -e .
TF_CPP_MIN_LOG_LEVEL=2 "$PYTHON" -c 'from voxtrace.training.strategy import tensorflow_summary; print(tensorflow_summary())'
