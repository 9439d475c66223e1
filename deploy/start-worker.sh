#!/usr/bin/env bash
# Join this machine to an sn40l-emu Ray cluster as a worker node.
#
#   deploy/start-worker.sh --address HEAD_IP:PORT [--bind ADDR|auto] [--sockets 8]
#                          [--cpus N] [--name worker] [--temp-dir DIR] [--allow-open]
#                          [--dry-run] [-- EXTRA RAY START ARGS]
#
# --bind     the address this raylet binds to and advertises (default
#            127.0.0.1, right when the head runs on this machine too); `auto`
#            takes the source address this machine uses to reach the head.
# --sockets  how many emulated sockets this machine hosts (sn40l_socket=N).
#
# The worker must present the cluster's token: copy the head's
# ~/.ray/auth_token here (or set RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH);
# `ray get-auth-token` on the head prints it.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

ADDRESS=""
NAME=worker
while (($#)); do
  case "$1" in
    --address) ADDRESS="${2:?--address needs HOST:PORT}"; shift 2 ;;
    --bind) BIND="${2:?--bind needs an address}"; shift 2 ;;
    --sockets) SOCKETS="${2:?--sockets needs a number}"; shift 2 ;;
    --cpus) CPUS="${2:?--cpus needs a number}"; shift 2 ;;
    --name) NAME="${2:?--name needs a name}"; shift 2 ;;
    --temp-dir) TEMP_DIR="${2:?--temp-dir needs a directory}"; shift 2 ;;
    --allow-open) ALLOW_OPEN=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ -n "$ADDRESS" ]] || die "--address HEAD_IP:PORT is required (start-head.sh prints it)"
if [[ "$BIND" == auto ]]; then
  head_ip="${ADDRESS%:*}"
  BIND="$(ip -o route get "$head_ip" 2>/dev/null | sed -n 's/.* src \([^ ]*\).*/\1/p')"
  [[ -n "$BIND" ]] || die "--bind auto: no route to the head at $head_ip"
  echo "binding to $BIND (the address this machine uses to reach $head_ip)" >&2
fi
check_bind
safe_env worker
if ! have_token && [[ "$DRY_RUN" != 1 ]]; then
  die "no Ray auth token here. Copy the head's ~/.ray/auth_token to ~/.ray/auth_token on this machine (or export RAY_AUTH_TOKEN=\"\$(ray get-auth-token)\" as printed on the head) and run again."
fi
[[ -n "$TEMP_DIR" ]] || TEMP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sn40l-ray-XXXXXX")"
mkdir -p "$TEMP_DIR"

cmd=("$RAY" start --block --address "$ADDRESS" --node-ip-address "$BIND"
     --resources "{\"sn40l_socket\": $SOCKETS}" --temp-dir "$TEMP_DIR" --disable-usage-stats)
[[ -n "$CPUS" ]] && cmd+=(--num-cpus "$CPUS")
cmd+=("${EXTRA[@]}")

launch 'grep -q "Ray runtime started" "$TEMP_DIR/ray-start.log" 2>/dev/null' "${cmd[@]}"
[[ "$DRY_RUN" == 1 ]] && exit 0
echo "Ray worker '$NAME' joined $ADDRESS as $BIND (pid $(cat "$STATE_DIR/$NAME.pid"), $SOCKETS sn40l_socket). Stop it with: deploy/stop.sh $NAME"
