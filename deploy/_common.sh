# Shared by start-head.sh and start-worker.sh (sourced, not run).
#
# Safe defaults: bind 127.0.0.1 unless --bind names an address; 0.0.0.0 / ::
# only with --allow-open (and a warning); dashboard off unless --dashboard;
# Ray token authentication always on (RAY_AUTH_MODE=token).
#
# Each start runs `ray start --block` in its own session and writes its pid
# to $SN40L_DEPLOY_DIR/NAME.pid (default ~/.sn40l-emu/deploy); stop.sh stops
# exactly those pids. We never run `ray stop`, which kills every Ray
# process on the machine.

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE_DIR="${SN40L_DEPLOY_DIR:-$HOME/.sn40l-emu/deploy}"

if [[ -z "${RAY:-}" ]]; then
  if [[ -x "$HERE/../.venv/bin/ray" ]]; then RAY="$HERE/../.venv/bin/ray"; else RAY="ray"; fi
fi

BIND="127.0.0.1"
SOCKETS=8
CPUS=""
NAME=""
TEMP_DIR=""
DASHBOARD=0
ALLOW_OPEN=0
DRY_RUN=0
EXTRA=()

die() { echo "$(basename "$0"): error: $*" >&2; exit 2; }

is_open() { [[ "$1" == "0.0.0.0" || "$1" == "::" || "$1" == "[::]" || "$1" == "*" ]]; }

check_bind() {
  [[ -n "$BIND" ]] || die "--bind needs an address"
  if is_open "$BIND"; then
    if [[ "$ALLOW_OPEN" != 1 ]]; then
      die "refusing to bind to $BIND (all interfaces): an open Ray cluster runs any code it is sent. Name one address of this machine with --bind, or add --allow-open if the network is firewalled."
    fi
    echo "warning: binding Ray to all interfaces ($BIND): an open Ray cluster runs any code it is sent; token authentication stays on, firewall the ports" >&2
  fi
  [[ "$SOCKETS" =~ ^[0-9]+$ ]] || die "--sockets must be a whole number, got '$SOCKETS'"
}

# The token every node of the cluster shares. Ray reads, in order: RAY_AUTH_TOKEN,
# the file named by RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token.
have_token() {
  [[ -n "${RAY_AUTH_TOKEN:-}" ]] && return 0
  if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
    [[ -s "$RAY_AUTH_TOKEN_PATH" ]] || die "RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH is empty or unreadable"
    return 0
  fi
  [[ -s "$HOME/.ray/auth_token" ]]
}

# safe_env head|worker
safe_env() {
  export RAY_AUTH_MODE=token
  export RAY_USAGE_STATS_ENABLED=0
  if [[ "$1" == worker ]]; then
    # Ray refuses to join a worker to a cluster while this is 0 ("multi-node not supported");
    # the address it binds to is still exactly --node-ip-address.
    export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1
  elif [[ "$BIND" == "127.0.0.1" || "$BIND" == "localhost" ]]; then
    # Ray 2.x otherwise advertises the machine's external address even for a local head.
    export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
  fi
}

# launch LOG_MARKER CMD...: start CMD in its own session, record its pid, wait until ready.
launch() {
  local ready="$1"; shift
  mkdir -p "$STATE_DIR"
  local pidfile="$STATE_DIR/$NAME.pid"
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    die "'$NAME' is already running (pid $(cat "$pidfile")); stop it with $HERE/stop.sh $NAME"
  fi
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "$@"; echo
    return 0
  fi
  local log="$TEMP_DIR/ray-start.log"
  # setsid (no fork: a background job of a script is no group leader) gives the
  # `ray start --block` process its own session, so stop.sh can find all it started.
  setsid "$@" >"$log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$pidfile"
  echo "$TEMP_DIR" >"$STATE_DIR/$NAME.tmpdir"
  local waited=0
  while ! eval "$ready"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pidfile"
      echo "ray start exited; its log ($log):" >&2
      tail -n 30 "$log" >&2
      exit 1
    fi
    if (( waited >= 600 )); then
      echo "ray start not ready after 60 s; stopping it (log: $log)" >&2
      "$HERE/stop.sh" "$NAME" >&2 || true
      exit 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}
