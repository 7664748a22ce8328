#!/usr/bin/env bash
# Debian packages voxtrace needs, by role (the roles of scripts/install_python_deps.sh):
#   scripts/install_system_deps.sh [ROLE...]
# always: decoders for audio that soundfile cannot read; corpus: the speech engines of the demo corpus, the
# packages whose human speech recordings make its bona fide ("unknown") class, and the prose its cross-corpus
# parts speak (fortunes-min); test: the browser of the web app's tests (the tests also build small corpora, so
# `make test` names corpus too).
# Idempotent: installs only what is missing.
set -euo pipefail

PACKAGES=(ffmpeg libsndfile1)
for role in "$@"; do
  case "$role" in
    corpus)
      PACKAGES+=(
        espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
        festvox-ca-ona-hts festvox-italp16k festvox-itapc16k sox
        asterisk-core-sounds-en-wav fillets-ng-data fillets-ng-data-cs fillets-ng-data-nl
        klettres-data ktuberling-data hedgewars-data fortunes-min
      ) ;;
    test) PACKAGES+=(chromium) ;;
    serve | export | whisper | onnx | tflite) ;;  # Python packages only
    *) echo "unknown role '$role' (corpus, serve, export, whisper, onnx, tflite, test)" >&2; exit 1 ;;
  esac
done

missing=()
for package in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "all ${#PACKAGES[@]} system packages are installed"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "missing packages: ${missing[*]}; run this script as root or install sudo" >&2
  exit 1
fi

echo "installing: ${missing[*]}"
"${SUDO[@]}" apt-get update
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
