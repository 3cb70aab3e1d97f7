#!/usr/bin/env bash
# Join a GPU host to a titlegen Prefect server as a Docker worker (deployment titlegen/full-docker).
#
# On the GPU host, in a checkout of this repository, with Docker and the NVIDIA container toolkit:
#
#   cp .env.example .env     # fill in HF_TOKEN, HF_ORG, ... (secrets become Prefect Secret blocks)
#   PREFECT_API_URL=http://<server-host>:4200/api deployments/docker_worker.sh
#
# It builds the training image titlegen-train:latest from docker/Dockerfile.train.unsloth (skip
# with TITLEGEN_SKIP_BUILD=1), makes a small venv with prefect + prefect-docker (.venv-worker),
# creates or updates the work pool titlegen-docker with `.env` wired in (deployments/docker_pool.py),
# deploys titlegen/full-docker, and runs the worker in the foreground (Ctrl-C stops it).
# The server must listen beyond loopback: start it with `TITLEGEN_HOST=0.0.0.0 make up`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."   # relative volume sources (./outputs) resolve against this

: "${PREFECT_API_URL:?set PREFECT_API_URL=http://<server-host>:4200/api (the titlegen Prefect server)}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_CLI_PROMPT=false
VENV="${TITLEGEN_WORKER_VENV:-.venv-worker}"
IMAGE="titlegen-train:latest"

if [[ "${TITLEGEN_SKIP_BUILD:-0}" != 1 ]]; then
  docker build -f docker/Dockerfile.train.unsloth -t "$IMAGE" .
fi
if [[ ! -x "$VENV/bin/prefect" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet "prefect==3.9.1" "prefect-docker==0.7.4"
fi
mkdir -p outputs   # bind-mounted at /app/outputs; the container's user must be able to write it

"$VENV/bin/python" deployments/docker_pool.py --env-file .env
# Deploying loads the flow to read its parameter schema, so it needs the project installed;
# the worker venv has only Prefect, so deploy from the project's .venv when it exists.
if [[ -x .venv/bin/prefect ]]; then
  .venv/bin/prefect --no-prompt deploy --name full-docker
else
  echo "[titlegen] deploy titlegen/full-docker from a machine with the project installed: prefect deploy --name full-docker" >&2
fi
exec "$VENV/bin/prefect" worker start --pool titlegen-docker --type docker --limit 1
