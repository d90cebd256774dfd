#!/usr/bin/env bash
# Toxiproxy (Shopify, Go, MIT), the TCP fault proxy of the network-fault
# tests (crates/testkit/src/toxiproxy.rs): it sits between the connector
# and the brokers or the API simulator and adds latency, bandwidth limits,
# stalls, resets and outages on demand, driven by its HTTP API.
#
#   scripts/toxiproxy.sh path          prints the binary's path, building
#                                      it first when missing
#   scripts/toxiproxy.sh start [PORT]  starts it in the background (API on
#                                      127.0.0.1, default port 8474), waits
#                                      until it answers, prints its URL
#   scripts/toxiproxy.sh stop [PORT]   stops it
#
# It is built once from the Go module proxy into the cache (under 30 s, a
# 16 MB binary), like the Kafka jars. Environment: GO (default: go on
# PATH, else /usr/local/go/bin/go).
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VERSION=v2.5.0
MODULE=github.com/Shopify/toxiproxy/v2
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/identify-connector
BIN=$CACHE_ROOT/bin/toxiproxy-${VERSION#v}

log() { printf 'toxiproxy: %s\n' "$*" >&2; }

# -X sets what GET /version answers (else "git").
build() {
  go_build_cached toxiproxy "$BIN" "$MODULE/cmd/server" "$VERSION" \
    -ldflags "-X $MODULE.Version=$VERSION"
}

dir_of() { echo "$CACHE_ROOT/toxiproxy-$1"; }

up() { curl -fsS -o /dev/null "http://127.0.0.1:$1/version" 2>/dev/null; }

start() {
  local port=$1 dir
  build
  dir=$(dir_of "$port")
  mkdir -p "$dir"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null && up "$port"; then
    echo "http://127.0.0.1:$port"
    return 0
  fi
  nohup "$BIN" -host 127.0.0.1 -port "$port" >"$dir/toxiproxy.log" 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 1 100); do
    if up "$port"; then
      log "ready on 127.0.0.1:$port (pid $(cat "$dir/pid"))"
      echo "http://127.0.0.1:$port"
      return 0
    fi
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
    sleep 0.1
  done
  log "it did not answer on 127.0.0.1:$port; its log:"
  tail -n 20 "$dir/toxiproxy.log" >&2
  exit 1
}

stop() {
  local dir
  dir=$(dir_of "$1")
  [ -f "$dir/pid" ] || return 0
  kill "$(cat "$dir/pid")" 2>/dev/null || true
  rm -f "$dir/pid"
}

case "${1:-}" in
  path) build; echo "$BIN" ;;
  start) start "${2:-8474}" ;;
  stop) stop "${2:-8474}" ;;
  *) echo "usage: $0 path|start [PORT]|stop [PORT]" >&2; exit 2 ;;
esac
