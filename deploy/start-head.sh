#!/usr/bin/env bash
# Start the Ray head of an sn40l-emu cluster on this machine.
#
#   deploy/start-head.sh [--bind ADDR] [--port 6379] [--sockets 8] [--cpus N]
#                        [--name head] [--temp-dir DIR] [--dashboard] [--allow-open]
#                        [--dry-run] [-- EXTRA RAY START ARGS]
#
# --bind     the address Ray binds to and advertises (default 127.0.0.1: this
#            machine only). For a cluster of several machines give this
#            machine's address on the network the workers share.
# --sockets  how many emulated sockets this machine hosts: it advertises the
#            custom resource sn40l_socket=N (0: the head hosts none).
# --allow-open  needed for --bind 0.0.0.0 / :: (all interfaces).
#
# Token authentication is on. Without a token (RAY_AUTH_TOKEN,
# RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) one is generated in
# ~/.ray/auth_token; copy that file to every worker machine (or export
# RAY_AUTH_TOKEN there) before running start-worker.sh.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

PORT=6379
NAME=head
while (($#)); do
  case "$1" in
    --bind) BIND="${2:?--bind needs an address}"; shift 2 ;;
    --port) PORT="${2:?--port needs a number}"; shift 2 ;;
    --sockets) SOCKETS="${2:?--sockets needs a number}"; shift 2 ;;
    --cpus) CPUS="${2:?--cpus needs a number}"; shift 2 ;;
    --name) NAME="${2:?--name needs a name}"; shift 2 ;;
    --temp-dir) TEMP_DIR="${2:?--temp-dir needs a directory}"; shift 2 ;;
    --dashboard) DASHBOARD=1; shift ;;
    --allow-open) ALLOW_OPEN=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
check_bind
[[ "$PORT" =~ ^[0-9]+$ ]] || die "--port must be a number, got '$PORT'"
safe_env head
if ! have_token; then
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "# would generate a token: $RAY get-auth-token --generate" >&2
  else
    "$RAY" get-auth-token --generate >/dev/null
    echo "generated a Ray auth token in ~/.ray/auth_token" >&2
  fi
fi
[[ -n "$TEMP_DIR" ]] || TEMP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sn40l-ray-XXXXXX")"
mkdir -p "$TEMP_DIR"

cmd=("$RAY" start --head --block --port "$PORT" --node-ip-address "$BIND"
     --resources "{\"sn40l_socket\": $SOCKETS}" --temp-dir "$TEMP_DIR" --disable-usage-stats)
[[ -n "$CPUS" ]] && cmd+=(--num-cpus "$CPUS")
if [[ "$DASHBOARD" == 1 ]]; then
  cmd+=(--include-dashboard=true --dashboard-host "$BIND")
else
  cmd+=(--include-dashboard=false)
fi
cmd+=("${EXTRA[@]}")

launch '[[ -s "$TEMP_DIR/ray_current_cluster" ]]' "${cmd[@]}"
[[ "$DRY_RUN" == 1 ]] && exit 0
ADDRESS="$(cat "$TEMP_DIR/ray_current_cluster")"
echo "$ADDRESS" >"$STATE_DIR/$NAME.address"
cat <<EOF
Ray head '$NAME' is up at $ADDRESS (pid $(cat "$STATE_DIR/$NAME.pid"), $SOCKETS sn40l_socket, temp dir $TEMP_DIR).
Join a worker machine (after giving it this cluster's token, e.g. scp ~/.ray/auth_token WORKER:.ray/auth_token):
  deploy/start-worker.sh --address $ADDRESS --bind <that machine's address> --sockets 8
Create a node on it:     sn40l-emu up --address $ADDRESS --sockets 16 --placement spread
Stop what this started:  deploy/stop.sh $NAME
EOF
