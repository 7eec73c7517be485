#!/usr/bin/env bash
# Creates .venv-bench: a separate environment for the peer benchmarks (datatrove is never
# installed into the project's .venv). Idempotent: a stamp file records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv-bench
TORCH_VERSION=2.13.0          # the CPU wheel; any other torch pulls a multi-GB CUDA build
DATATROVE_VERSION=0.10.1
PEERS="datatrove==${DATATROVE_VERSION} orjson spacy ftfy xxhash<4"  # ftfy: FTFYFormatter; xxhash: dedup hashing (4.x rejects the str datatrove 0.10.1 passes)
STAMP="$VENV/.installed"
WANT="torch==${TORCH_VERSION} ${PEERS} $(sha1sum pyproject.toml | cut -c1-12)"

export PIP_DISABLE_PIP_VERSION_CHECK=1

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "setup_env: $VENV up to date"
  exit 0
fi

[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
# torch first, pinned, so nothing later lets pip choose a (CUDA) build.
"$VENV/bin/pip" install -q "torch==${TORCH_VERSION}"
"$VENV/bin/pip" install -q -e . "torch==${TORCH_VERSION}"
# shellcheck disable=SC2086
"$VENV/bin/pip" install -q $PEERS "torch==${TORCH_VERSION}"
"$VENV/bin/python" -c "import datatrove, spacy, orjson, components.clean.clean; print('setup_env: datatrove', datatrove.__version__ if hasattr(datatrove, '__version__') else '${DATATROVE_VERSION}')"
echo "$WANT" > "$STAMP"
