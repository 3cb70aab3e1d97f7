#!/usr/bin/env bash
# Join a GPU host to a titlegen Prefect server as a Docker worker (deployment titlegen/full-docker).
#
# On the GPU host, in a checkout of this repository, with Docker and the NVIDIA container toolkit:
#
#   cp .env.example .env     # fill in HF_TOKEN, HF_ORG, PREFECT_API_AUTH_STRING, ...
#   PREFECT_API_URL=https://<server-host>/api deployments/docker_worker.sh       # TLS reverse proxy, or
#   PREFECT_API_URL=http://127.0.0.1:4200/api deployments/docker_worker.sh     # through an SSH tunnel
#
# It builds the training image titlegen-train:latest from docker/Dockerfile.train.unsloth (skip
# with TITLEGEN_SKIP_BUILD=1), makes a small venv with prefect + prefect-docker (.venv-worker),
# creates or updates the work pool titlegen-docker with `.env` wired in (deployments/docker_pool.py),
# deploys titlegen/full-docker, and runs the worker in the foreground (Ctrl-C stops it).
# A server on another machine must require a password (PREFECT_SERVER_API_AUTH_STRING there, the
# same value as PREFECT_API_AUTH_STRING here, from the environment or .env): this script refuses a
# non-loopback PREFECT_API_URL without it, and warns when the password would travel over plain http.
# See docs/deployment.md "Safety".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."   # relative volume sources (./outputs) resolve against this

: "${PREFECT_API_URL:?set PREFECT_API_URL=https://<server-host>/api (the titlegen Prefect server)}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_CLI_PROMPT=false
VENV="${TITLEGEN_WORKER_VENV:-.venv-worker}"
IMAGE="titlegen-train:latest"
ENV_FILE="${TITLEGEN_ENV_FILE:-.env}"

if [[ ! -x "$VENV/bin/prefect" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet "prefect==3.9.1" "prefect-docker==0.7.4"
fi

# The client password from .env unless set in the environment; names in .env must be plain names.
auth="$("$VENV/bin/python" - "$ENV_FILE" <<'EOF'
import os, re, sys
from dotenv import dotenv_values
values = dotenv_values(sys.argv[1]) if os.path.exists(sys.argv[1]) else {}
bad = [k for k in values if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
if bad:
    sys.exit(f"[titlegen] {sys.argv[1]}: not a variable name: {', '.join(map(repr, bad))}; fix or remove those lines.")
print(os.environ.get("PREFECT_API_AUTH_STRING") or values.get("PREFECT_API_AUTH_STRING") or "")
EOF
)" || exit 1
[[ -n "$auth" ]] && export PREFECT_API_AUTH_STRING="$auth"
api_host="$("$VENV/bin/python" -c 'import sys, urllib.parse; print(urllib.parse.urlsplit(sys.argv[1]).hostname or "")' "$PREFECT_API_URL")"
case "$api_host" in
  localhost|127.*|::1) ;;  # this machine, or the near end of an SSH tunnel
  *)
    if [[ -z "$auth" ]]; then
      echo "[titlegen] refusing to join $PREFECT_API_URL without a password: set PREFECT_API_AUTH_STRING (in .env or the" >&2
      echo "[titlegen] environment) to the server's PREFECT_SERVER_API_AUTH_STRING. A server without one lets anyone who" >&2
      echo "[titlegen] reaches it read the Hub token and run commands on this GPU host (docs/deployment.md, \"Safety\")." >&2
      exit 1
    fi
    if [[ "$PREFECT_API_URL" == http://* ]]; then
      echo "[titlegen] WARNING: $PREFECT_API_URL is plain http: the password and the Hub token cross the network" >&2
      echo "[titlegen] unencrypted. Put a TLS reverse proxy in front (https://) or use an SSH tunnel (docs/deployment.md)." >&2
    fi
    ;;
esac

if [[ "${TITLEGEN_SKIP_BUILD:-0}" != 1 ]]; then
  docker build -f docker/Dockerfile.train.unsloth -t "$IMAGE" .
fi
mkdir -p outputs   # bind-mounted at /app/outputs; the container's user must be able to write it

"$VENV/bin/python" deployments/docker_pool.py --env-file "$ENV_FILE"
# Deploying loads the flow to read its parameter schema, so it needs the project installed;
# the worker venv has only Prefect, so deploy from the project's .venv when it exists.
if [[ -x .venv/bin/prefect ]]; then
  .venv/bin/prefect --no-prompt deploy --name full-docker
  # One run at a time across full and full-docker (prefect.yaml, shared_concurrency_limit).
  "$VENV/bin/python" deployments/concurrency_limit.py
else
  echo "[titlegen] deploy titlegen/full-docker from a machine with the project installed: prefect deploy --name full-docker" >&2
fi
exec "$VENV/bin/prefect" worker start --pool titlegen-docker --type docker --limit 1
