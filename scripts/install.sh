#!/usr/bin/env bash
# Set up toucan-speakemb in ./.venv on a fresh machine of the project's kind (Debian, Python 3.11, CPU).
#   bash scripts/install.sh          the package and its dependencies
#   bash scripts/install.sh --test   also the test tools and the Debian programs the tests speak with
# What it does, and what to do instead on an ordinary machine, is explained in docs/installing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST=0
[ "${1:-}" = "--test" ] && WITH_TEST=1
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

# Debian programs the tests use, each installed only when missing: espeak-ng and flite speak test audio;
# chromium (and chromium-driver, for Selenium users) runs the listening-test page in a real browser.
if [ "$WITH_TEST" = 1 ]; then
  MISSING=""
  for pair in espeak-ng:espeak-ng flite:flite chromium:chromium chromedriver:chromium-driver; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || MISSING="$MISSING ${pair#*:}"
  done
  if [ -n "$MISSING" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "[install] Debian packages for the tests:$MISSING"
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $MISSING >/dev/null
    else
      echo "[install] note: not installed:$MISSING; tests that need them will be skipped"
    fi
  fi
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade pip >/dev/null 2>&1 || true
# torch first, pinned: a machine of the project's kind keeps a CPU build of 2.13.0 on disk; an unpinned
# torch (asked for by speechbrain) would pull a multi-GB CUDA build. With it installed, torch>=2.1 below installs nothing more.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$PIP" install -q "torch==${TORCH_VERSION:-2.13.0}"
if [ "$WITH_TEST" = 1 ]; then "$PIP" install -q -e ".[test]"; else "$PIP" install -q -e .; fi
# speechbrain imports torchaudio; PyPI's torchaudio is CUDA-built and cannot load its extension beside a CPU
# torch. The doctor disables the extension only when it fails to load, and checks the result.
"$VENV/bin/toucan-speakemb" doctor --repair-torchaudio
"$VENV/bin/python" -c "import speechbrain, torchaudio, toucan_speakemb; print('[install] ok: toucan-speakemb', toucan_speakemb.__version__, '| torch', __import__('torch').__version__, '| speechbrain', speechbrain.__version__)"
