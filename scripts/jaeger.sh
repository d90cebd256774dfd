#!/usr/bin/env bash
# Jaeger, the tracing backend of the telemetry test (tests/telemetry.rs)
# and of local trace viewing: the all-in-one binary (memory storage; OTLP
# on 127.0.0.1:4317 gRPC and :4318 HTTP, query API and UI on :16686).
#
#   scripts/jaeger.sh path    prints the binary's path, building it first
#                             when it is not cached
#   scripts/jaeger.sh run     runs it in the foreground (UI: http://127.0.0.1:16686)
#
# It is built once from the Go module proxy into the cache (about 40 s of
# downloads and 4 to 7 minutes of build on 2 cores, a 121 MB binary), like
# the Kafka jars and helm. Environment: GO (default: go on PATH, else
# /usr/local/go/bin/go).
set -euo pipefail

JAEGER_VERSION=v1.75.0
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/identify-connector
BIN=$CACHE_ROOT/bin/jaeger-${JAEGER_VERSION#v}

log() { printf 'jaeger: %s\n' "$*" >&2; }

build() {
  [ -x "$BIN" ] && return 0
  local go=${GO:-}
  if [ -z "$go" ]; then
    go=$(command -v go || true)
    go=${go:-/usr/local/go/bin/go}
  fi
  [ -x "$go" ] || { log "Go ($go) is missing; set GO"; exit 1; }
  log "building Jaeger $JAEGER_VERSION (first run only, takes a few minutes)"
  local start=$SECONDS module
  module=$(mktemp -d)
  mkdir -p "$(dirname "$BIN")"
  if ! (
    cd "$module"
    "$go" mod init jaeger-build >"$module.log" 2>&1 &&
      "$go" get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" >>"$module.log" 2>&1 &&
      "$go" build -o "$BIN.partial" github.com/jaegertracing/jaeger/cmd/jaeger >>"$module.log" 2>&1
  ); then
    log "the build failed; its output:"
    tail -n 30 "$module.log" >&2
    rm -rf "$module" "$module.log" "$BIN.partial"
    exit 1
  fi
  rm -rf "$module" "$module.log"
  mv "$BIN.partial" "$BIN"
  log "Jaeger $JAEGER_VERSION built in $((SECONDS - start)) s: $BIN"
}

case "${1:-}" in
  path) build; echo "$BIN" ;;
  run) build; exec "$BIN" ;;
  *) echo "usage: $0 path|run" >&2; exit 2 ;;
esac
