# Shared helpers for the scripts in this folder. Source it; do not run it.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STATE="$ROOT/.local/stack"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Run a named stage and print how long it took.
stage() {
  local name="$1"; shift
  local start=$SECONDS
  log "── $name"
  "$@"
  local rc=$?
  log "── $name: $((SECONDS - start)) s (exit $rc)"
  return $rc
}

# Wait until a command succeeds, up to N seconds.
wait_for() {
  local seconds="$1"; shift
  local until=$((SECONDS + seconds))
  while ! "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $until ] || return 1
    sleep 0.2
  done
}

# Whether the process in a pid file is alive.
pid_alive() {
  local pidfile="$1"
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}
