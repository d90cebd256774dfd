#!/usr/bin/env bash
# The whole test suite: formatting, layout, lints, unit and integration tests
# (against a real local Apache Kafka broker, the Crustdata simulator and, for
# traces, a real Jaeger; for registry formats, a real Schema Registry and
# Confluent's Python serializers; for cluster faults, three brokers and
# Toxiproxy: one leader kill and the API link faults, the rest being
# scripts/chaos.sh's), and the Helm chart checks. Starts the broker and the
# cluster if they are not running and stops them again afterwards if it
# started them.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

scripts/setup.sh

ensure_kafka

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== layout: no import cycle, //! headers, file sizes"
python3 scripts/check-layout.py
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --locked --features failpoints -- -D warnings
echo "== helm chart checks"
HELM_RENDERED_CONFIG_DIR=target/helm-rendered scripts/helm-check.sh
echo "== output and dead-letter JSON schemas"
python3 scripts/check-schemas.py
echo "== rendered chart configs pass identify-connector --check"
cargo build --locked --bin identify-connector
for f in target/helm-rendered/*.toml; do
  CRUSTDATA_API_KEY=check-only target/debug/identify-connector --config "$f" --check >/dev/null \
    || { echo "identify-connector --check rejects the chart's $f" >&2; exit 1; }
done
echo "== Jaeger for tests/telemetry.rs (built once into the cache)"
JAEGER_BIN=$(scripts/jaeger.sh path)
export JAEGER_BIN
echo "== Schema Registry and the Confluent Python serializers for tests/registry.rs (built once into the cache)"
scripts/schema-registry.sh path >/dev/null
scripts/py-venv.sh >/dev/null
echo "== cargo test (with failpoints: tests/crash_points.rs aborts the binary at named steps)"
# The cluster scenarios (test names cluster_*) run last, on their own, so
# that the cluster's four JVMs are up only while they run.
cargo test --workspace --locked --features failpoints --lib --bins --tests -- --skip cluster_ 2>&1 | tee target/test-output.txt
echo "== the three-broker cluster: one leader kill and the API link faults (tests/cluster.rs; the rest: scripts/chaos.sh all)"
ensure_cluster
cargo test --locked --features failpoints --test cluster 2>&1 | tee -a target/test-output.txt
# One closing line over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f; exit (f > 0) }' target/test-output.txt
