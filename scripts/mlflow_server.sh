#!/usr/bin/env bash
# A local MLflow tracking server for lits runs (and for the tracking tests): the pinned
# mlflow from .venv, a SQLite backend, artifacts served through the server
# (--serve-artifacts), listening on 127.0.0.1 only.
#
#   scripts/mlflow_server.sh start DATA_DIR [PORT] [--watch-pid PID]
#       Starts the server with its database and artifacts in DATA_DIR, waits until /health
#       answers (MLflow takes tens of seconds to start) and prints the tracking URI.
#       PORT 0 or absent picks a free port. With --watch-pid the server stops by itself
#       once process PID has exited (tests use this so no server outlives them).
#   scripts/mlflow_server.sh stop DATA_DIR
#       Stops the server started for DATA_DIR (its pid is in DATA_DIR/server.pid).
#
# Environment: MLFLOW_START_TIMEOUT (seconds to wait for /health, default 180).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python="$root/.venv/bin/python"
mlflow="$root/.venv/bin/mlflow"

die() { echo "mlflow_server: error: $*" >&2; exit 1; }
usage() { sed -n '5,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# Stops the process group led by the server (uvicorn runs its workers as children).
stop_pid() {
  local pid=$1
  alive "$pid" || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do alive "$pid" || return 0; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

cmd=${1:-}; [ $# -gt 0 ] && shift
case "$cmd" in
start)
  [ $# -ge 1 ] || usage
  dir=$1; shift
  port=0
  if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then port=$1; shift; fi
  watch=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --watch-pid) [ $# -ge 2 ] || usage; watch=$2; shift 2 ;;
      *) usage ;;
    esac
  done
  if ! [[ "$port" =~ ^[0-9]+$ ]] || [ "$port" -gt 65535 ]; then
    die "port must be a number from 0 to 65535, got '$port'"
  fi
  [ -x "$mlflow" ] || die "$mlflow not found; run scripts/setup.sh first"
  mkdir -p "$dir" || die "cannot create $dir"
  dir=$(cd "$dir" && pwd)
  pidfile="$dir/server.pid"
  if [ -f "$pidfile" ] && alive "$(cat "$pidfile")"; then
    die "a server for $dir is already running (pid $(cat "$pidfile")); stop it first"
  fi
  if [ "$port" = 0 ]; then
    port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  fi
  uri="http://127.0.0.1:$port"
  log="$dir/server.log"
  # setsid: the server leads its own process group, so stop reaches its workers too.
  setsid "$mlflow" server \
    --backend-store-uri "sqlite:///$dir/mlflow.db" \
    --serve-artifacts --artifacts-destination "$dir/artifacts" \
    --host 127.0.0.1 --port "$port" --workers 1 \
    >"$log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$pidfile"
  echo "$port" >"$dir/server.port"
  if [ -n "$watch" ]; then
    # Detached watcher: stops the server once the watched process is gone.
    ( trap '' HUP
      while alive "$watch" && alive "$pid"; do sleep 1; done
      stop_pid "$pid"
      [ "$(cat "$pidfile" 2>/dev/null)" = "$pid" ] && rm -f "$pidfile"
    ) >/dev/null 2>&1 </dev/null &
    disown
  fi
  timeout=${MLFLOW_START_TIMEOUT:-180}
  "$python" - "$uri/health" "$pid" "$timeout" <<'PY' || { stop_pid "$pid"; rm -f "$pidfile"; echo "--- $log (last lines)" >&2; tail -n 20 "$log" >&2; die "server did not become healthy at $uri"; }
import os, sys, time, urllib.request
url, pid, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
end = time.monotonic() + timeout


def answers(u, seconds):
    try:
        with urllib.request.urlopen(u, timeout=seconds) as r:
            return 200 <= r.status < 300
    except Exception:
        return False


while time.monotonic() < end:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("the server exited")
    if answers(url, 2):
        # The first tracking call sets up the database (seconds, more on a busy machine):
        # make it here, so that the first client does not time out on it.
        api = url.rsplit("/", 1)[0] + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
        answers(api, max(1.0, end - time.monotonic()))
        sys.exit(0)
    time.sleep(0.25)
sys.exit(f"no answer from {url} within {timeout:.0f} s")
PY
  echo "$uri"
  ;;
stop)
  [ $# -eq 1 ] || usage
  pidfile="$1/server.pid"
  [ -f "$pidfile" ] || die "no server.pid in $1 (not started, or already stopped)"
  stop_pid "$(cat "$pidfile")"
  rm -f "$pidfile"
  ;;
*)
  usage
  ;;
esac
