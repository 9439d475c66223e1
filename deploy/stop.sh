#!/usr/bin/env bash
# Stop what deploy/start-head.sh / start-worker.sh started on this machine, by pid file.
#
#   deploy/stop.sh            # every NAME.pid in $SN40L_DEPLOY_DIR (default ~/.sn40l-emu/deploy)
#   deploy/stop.sh NAME...    # only these (head, worker, ...)
#
# Each pid is a `ray start --block` that leads its own session: it and every
# process of that session (the Ray processes it spawned) get SIGTERM at once,
# and whatever still runs $STOP_GRACE_S seconds later (default 5: Ray's own
# graceful shutdown can take far longer on a busy machine) gets SIGKILL.
# We never run `ray stop`: it kills every Ray process on the machine, other users' included.
set -euo pipefail
STATE_DIR="${SN40L_DEPLOY_DIR:-$HOME/.sn40l-emu/deploy}"
GRACE="${STOP_GRACE_S:-5}"
[[ "$GRACE" =~ ^[0-9]+$ ]] || { echo "STOP_GRACE_S must be whole seconds" >&2; exit 2; }

names=("$@")
if ((${#names[@]} == 0)); then
  shopt -s nullglob
  for f in "$STATE_DIR"/*.pid; do names+=("$(basename "$f" .pid)"); done
fi
((${#names[@]})) || { echo "nothing to stop (no pid files in $STATE_DIR)"; exit 0; }

# The pid is still ours when it leads its own session and runs `ray start` (guards against pid reuse).
ours() {
  [[ "$(ps -o sid= -p "$1" | tr -d ' ')" == "$1" ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q "start --.*block"
}
# Running (not zombie) processes of the sessions given, their leaders included.
session_pids() {
  ps -e -o pid=,sid=,stat= | awk -v s=" $* " 'index(s, " " $2 " ") && $3 !~ /^Z/ {print $1}'
}

stopping=() sessions=()
for name in "${names[@]}"; do
  pidfile="$STATE_DIR/$name.pid"
  if [[ ! -f "$pidfile" ]]; then echo "$name: no pid file ($pidfile)" >&2; continue; fi
  pid="$(cat "$pidfile")"
  if ! [[ "$pid" =~ ^[0-9]+$ ]]; then echo "$name: bad pid file" >&2; rm -f "$pidfile"; continue; fi
  if kill -0 "$pid" 2>/dev/null && ! ours "$pid"; then
    echo "$name: pid $pid is no longer the ray start we launched; leaving it alone" >&2
    rm -f "$pidfile"; continue
  fi
  stopping+=("$name") sessions+=("$pid")
done
((${#sessions[@]})) || exit 0

left="$(session_pids "${sessions[@]}")"
if [[ -n "$left" ]]; then
  # shellcheck disable=SC2086
  kill -TERM $left 2>/dev/null || true
  for _ in $(seq $((GRACE * 10))); do
    left="$(session_pids "${sessions[@]}")"
    [[ -z "$left" ]] && break
    sleep 0.1
  done
  # SIGKILL whatever is left, again and again: a member may have forked during the grace
  # period, and a killed process takes a moment to vanish on a loaded machine
  for _ in $(seq 100); do
    [[ -z "$left" ]] && break
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
    sleep 0.1
    left="$(session_pids "${sessions[@]}")"
  done
fi

for i in "${!stopping[@]}"; do
  name="${stopping[$i]}"
  tmp="$(cat "$STATE_DIR/$name.tmpdir" 2>/dev/null || true)"
  [[ -n "$tmp" && -d "$tmp" && "$tmp" == */sn40l-ray-* ]] && rm -rf "$tmp"
  rm -f "$STATE_DIR/$name.pid" "$STATE_DIR/$name.tmpdir" "$STATE_DIR/$name.address"
  echo "$name: stopped pid ${sessions[$i]}"
done
