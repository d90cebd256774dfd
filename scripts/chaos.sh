#!/usr/bin/env bash
# The cluster and network-fault scenarios (tests/cluster.rs,
# tests/cluster_soak.rs) against the three-broker cluster of
# `scripts/kafka-local.sh cluster` (started here if it is not running, and
# stopped again afterwards if it was started here), with Toxiproxy in front
# of every broker and of the simulator.
#
#   scripts/chaos.sh quick   one leader kill and the API link faults (~5 min)
#   scripts/chaos.sh all     every scenario, the single broker stopped and
#                            started mid-run (tests/chaos_broker.rs), then
#                            the soak (SOAK_MINUTES, default 30; SOAK_SEED
#                            replays one)
#
# Each scenario prints a `RESULT <scenario>: inputs=... lost=... ...` line;
# the summary lists them with the test verdicts. Exits non-zero when any
# scenario fails.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
case "$mode" in
  quick) args=() ;;
  all) args=(--include-ignored) ;;
  *) echo "usage: $0 quick|all" >&2; exit 2 ;;
esac

scripts/setup.sh
started=""
if ! scripts/kafka-local.sh cluster status >/dev/null 2>&1; then
  scripts/kafka-local.sh cluster start
  started=1
fi
trap '[ -n "$started" ] && scripts/kafka-local.sh cluster stop' EXIT

out=target/chaos-output.txt
mkdir -p target
status=0
cargo test --locked --test cluster -- --nocapture "${args[@]}" 2>&1 | tee "$out" || status=1
if [ "$mode" = all ]; then
  # The single broker stopped and started mid-run (its own, on 19092).
  cargo test --locked --test chaos_broker -- --nocapture --include-ignored 2>&1 | tee -a "$out" || status=1
  cargo test --locked --test cluster_soak -- --nocapture --include-ignored 2>&1 | tee -a "$out" || status=1
fi
echo "== summary"
grep -E '^RESULT |^SOAK [a-z_]+:|^test result:|panicked at' "$out" || true
[ "$status" = 0 ] && echo "chaos $mode: every scenario passed" || echo "chaos $mode: a scenario FAILED" >&2
exit "$status"
