#!/usr/bin/env bash
# Benchmarks (docs/BENCHMARKS.md): builds the release binaries, starts the
# local Kafka broker if needed, and runs the scenarios given as arguments
# (default: all of drain webhooks throughput rss latency recovery).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
scripts/setup.sh
ensure_kafka
cargo build --release --locked --workspace --bins
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
cargo bench --locked --bench pipeline -- "$@"
