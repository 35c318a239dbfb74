#!/usr/bin/env bash
# Create .venv and install reelface into it. Safe to run again: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        pip install -q torch            # a CUDA build
    else
        pip install -q torch==2.13.0    # a CPU build; an open range would pull a multi-GB CUDA build
    fi
fi
pip install -q -e ".[test]"
