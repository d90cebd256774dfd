#!/usr/bin/env bash
# The demo: starts a local Apache Kafka broker and the Crustdata simulator,
# creates topics, produces sample events (with duplicates, mixed case, a
# profile URL and invalid records), runs the connector, prints the resolved
# records, the dead letters and a summary, stops the connector with SIGTERM
# (it must exit 0 with every input offset committed), then stops what it
# started. With IDENTIFY_IMAGE=<image> the connector runs in that container
# image (podman; host network, read-only root, uid 10001): scripts/image.sh
# smoke does that.
#
# scripts/demo.sh --registry: the same pipeline writing Avro outputs under a
# schema registered in a local Schema Registry (scripts/schema-registry.sh,
# built once), read back with Confluent's Python deserializer.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/setup.sh
IMAGE=${IDENTIFY_IMAGE:-}
REGISTRY=""
case "${1:-}" in
  --registry) REGISTRY=1 ;;
  "") ;;
  *) echo "usage: $0 [--registry]" >&2; exit 2 ;;
esac
echo "== building (first run compiles librdkafka; a few minutes)"
if [ -n "$IMAGE" ]; then
  cargo build --locked -p crustdata-sim -q
else
  cargo build --locked --workspace --bins -q
fi

work=$(mktemp -d)
pids=()
started_kafka=""
started_registry=""
container=""
cleanup() {
  # A container outlives its `podman run` client if that dies first.
  if [ -n "$container" ]; then
    podman stop -t 40 "$container" >/dev/null 2>&1 || true
    podman rm -f "$container" >/dev/null 2>&1 || true
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "$started_registry" ] && scripts/schema-registry.sh stop "$REGISTRY_PORT" >/dev/null 2>&1
  [ -n "$started_kafka" ] && scripts/kafka-local.sh stop
  rm -rf "$work"
}
trap cleanup EXIT

if ! scripts/kafka-local.sh status >/dev/null 2>&1; then
  scripts/kafka-local.sh start
  started_kafka=1
fi

REGISTRY_PORT=${REGISTRY_PORT:-18081}
if [ -n "$REGISTRY" ]; then
  echo "== starting the Schema Registry on 127.0.0.1:$REGISTRY_PORT (built once into the cache)"
  scripts/schema-registry.sh start "$REGISTRY_PORT"
  started_registry=1
  PYTHON=$(scripts/py-venv.sh)
fi

SIM_PORT=${SIM_PORT:-18787}
HTTP_PORT=${HTTP_PORT:-18080}
KEY=demo-key
run=demo-$(date +%s)
input=$run-events output=$run-identified dlq=$run-dlq

echo "== starting crustdata-sim on 127.0.0.1:$SIM_PORT"
RUST_LOG=warn target/debug/crustdata-sim --listen "127.0.0.1:$SIM_PORT" --api-key "$KEY" \
  --base-time 1s --retrieval-time 1s --jitter 500ms >"$work/sim.log" 2>&1 &
pids+=($!)

echo "== creating topics $input (3 partitions), $output, $dlq"
for t in "$input:3" "$output:3" "$dlq:1"; do
  scripts/kafka-local.sh create-topic "${t%%:*}" "${t##*:}" >/dev/null
done

echo "== producing sample events"
python3 - "$work/events.tsv" <<'PY'
import json, sys
people = ["ada", "grace", "alan", "edsger", "barbara", "donald", "margaret", "ken", "dennis", "frances",
          "john", "leslie", "tony", "radia", "shafi", "whitfield", "niklaus", "robin", "judea", "yoshua"]
lines = []
for i, p in enumerate(people):
    lines.append((f"user-{i}", json.dumps({"email": f"{p}@example-{i % 4}.com", "event": "signup"})))
# Repeats: other letter case and spaces; resolved once, published for each.
for i, p in enumerate(people[:6]):
    lines.append((f"user-{i}-again", json.dumps({"email": f"  {p.upper()}@Example-{i % 4}.COM ", "event": "login"})))
lines.append(("profile-1", json.dumps({"email": "https://www.linkedin.com/in/ada-lovelace"})))
# Bad input: dead-lettered with a reason, never sent to the API.
lines += [("bad-1", "{not json"), ("bad-2", json.dumps({"name": "no email field"})),
          ("bad-3", json.dumps({"email": 42})), ("bad-4", json.dumps({"email": "not-an-email"}))]
with open(sys.argv[1], "w") as f:
    for k, v in lines:
        f.write(f"{k}\t{v}\n")
print(f"{len(lines)} events: {len(people)} unique emails, 6 repeats, 1 profile URL, 4 invalid")
PY
scripts/kafka-local.sh produce "$input" < "$work/events.tsv"
total=$(wc -l < "$work/events.tsv")
bad=4
good=$((total - bad))

# In the container the store lies on the image's volume.
store=$work/store
[ -n "$IMAGE" ] && store=/var/lib/identify-connector/cache
cat > "$work/connector.toml" <<TOML
[kafka]
brokers = "127.0.0.1:${KAFKA_PORT:-9092}"
group_id = "$run"
input_topics = ["$input"]
output_topic = "$output"
dead_letter_topic = "$dlq"
[input]
identifier_type = "auto"
[batch]
linger = "1s"
[api]
base_url = "http://127.0.0.1:$SIM_PORT"
[server]
listen = "127.0.0.1:$HTTP_PORT"
[cache]
dir = "$store"
[log]
format = "text"
TOML
if [ -n "$REGISTRY" ]; then
  cat >> "$work/connector.toml" <<TOML
[output]
format = "avro"
[schema_registry]
url = "http://127.0.0.1:$REGISTRY_PORT"
TOML
fi

if [ -n "$IMAGE" ]; then
  echo "== starting identify-connector in $IMAGE"
  chmod 0644 "$work/connector.toml"
  # SIGTERM to `podman run` reaches the connector (--sig-proxy); its exit
  # status is the connector's.
  container=$run-connector
  podman run --rm --name "$container" --network host --read-only --user 10001:10001 \
    -e CRUSTDATA_API_KEY="$KEY" -e RUST_LOG="${RUST_LOG:-info}" \
    -v "$work/connector.toml:/etc/identify-connector/config.toml:ro" \
    "$IMAGE" 2>"$work/connector.log" &
else
  echo "== starting identify-connector"
  CRUSTDATA_API_KEY=$KEY RUST_LOG=${RUST_LOG:-info} target/debug/identify-connector --config "$work/connector.toml" 2>"$work/connector.log" &
fi
connector=$!
pids+=("$connector")

echo "== resolved records on $output"
if [ -n "$REGISTRY" ]; then
  # Avro, decoded by Confluent's deserializer with the registered schema.
  "$PYTHON" tests/py/registry_consume.py --registry "http://127.0.0.1:$REGISTRY_PORT" \
    --brokers "127.0.0.1:${KAFKA_PORT:-9092}" --topic "$output" --format avro --count "$good" --timeout 120 \
    > "$work/out.jsonl" || true
  echo "(Avro; subjects in the registry: $(curl -s "http://127.0.0.1:$REGISTRY_PORT/subjects"))"
else
  scripts/kafka-local.sh consume "$output" "$good" 120000 2>/dev/null > "$work/out.tsv" || true
fi
python3 - "$work/out.tsv" "$work/out.jsonl" <<'PY'
import json, os, sys
if os.path.exists(sys.argv[2]):
    values = [json.loads(l)["value"] for l in open(sys.argv[2]) if l.strip()]
else:
    values = [json.loads(l.rstrip("\n").split("\t", 2)[2]) for l in open(sys.argv[1]) if l.strip()]
print(f"{'identifier':45} {'matched':8} {'name':22} {'title':26} batch_id")
for v in values:
    if not v["matches"]:
        name = title = "-"
    elif "match_json" in v["matches"][0]:  # registry formats: the stable fields
        name, title = v["matches"][0]["name"] or "-", v["matches"][0]["title"] or "-"
    else:
        p = v["matches"][0]["person_data"]["basic_profile"]
        name, title = p.get("name", "-"), p.get("current_title", "-")
    print(f"{v['identifier'][:45]:45} {str(v['matched']).lower():8} {name[:22]:22} "
          f"{title[:26]:26} {v['batch_id'][:8]}…")
print(f"{len(values)} records")
PY
echo
echo "== dead letters on $dlq"
scripts/kafka-local.sh consume "$dlq" "$bad" 30000 2>/dev/null > "$work/dlq.tsv" || true
python3 - "$work/dlq.tsv" <<'PY'
import sys
for line in open(sys.argv[1]):
    if not line.strip():
        continue
    headers, key, value = line.rstrip("\n").split("\t", 2)
    # The console consumer prints headers as k:v pairs joined by commas;
    # the message is the last header and may itself hold commas.
    rest = headers.split("identify.error.reason:", 1)[1]
    reason, message = rest.split(",identify.error.message:", 1)
    message = message.split(",identify.", 1)[0]
    print(f"{key:8} reason={reason:20} {message[:60]:60} value={value[:30]}")
PY

sleep 2
echo
echo "== summary"
metrics=$(curl -s "http://127.0.0.1:$HTTP_PORT/metrics")
stats=$(curl -s "http://127.0.0.1:$SIM_PORT/_sim/stats")
python3 - "$metrics" "$stats" "$total" <<'PY'
import json, sys
metrics, stats, total = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
def m(name):
    return sum(float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines()
               if not l.startswith("#") and l.split("{")[0].split(" ")[0] == name)
print(f"events in:           {total}")
print(f"outputs published:   {int(m('identify_records_produced_total'))}")
print(f"dead letters:        {int(m('identify_dead_letters_total'))}")
print(f"jobs submitted:      {stats['submits_accepted']}")
print(f"identifiers sent:    {stats['identifiers_submitted']} (repeats answered without paying again: {int(m('identify_credits_saved_total'))})")
print(f"credits charged:     {stats['credits_charged']} (1 per matched identifier)")
PY

kill -TERM "$connector"
if ! wait "$connector"; then
  echo "the connector did not exit cleanly on SIGTERM; its log:" >&2
  tail -n 30 "$work/connector.log" >&2
  exit 1
fi
echo "connector stopped cleanly (SIGTERM -> exit 0)"
committed=$(scripts/kafka-local.sh committed "$run" "$input") \
  || { echo "could not read the group's committed offsets" >&2; exit 1; }
echo "input offsets committed: $committed of $total"
if [ "$committed" != "$total" ]; then
  echo "not every input offset was committed" >&2
  exit 1
fi
