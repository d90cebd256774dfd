#!/usr/bin/env bash
# Runs a single-node Apache Kafka 4.x broker (KRaft, combined broker and
# controller) for local development, the demo and the test suite.
#
#   scripts/kafka-local.sh start|stop|status|restart|fetch
#   scripts/kafka-local.sh wipe                     (a stopped broker's data, config and log: the next start is clean)
#   scripts/kafka-local.sh create-topic NAME [PARTITIONS]
#   scripts/kafka-local.sh produce TOPIC            (one record per stdin line; "key<TAB>value" or value)
#   scripts/kafka-local.sh consume TOPIC COUNT [TIMEOUT_MS]   (prints headers, key and value)
#   scripts/kafka-local.sh committed GROUP TOPIC    (the sum of the group's committed offsets on it)
#   scripts/kafka-local.sh cluster start|stop|status|wipe|bootstrap
#   scripts/kafka-local.sh cluster kill|stop-node|start-node N   (N = 1..3; kill is SIGKILL)
#
# Cluster mode (for the chaos tests, scripts/chaos.sh): three brokers and a
# dedicated KRaft controller on loopback, replication factor 3 and
# min.insync.replicas 2 by default, and a Toxiproxy (scripts/toxiproxy.sh)
# in front of each broker. Each broker N has two client listeners:
#   DIRECT   127.0.0.1:2949N, for the tests' own clients and peers
#            (`cluster bootstrap`);
#   PROXIED  listening on 127.0.0.1:2919N but advertising its proxy,
#            127.0.0.1:2909N, so a client that bootstraps there
#            (`cluster proxied`) sends every byte through the proxy named
#            brokerN (Toxiproxy's API on 127.0.0.1:28474) and can be cut
#            off, slowed or reset alone.
# Replication (2929N) and the controller (29100) use listeners of their
# own, so a fault on a proxy never cuts the cluster apart.
#
# The broker's jars come from Maven Central (org.apache.kafka:kafka_2.13 with
# its runtime dependencies, kafka-tools, and a log4j2 backend), fetched once
# with Maven into $KAFKA_CACHE and reused afterwards.
#
# Environment:
#   KAFKA_VERSION     broker version                       (default 4.1.1)
#   KAFKA_PORT        client listener on 127.0.0.1         (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller listener       (default KAFKA_PORT+1)
#   KAFKA_CACHE       where the jars live                  (default ~/.cache/identify-connector/kafka-$KAFKA_VERSION)
#   KAFKA_STATE_DIR   data, config, pid file and log file  (default ~/.cache/identify-connector/broker-$KAFKA_PORT)
#   KAFKA_HEAP        JVM heap                             (default 512m)
#   KAFKA_START_TIMEOUT  seconds to wait for the broker    (default 60)
#   KAFKA_CLUSTER_HEAP   heap of each cluster node         (default 384m)
set -euo pipefail

KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/identify-connector
KAFKA_CACHE=${KAFKA_CACHE:-$CACHE_ROOT/kafka-$KAFKA_VERSION}
KAFKA_STATE_DIR=${KAFKA_STATE_DIR:-$CACHE_ROOT/broker-$KAFKA_PORT}
KAFKA_HEAP=${KAFKA_HEAP:-512m}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-60}
LOG4J_VERSION=2.24.3

PID_FILE=$KAFKA_STATE_DIR/kafka.pid
LOG_FILE=$KAFKA_STATE_DIR/kafka.log
CONFIG=$KAFKA_STATE_DIR/server.properties
BOOTSTRAP=127.0.0.1:$KAFKA_PORT

log() { printf 'kafka-local: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

java_cp() { printf '%s/libs/*' "$KAFKA_CACHE"; }

run_java() {
  java -Xmx256m -cp "$(java_cp)" -Dlog4j2.configurationFile="$KAFKA_CACHE/log4j2-tools.properties" "$@"
}

fetch() {
  if [ -f "$KAFKA_CACHE/.complete" ]; then
    return 0
  fi
  command -v mvn >/dev/null || die "Maven (mvn) is required to fetch the Kafka jars"
  command -v java >/dev/null || die "Java 17+ is required to run Kafka"
  mkdir -p "$KAFKA_CACHE"
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_CACHE (first run only)"
  cat > "$KAFKA_CACHE/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.identify-connector</groupId>
  <artifactId>kafka-local</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>2.0.17</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  local started=$SECONDS
  rm -rf "$KAFKA_CACHE/libs"
  mvn -B -q -f "$KAFKA_CACHE/pom.xml" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DoutputDirectory="$KAFKA_CACHE/libs" -DincludeScope=runtime \
    || die "Maven could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
  cat > "$KAFKA_CACHE/log4j2.properties" <<'EOF'
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
  cat > "$KAFKA_CACHE/log4j2-tools.properties" <<'EOF'
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = %p %m%n
EOF
  touch "$KAFKA_CACHE/.complete"
  log "fetched $(ls "$KAFKA_CACHE/libs" | wc -l) jars, $(du -sh "$KAFKA_CACHE/libs" | cut -f1), in $((SECONDS - started)) s"
}

running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid=$(cat "$PID_FILE")
  # Only a process we started: its command line names our config file.
  if [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -q -- "$CONFIG"; then
    echo "$pid"
    return 0
  fi
  return 1
}

write_config() {
  mkdir -p "$KAFKA_STATE_DIR/data"
  cat > "$CONFIG" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_STATE_DIR/data
auto.create.topics.enable=false
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
# The consumer group protocol (KIP-848): sessions as short as the classic
# ones the tests use, so that a killed member is noticed as quickly.
group.consumer.min.session.timeout.ms=3000
group.consumer.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=500
log.segment.bytes=67108864
log.retention.hours=24
EOF
}

broker_answers() {
  # A metadata request through Kafka's own admin client (kafka-topics --list).
  timeout 20 java -Xmx128m -cp "$(java_cp)" \
    -Dlog4j2.configurationFile="$KAFKA_CACHE/log4j2-tools.properties" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --list >/dev/null 2>&1
}

start() {
  if pid=$(running_pid); then
    log "already running (pid $pid) on $BOOTSTRAP"
    return 0
  fi
  fetch
  write_config
  if [ ! -f "$KAFKA_STATE_DIR/data/meta.properties" ]; then
    local cluster_id
    cluster_id=$(run_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
    log "formatting storage in $KAFKA_STATE_DIR/data (cluster $cluster_id)"
    run_java kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG" >/dev/null
  fi
  log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (log: $LOG_FILE)"
  nohup java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:TieredStopAtLevel=1 \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_CACHE/log4j2.properties" \
    -cp "$(java_cp)" kafka.Kafka "$CONFIG" >"$LOG_FILE" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$PID_FILE"
  local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "the broker exited during start-up; last lines of $LOG_FILE:"
      tail -n 40 "$LOG_FILE" >&2
      exit 1
    fi
    if broker_answers; then
      log "ready on $BOOTSTRAP (pid $(cat "$PID_FILE")) after $((SECONDS + KAFKA_START_TIMEOUT - deadline)) s"
      return 0
    fi
    sleep 1
  done
  log "not ready within ${KAFKA_START_TIMEOUT}s; last lines of $LOG_FILE:"
  tail -n 40 "$LOG_FILE" >&2
  stop || true
  exit 1
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    log "not running"
    rm -f "$PID_FILE"
    return 0
  fi
  log "stopping pid $pid"
  kill "$pid"
  for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PID_FILE"; log "stopped"; return 0; }
    sleep 1
  done
  log "still running after 30 s; killing"
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
}

status() {
  local pid
  if pid=$(running_pid); then
    echo "running (pid $pid) on $BOOTSTRAP"
  else
    echo "not running"
    return 1
  fi
}

create_topic() {
  local name=${1:?topic name}
  local partitions=${2:-1}
  fetch
  run_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
    --create --if-not-exists --topic "$name" --partitions "$partitions" --replication-factor 1
}

produce() {
  local topic=${1:?topic}
  fetch
  run_java org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$BOOTSTRAP" --topic "$topic" \
    --property parse.key=true --property key.separator=$'\t' --producer-property acks=all
}

consume() {
  local topic=${1:?topic} count=${2:?count} timeout=${3:-60000}
  fetch
  run_java org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$BOOTSTRAP" --topic "$topic" \
    --from-beginning --max-messages "$count" --timeout-ms "$timeout" \
    --property print.key=true --property print.headers=true --property key.separator=$'\t'
}

# The sum of GROUP's committed offsets on TOPIC (0 when none is committed).
committed() {
  local group=${1:?group} topic=${2:?topic}
  fetch
  run_java org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server "$BOOTSTRAP" \
    --describe --group "$group" 2>/dev/null |
    awk -v t="$topic" '$2 == t && $4 ~ /^[0-9]+$/ { n += $4 } END { print n + 0 }'
}

# ---- cluster mode -------------------------------------------------------
CLUSTER_DIR=$CACHE_ROOT/cluster
CLUSTER_HEAP=${KAFKA_CLUSTER_HEAP:-384m}
CLUSTER_CONTROLLER=127.0.0.1:29100
CLUSTER_BOOTSTRAP=127.0.0.1:29491,127.0.0.1:29492,127.0.0.1:29493
CLUSTER_PROXIED=127.0.0.1:29091,127.0.0.1:29092,127.0.0.1:29093
TOXIPROXY_PORT=28474
SCRIPTS=$(cd "$(dirname "$0")" && pwd)

node_dir() { echo "$CLUSTER_DIR/node-$1"; }   # 1..3 brokers, 100 the controller

node_config() {
  local id=$1 dir
  dir=$(node_dir "$id")
  mkdir -p "$dir/data"
  if [ "$id" = 100 ]; then
    cat > "$dir/server.properties" <<EOF
process.roles=controller
node.id=100
controller.quorum.voters=100@$CLUSTER_CONTROLLER
listeners=CONTROLLER://$CLUSTER_CONTROLLER
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT
log.dirs=$dir/data
# A SIGKILLed broker is fenced (its partitions get new leaders) after 3 s.
broker.session.timeout.ms=3000
# The controller applies a new topic's defaults.
default.replication.factor=3
min.insync.replicas=2
num.partitions=1
unclean.leader.election.enable=false
EOF
    return
  fi
  cat > "$dir/server.properties" <<EOF
process.roles=broker
node.id=$id
controller.quorum.voters=100@$CLUSTER_CONTROLLER
listeners=PROXIED://127.0.0.1:2919$id,DIRECT://127.0.0.1:2949$id,REPLICATION://127.0.0.1:2929$id
# A client that bootstraps on PROXIED reaches this broker through its proxy
# only; DIRECT is for the tests' own clients and peers that stay connected.
advertised.listeners=PROXIED://127.0.0.1:2909$id,DIRECT://127.0.0.1:2949$id,REPLICATION://127.0.0.1:2929$id
controller.listener.names=CONTROLLER
inter.broker.listener.name=REPLICATION
listener.security.protocol.map=PROXIED:PLAINTEXT,DIRECT:PLAINTEXT,REPLICATION:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
auto.create.topics.enable=false
default.replication.factor=3
min.insync.replicas=2
num.partitions=1
offsets.topic.replication.factor=3
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
group.consumer.min.session.timeout.ms=3000
group.consumer.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=500
replica.lag.time.max.ms=10000
broker.heartbeat.interval.ms=500
log.segment.bytes=67108864
log.retention.hours=24
EOF
}

node_pid() {
  local dir pid
  dir=$(node_dir "$1")
  [ -f "$dir/pid" ] || return 1
  pid=$(cat "$dir/pid")
  if [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -q -- "$dir/server.properties"; then
    echo "$pid"
    return 0
  fi
  return 1
}

start_node() {
  local id=$1 dir
  dir=$(node_dir "$id")
  if node_pid "$id" >/dev/null; then return 0; fi
  node_config "$id"
  if [ ! -f "$dir/data/meta.properties" ]; then
    run_java kafka.tools.StorageTool format -t "$(cat "$CLUSTER_DIR/cluster.id")" -c "$dir/server.properties" >/dev/null
  fi
  nohup java -Xms"$CLUSTER_HEAP" -Xmx"$CLUSTER_HEAP" -XX:+UseG1GC -XX:TieredStopAtLevel=1 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$KAFKA_CACHE/log4j2.properties" \
    -cp "$(java_cp)" kafka.Kafka "$dir/server.properties" >>"$dir/kafka.log" 2>&1 < /dev/null &
  echo $! > "$dir/pid"
  log "node $id started (pid $!, log $dir/kafka.log)"
}

signal_node() {
  local sig=$1 id=$2 pid
  pid=$(node_pid "$id") || { log "node $id is not running"; return 0; }
  kill "-$sig" "$pid"
  for _ in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$(node_dir "$id")/pid"; log "node $id stopped ($sig)"; return 0; }
    sleep 0.5
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$(node_dir "$id")/pid"
}

cluster_proxies() {
  "$SCRIPTS/toxiproxy.sh" start "$TOXIPROXY_PORT" >/dev/null
  local api=http://127.0.0.1:$TOXIPROXY_PORT id
  for id in 1 2 3; do
    curl -sf "$api/proxies/broker$id" >/dev/null && continue
    curl -sf -X POST "$api/proxies" -H 'Content-Type: application/json' \
      -d "{\"name\":\"broker$id\",\"listen\":\"127.0.0.1:2909$id\",\"upstream\":\"127.0.0.1:2919$id\",\"enabled\":true}" \
      >/dev/null || die "could not create the proxy of broker $id"
  done
}

cluster_answers() {
  # Every broker registered, so that new topics get three replicas.
  [ "$(timeout 20 java -Xmx128m -cp "$(java_cp)" \
    -Dlog4j2.configurationFile="$KAFKA_CACHE/log4j2-tools.properties" \
    org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$CLUSTER_BOOTSTRAP" 2>/dev/null |
    grep -c '(id: [123] ')" = 3 ]
}

cluster_start() {
  fetch
  mkdir -p "$CLUSTER_DIR"
  [ -s "$CLUSTER_DIR/cluster.id" ] || run_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1 > "$CLUSTER_DIR/cluster.id"
  cluster_proxies
  local id
  for id in 100 1 2 3; do start_node "$id"; done
  local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  until cluster_answers; do
    [ $SECONDS -lt $deadline ] || die "the cluster did not answer within ${KAFKA_START_TIMEOUT}s (logs: $CLUSTER_DIR/node-*/kafka.log)"
    sleep 1
  done
  log "cluster ready: $CLUSTER_BOOTSTRAP direct, $CLUSTER_PROXIED through Toxiproxy (http://127.0.0.1:$TOXIPROXY_PORT)"
}

cluster_stop() {
  local id
  for id in 1 2 3 100; do signal_node TERM "$id"; done
  "$SCRIPTS/toxiproxy.sh" stop "$TOXIPROXY_PORT" >/dev/null 2>&1 || true
}

cluster_status() {
  local up=0 id pid
  for id in 100 1 2 3; do
    if pid=$(node_pid "$id"); then echo "node $id: running (pid $pid)"; up=$((up + 1)); else echo "node $id: stopped"; fi
  done
  [ "$up" = 4 ]
}

cluster() {
  case "${1:-}" in
    start) cluster_start ;;
    stop) cluster_stop ;;
    status) cluster_status ;;
    bootstrap) echo "$CLUSTER_BOOTSTRAP" ;;
    proxied) echo "$CLUSTER_PROXIED" ;;
    wipe) cluster_stop; rm -rf "$CLUSTER_DIR" ;;
    kill) signal_node KILL "${2:?node 1..3}" ;;
    stop-node) signal_node TERM "${2:?node 1..3}" ;;
    start-node) fetch; start_node "${2:?node 1..3}" ;;
    *) echo "usage: $0 cluster start|stop|status|bootstrap|wipe|kill N|stop-node N|start-node N" >&2; exit 2 ;;
  esac
}

wipe() {
  if status >/dev/null 2>&1; then
    die "the broker on $KAFKA_PORT is running: stop it first"
  fi
  rm -rf "$KAFKA_STATE_DIR"
}

case "${1:-}" in
  start) start ;;
  wipe) wipe ;;
  stop) stop ;;
  status) status ;;
  restart) stop; start ;;
  fetch) fetch ;;
  create-topic) shift; create_topic "$@" ;;
  produce) shift; produce "$@" ;;
  consume) shift; consume "$@" ;;
  committed) shift; committed "$@" ;;
  cluster) shift; cluster "$@" ;;
  *) echo "usage: $0 start|stop|status|restart|fetch|wipe|create-topic NAME [PARTITIONS]|produce TOPIC|consume TOPIC COUNT [TIMEOUT_MS]|committed GROUP TOPIC" >&2; exit 2 ;;
esac
