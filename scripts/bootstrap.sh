#!/usr/bin/env bash
# Create .venv with tessera-pipeline and its test/server extras. Idempotent and quiet when done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv with $($PY --version)" >&2
    "$PY" -m venv .venv
fi
stamp=.venv/.tessera-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "bootstrap: installing tessera-pipeline and its dependencies into .venv (a minute or two)" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    # the CPU build of torch first: an unpinned resolve would pull a multi-GB CUDA build
    .venv/bin/python -m pip install -q torch==2.13.0
    .venv/bin/python -m pip install -q -e '.[server,dev]'
    echo "$want" > "$stamp"
fi
