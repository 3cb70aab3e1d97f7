#!/usr/bin/env bash
# Regenerate requirements/cpu-dev.lock: every package of `pip install -e '.[cpu,dev]'`, pinned, with
# the sha256 of each of its files, so an install from it (`pip install --require-hashes`) gets exactly
# these bytes or fails. Run after changing a dependency in pyproject.toml; tests/deployments/test_requirements_lock.py
# fails while the lock no longer satisfies pyproject.toml.
#
#   bash requirements/compile.sh            # needs uv (pip install uv)
#
# pip's own extra indexes and find-links (pip config, PIP_* variables) are passed on to uv, so the
# lock holds the files pip would install on this machine; torch is the local CPU wheel.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
UV="${UV:-uv}"
sources=()
pip_setting() { python3 -m pip config get "global.$1" 2>/dev/null || true; }
for link in ${PIP_FIND_LINKS:-$(pip_setting find-links)}; do sources+=(--find-links "$link"); done
for index in ${PIP_EXTRA_INDEX_URL:-$(pip_setting extra-index-url)}; do sources+=(--extra-index-url "$index"); done
compile() { "$UV" pip compile --generate-hashes --python-platform x86_64-manylinux_2_28 \
  --index-strategy unsafe-best-match "${sources[@]}" --custom-compile-command "bash requirements/compile.sh" "$@"; }

# CI and `make setup` on a CPU machine: .[cpu,dev], torch the local CPU build.
compile pyproject.toml requirements/lock-inputs.txt --extra cpu --extra dev --python-version 3.11 \
  --override requirements/overrides.txt -o requirements/cpu-dev.lock
# docker/Dockerfile.tools (python 3.11): the runtime dependencies and setuptools. torch is left out: the image
# installs it first from the PyTorch CPU index (a wheel this lock could not hash here).
compile pyproject.toml requirements/lock-inputs.txt --python-version 3.11 --override requirements/overrides.txt \
  --no-emit-package torch -o requirements/tools.lock
# No lock for docker/Dockerfile.train.unsloth (.[gpu]): its torch, torchvision and xformers must
# come from the PyTorch CUDA 12.8 index, which this machine cannot reach; resolved against PyPI
# instead, the lock pulled CUDA 13 libraries that clash with that torch (docs/deployment.md, Safety).
