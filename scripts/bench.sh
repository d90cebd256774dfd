#!/usr/bin/env bash
# Benchmarks (docs/BENCHMARKS.md): builds the release binaries, starts the
# local Kafka broker if needed, and runs the scenarios given as arguments
# (default: all of drain webhooks throughput rss latency recovery).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh
started_kafka=""
if ! scripts/kafka-local.sh status >/dev/null 2>&1; then
  scripts/kafka-local.sh start
  started_kafka=1
fi
trap '[ -n "$started_kafka" ] && scripts/kafka-local.sh stop || true' EXIT
cargo build --release --locked --bins
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
cargo bench --locked --bench pipeline -- "$@"
