#!/usr/bin/env bash
# A Confluent-compatible Schema Registry for the registry-format tests
# (tests/registry.rs) and the demo: the AxonOps Schema Registry (Go,
# Apache-2.0), in-memory storage, no auth, on 127.0.0.1.
#
#   scripts/schema-registry.sh path          prints the binary's path,
#                                            building it first when missing
#   scripts/schema-registry.sh start [PORT]  starts it in the background
#                                            (default port 8081), waits until
#                                            it answers, prints its URL
#   scripts/schema-registry.sh stop [PORT]   stops it
#   scripts/schema-registry.sh run [PORT]    runs it in the foreground
#
# It is built once from the Go module proxy into the cache (about a
# minute, a 32 MB binary), like the Kafka jars. Environment: GO (default:
# go on PATH, else /usr/local/go/bin/go).
set -euo pipefail

VERSION=v0.2.1
MODULE=github.com/axonops/axonops-schema-registry
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/identify-connector
BIN=$CACHE_ROOT/bin/schema-registry-${VERSION#v}

log() { printf 'schema-registry: %s\n' "$*" >&2; }

build() {
  [ -x "$BIN" ] && return 0
  local go=${GO:-}
  if [ -z "$go" ]; then
    go=$(command -v go || true)
    go=${go:-/usr/local/go/bin/go}
  fi
  [ -x "$go" ] || { log "Go ($go) is missing; set GO"; exit 1; }
  log "building the AxonOps Schema Registry $VERSION (first run only, about a minute)"
  local start=$SECONDS module
  module=$(mktemp -d)
  mkdir -p "$(dirname "$BIN")"
  # `go install ...@version` is refused (the module has replace
  # directives); a module of our own that imports the command works. Both
  # `go get`s are needed, or go.sum stays incomplete.
  if ! (
    cd "$module"
    printf '//go:build tools\n\npackage tools\n\nimport _ "%s/cmd/schema-registry"\n' "$MODULE" >tools.go
    "$go" mod init registry-build >"$module.log" 2>&1 &&
      "$go" get "$MODULE@$VERSION" >>"$module.log" 2>&1 &&
      "$go" get "$MODULE/cmd/schema-registry@$VERSION" >>"$module.log" 2>&1 &&
      "$go" build -o "$BIN.partial" "$MODULE/cmd/schema-registry" >>"$module.log" 2>&1
  ); then
    log "the build failed; its output:"
    tail -n 30 "$module.log" >&2
    rm -rf "$module" "$module.log" "$BIN.partial"
    exit 1
  fi
  rm -rf "$module" "$module.log"
  mv "$BIN.partial" "$BIN"
  log "built in $((SECONDS - start)) s: $BIN"
}

dir_of() { echo "$CACHE_ROOT/schema-registry-$1"; }

config() {
  local port=$1 dir
  dir=$(dir_of "$port")
  mkdir -p "$dir"
  cat >"$dir/config.yaml" <<YAML
server:
  host: 127.0.0.1
  port: $port
storage:
  type: memory
security:
  auth:
    enabled: false
YAML
  echo "$dir/config.yaml"
}

up() { curl -fsS -o /dev/null "http://127.0.0.1:$1/subjects" 2>/dev/null; }

start() {
  local port=${1:-8081} dir cfg
  build
  dir=$(dir_of "$port")
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null && up "$port"; then
    echo "http://127.0.0.1:$port"
    return 0
  fi
  cfg=$(config "$port")
  nohup "$BIN" --config "$cfg" >"$dir/registry.log" 2>&1 &
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
  tail -n 20 "$dir/registry.log" >&2
  exit 1
}

stop() {
  local port=${1:-8081} dir
  dir=$(dir_of "$port")
  [ -f "$dir/pid" ] || return 0
  kill "$(cat "$dir/pid")" 2>/dev/null || true
  rm -f "$dir/pid"
}

case "${1:-}" in
  path) build; echo "$BIN" ;;
  start) start "${2:-8081}" ;;
  stop) stop "${2:-8081}" ;;
  run) build; exec "$BIN" --config "$(config "${2:-8081}")" ;;
  *) echo "usage: $0 path|start [PORT]|stop [PORT]|run [PORT]" >&2; exit 2 ;;
esac
