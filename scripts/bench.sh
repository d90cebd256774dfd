#!/usr/bin/env bash
# Benchmarks (docs/BENCHMARKS.md): builds the release binaries, starts the
# local Kafka broker if needed, and runs the scenarios given as arguments
# (default: all of drain jitter webhooks shared cachehit decode_formats throughput rss
# latency recovery ... traces). The cache-hit scenario compares with a kcat
# pipe, installed through apt when missing; the traces scenario runs Jaeger
# (scripts/jaeger.sh builds it once).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
scripts/setup.sh
if ! command -v kcat >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get install -y -qq kcat >/dev/null
fi
ensure_kafka
if [ $# -eq 0 ] || [[ " $* " == *" traces "* ]]; then
  JAEGER_BIN=$(scripts/jaeger.sh path)
  export JAEGER_BIN
fi
cargo build --release --locked --workspace --bins
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
cargo bench --locked --bench pipeline -- "$@"
