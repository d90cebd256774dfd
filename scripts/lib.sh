# Shared by scripts/test.sh, bench.sh, image.sh and toxiproxy.sh (sourced,
# not run).

# Rust from rustup, whatever the login shell set up.
export PATH="$HOME/.cargo/bin:$PATH"

# Starts the local Kafka broker unless it already runs, and stops it on exit
# only if this script started it.
ensure_kafka() {
  if ! scripts/kafka-local.sh status >/dev/null 2>&1; then
    scripts/kafka-local.sh start
    STOP_ON_EXIT+=("scripts/kafka-local.sh stop")
  fi
  trap 'for c in "${STOP_ON_EXIT[@]}"; do $c || true; done' EXIT
}

# ensure_cluster: the three-broker cluster (and its Toxiproxy) running;
# stopped on exit when started here.
ensure_cluster() {
  if ! scripts/kafka-local.sh cluster status >/dev/null 2>&1; then
    scripts/kafka-local.sh cluster start
    STOP_ON_EXIT+=("scripts/kafka-local.sh cluster stop")
  fi
  trap 'for c in "${STOP_ON_EXIT[@]}"; do $c || true; done' EXIT
}
STOP_ON_EXIT=()

# go_build_cached NAME BIN PACKAGE VERSION [BUILD FLAG...]: builds the Go
# command PACKAGE (of its module at VERSION) into BIN, unless BIN already
# exists, in a throwaway module that pins it with `go get -tool` (go 1.24
# or later). NAME labels the messages. Environment: GO (default: go on
# PATH, else /usr/local/go/bin/go). Used by toxiproxy.sh.
go_build_cached() {
  local name=$1 bin=$2 package=$3 version=$4
  shift 4
  [ -x "$bin" ] && return 0
  local go=${GO:-}
  if [ -z "$go" ]; then
    go=$(command -v go || true)
    go=${go:-/usr/local/go/bin/go}
  fi
  [ -x "$go" ] || { printf '%s: Go (%s) is missing; set GO\n' "$name" "$go" >&2; return 1; }
  printf '%s: building %s@%s (first run only)\n' "$name" "$package" "$version" >&2
  local start=$SECONDS module
  module=$(mktemp -d)
  mkdir -p "$(dirname "$bin")"
  if ! (
    cd "$module"
    "$go" mod init "$name-build" >"$module.log" 2>&1 &&
      "$go" get -tool "$package@$version" >>"$module.log" 2>&1 &&
      "$go" build "$@" -o "$bin.partial" "$package" >>"$module.log" 2>&1
  ); then
    printf '%s: the build failed; its output:\n' "$name" >&2
    tail -n 30 "$module.log" >&2
    rm -rf "$module" "$module.log" "$bin.partial"
    return 1
  fi
  rm -rf "$module" "$module.log"
  mv "$bin.partial" "$bin"
  printf '%s: built in %d s: %s\n' "$name" "$((SECONDS - start))" "$bin" >&2
}
