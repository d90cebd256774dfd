# Shared by scripts/test.sh, bench.sh and demo.sh (sourced, not run).

# Rust from rustup, whatever the login shell set up.
export PATH="$HOME/.cargo/bin:$PATH"

# Starts the local Kafka broker unless it already runs, and stops it on exit
# only if this script started it.
ensure_kafka() {
  if ! scripts/kafka-local.sh status >/dev/null 2>&1; then
    scripts/kafka-local.sh start
    trap 'scripts/kafka-local.sh stop || true' EXIT
  fi
}
