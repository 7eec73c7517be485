#!/usr/bin/env bash
# Creates .venv-bench: a separate environment for the peer benchmarks (datatrove is never
# installed into the project's .venv). Installed from the locks like .venv: homegrown at
# docker/requirements.lock, the peers (benchmarks/peers.txt) at benchmarks/peers.lock, so a
# benchmark run next month measures the same code. To move the peers' versions on purpose:
#   rm -rf .venv-bench && PEERS_LOCKED=0 bash benchmarks/setup_env.sh && .venv-bench/bin/python docker/lock.py --bench
# Idempotent: a stamp file records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv-bench
TORCH_VERSION=2.13.0          # the CPU wheel; any other torch pulls a multi-GB CUDA build
LOCKS=(docker/requirements.lock docker/requirements-test.lock benchmarks/peers.lock)
STAMP="$VENV/.installed"
WANT="torch==${TORCH_VERSION} $(cat pyproject.toml benchmarks/peers.txt "${LOCKS[@]}" | sha1sum | cut -c1-12)"

export PIP_DISABLE_PIP_VERSION_CHECK=1

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "setup_env: $VENV up to date"
  exit 0
fi

CONSTRAINTS=(-c docker/requirements.lock -c docker/requirements-test.lock)
PEERS=(-c benchmarks/peers.lock)
[[ "${PEERS_LOCKED:-1}" == 1 ]] || PEERS=()

[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q "${CONSTRAINTS[@]}" --upgrade pip setuptools
# torch first, pinned, so nothing later lets pip choose a (CUDA) build.
"$VENV/bin/pip" install -q "${CONSTRAINTS[@]}" "torch==${TORCH_VERSION}"
"$VENV/bin/pip" install -q "${CONSTRAINTS[@]}" --no-build-isolation -e . "torch==${TORCH_VERSION}"
"$VENV/bin/pip" install -q "${CONSTRAINTS[@]}" "${PEERS[@]}" -r benchmarks/peers.txt "torch==${TORCH_VERSION}"
if [[ "${PEERS_LOCKED:-1}" == 1 ]]; then
  "$VENV/bin/python" docker/lock.py --bench --check
fi
"$VENV/bin/python" -c "import datatrove, spacy, orjson, components.clean.clean; print('setup_env: datatrove', datatrove.__version__ if hasattr(datatrove, '__version__') else '0.10.1')"
echo "$WANT" > "$STAMP"
