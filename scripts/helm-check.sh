#!/usr/bin/env bash
# Offline checks of the Helm chart in helm/identify-connector.
#
#   scripts/helm-check.sh
#
# 1. helm lint, plain and --strict, with the default values and with every
#    helm/identify-connector/ci/*-values.yaml (lint also renders NOTES.txt);
# 2. helm template with the default values and with each ci/*-values.yaml,
#    then scripts/helm-check-validate.py validates every rendered manifest
#    with kubernetes-validate against Kubernetes $KUBE_VERSION (strict), checks
#    the ServiceMonitor and the KEDA ScaledObject (CRDs kubernetes-validate has
#    no schema for) on their own, and checks the rendered config.toml and the
#    wiring between objects (workload kind, store volume, static membership,
#    headless Service, autoscaler target);
#    deploy/config.toml (the image's default config) must equal the default
#    rendering;
# 3. scripts/helm-check-schema.py: values.schema.json knows exactly the keys
#    of config/example.toml (every key the connector accepts), accepts that
#    file, and the chart's config defaults equal the connector's;
# 4. the checksum/config annotation changes with the config, and only then;
# 5. invalid values are rejected: each case must make `helm template` fail,
#    with the expected reason.
#
# helm (pinned below) is built once with `go install` into the cache; the
# first build takes a few minutes. kubernetes-validate is installed once into
# a virtualenv in the cache. Later runs reuse both and take seconds.
#
# Environment:
#   HELM_RENDERED_CONFIG_DIR  if set, the rendered config.toml of each
#                             combination is written there as <combination>.toml
#   KUBE_VERSION              Kubernetes version to validate against (default 1.30.0)
#   HELM                      helm binary to use instead of the pinned build
#   GO                        go binary (default: go on PATH, else /usr/local/go/bin/go)
#   PYTHON                    python >= 3.11 for the virtualenv (default python3)
set -euo pipefail

HELM_VERSION=v3.22.0
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBE_VERSION=${KUBE_VERSION:-1.30.0}
RELEASE=identify
NAMESPACE=identify

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART=$ROOT/helm/identify-connector
VALIDATOR=$ROOT/scripts/helm-check-validate.py
SCHEMA_CHECK=$ROOT/scripts/helm-check-schema.py
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/identify-connector
BIN_DIR=$CACHE_ROOT/bin
VENV=$CACHE_ROOT/venv-kubernetes-validate-$KUBERNETES_VALIDATE_VERSION

log() { printf 'helm-check: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

PASSED=()
FAILED=()
pass() { PASSED+=("$1"); printf '  ok   %s\n' "$1"; }
fail() { FAILED+=("$1"); printf '  FAIL %s\n' "$1"; }

ensure_helm() {
  if [ -n "${HELM:-}" ]; then
    command -v "$HELM" >/dev/null || die "HELM=$HELM is not executable"
    return 0
  fi
  HELM=$BIN_DIR/helm
  if [ -x "$HELM" ] && [ "$(cat "$BIN_DIR/.helm-version" 2>/dev/null)" = "$HELM_VERSION" ]; then
    return 0
  fi
  local go=${GO:-}
  if [ -z "$go" ]; then
    go=$(command -v go || true)
    go=${go:-/usr/local/go/bin/go}
  fi
  [ -x "$go" ] || die "helm is not cached and Go ($go) is missing; set GO or HELM"
  log "building helm $HELM_VERSION with go install (first run only, takes a few minutes)"
  mkdir -p "$BIN_DIR"
  local start=$SECONDS
  GOBIN=$BIN_DIR "$go" install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  printf '%s\n' "$HELM_VERSION" >"$BIN_DIR/.helm-version"
  log "helm $HELM_VERSION built in $((SECONDS - start))s"
}

ensure_venv() {
  if [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" -c 'import sys, kubernetes_validate.version as v; sys.exit(v.__version__ != sys.argv[1])' \
      "$KUBERNETES_VALIDATE_VERSION" 2>/dev/null; then
    return 0
  fi
  local python=${PYTHON:-python3}
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$python is older than 3.11 (tomllib is needed); set PYTHON"
  log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV"
  rm -rf "$VENV"
  mkdir -p "$CACHE_ROOT"
  "$python" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
}

ensure_helm
ensure_venv
export PATH="$BIN_DIR:$PATH"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

render() { # render OUT [helm template args...]
  local out=$1
  shift
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" "$@" \
    >"$out" 2>"$out.err"
}

log "helm $("$HELM" version --template '{{.Version}}'), kubernetes-validate $KUBERNETES_VALIDATE_VERSION, Kubernetes $KUBE_VERSION"

# Combinations: the default values, then every ci/*-values.yaml.
COMBOS=(default)
for f in "$CHART"/ci/*-values.yaml; do
  name=$(basename "$f" -values.yaml)
  COMBOS+=("$name")
done
values_args() { # values_args COMBO -> helm -f arguments, one per line
  [ "$1" = default ] || printf '%s\n' -f "$CHART/ci/$1-values.yaml"
}

echo "== helm lint"
for combo in "${COMBOS[@]}"; do
  mapfile -t vargs < <(values_args "$combo")
  for strict in "" --strict; do
    label="lint ${strict:+--strict }$combo"
    if "$HELM" lint "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" \
      ${strict:+"$strict"} "${vargs[@]}" >"$WORK/lint.out" 2>&1; then
      pass "$label"
    else
      fail "$label"
      sed 's/^/       /' "$WORK/lint.out"
    fi
  done
done

echo "== helm template + offline validation (Kubernetes $KUBE_VERSION)"
CONFIGS=$WORK/configs
for combo in "${COMBOS[@]}"; do
  mapfile -t vargs < <(values_args "$combo")
  out=$WORK/$combo.yaml
  if ! render "$out" "${vargs[@]}"; then
    fail "template $combo"
    sed 's/^/       /' "$out.err"
    continue
  fi
  validator_values=()
  [ "$combo" = default ] || validator_values=(--values "$CHART/ci/$combo-values.yaml")
  if "$VENV/bin/python" "$VALIDATOR" --chart "$CHART" --combo "$combo" --manifest "$out" \
    --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" "${validator_values[@]}" --config-out "$CONFIGS"; then
    pass "template+validate $combo"
  else
    fail "template+validate $combo"
  fi
done

echo "== deploy/config.toml (baked into the image) equals the chart's default config"
if [ -f "$CONFIGS/default.toml" ] && "$VENV/bin/python" -c '
import sys, tomllib
a, b = (tomllib.load(open(p, "rb")) for p in sys.argv[1:])
sys.exit(a != b)' "$ROOT/deploy/config.toml" "$CONFIGS/default.toml"; then
  pass "deploy/config.toml matches"
else
  fail "deploy/config.toml differs from the default rendering (re-render it from the chart)"
fi

echo "== config schema and defaults match the connector (config/example.toml)"
if "$VENV/bin/python" "$SCHEMA_CHECK" --chart "$CHART" --example "$ROOT/config/example.toml"; then
  pass "schema keys and chart defaults match config/example.toml"
else
  fail "schema keys and chart defaults match config/example.toml"
fi

echo "== checksum/config rolls the pods exactly when the config changes"
checksum() { # checksum [helm template args...]
  render "$WORK/checksum.yaml" --show-only templates/deployment.yaml "$@" &&
    sed -n 's/^ *checksum\/config: *//p' "$WORK/checksum.yaml"
}
base=$(checksum) || true
changed=$(checksum --set config.batch.max_size=299) || true
same=$(checksum --set replicaCount=2) || true
if [ -n "$base" ] && [ -n "$changed" ] && [ "$base" != "$changed" ]; then
  pass "checksum changes with config.batch.max_size"
else
  fail "checksum changes with config.batch.max_size ($base vs $changed)"
fi
if [ -n "$base" ] && [ "$base" = "$same" ]; then
  pass "checksum stays with replicaCount"
else
  fail "checksum stays with replicaCount ($base vs $same)"
fi

echo "== a config key set to null is left out of config.toml"
if render "$WORK/null.yaml" --show-only templates/configmap.yaml --set config.webhook.public_url=null &&
  grep -q 'fallback_poll_interval' "$WORK/null.yaml" && ! grep -q 'public_url' "$WORK/null.yaml"; then
  pass "config.webhook.public_url=null drops the key"
else
  fail "config.webhook.public_url=null drops the key"
fi

echo "== invalid values are rejected"
SCHEMA_ERR="meet the specifications of the schema"
# name | text the error must contain | helm template arguments (tab separated)
INVALID_CASES=(
  "replicaCount is a string|$SCHEMA_ERR|--set-string	replicaCount=three"
  "config.input.format xml|$SCHEMA_ERR|--set	config.input.format=xml"
  "config.input.identifier_type phone|$SCHEMA_ERR|--set	config.input.identifier_type=phone"
  "config.log.format yaml|$SCHEMA_ERR|--set	config.log.format=yaml"
  "unknown config key kafka.brokerz|$SCHEMA_ERR|--set	config.kafka.brokerz=kafka:9092"
  "unknown config section|$SCHEMA_ERR|--set	config.metrics.enabled=true"
  "unknown top-level value|$SCHEMA_ERR|--set	replicas=3"
  "non-string librdkafka property|$SCHEMA_ERR|--set-json	config.kafka.consumer={\"fetch.max.bytes\":1048576}"
  "duration that is not one|$SCHEMA_ERR|--set	config.batch.linger=soon"
  "max_active_jobs 0|$SCHEMA_ERR|--set	config.api.max_active_jobs=0"
  "unknown api key poll_intial|$SCHEMA_ERR|--set	config.api.poll_intial=1s"
  "api.max_job_attempts is a string|$SCHEMA_ERR|--set-string	config.api.max_job_attempts=3"
  "api.max_job_attempts 0|$SCHEMA_ERR|--set	config.api.max_job_attempts=0"
  "api.max_result_bytes below 1024|$SCHEMA_ERR|--set	config.api.max_result_bytes=1000"
  "api.download_allowed_hosts not a list|$SCHEMA_ERR|--set	config.api.download_allowed_hosts=example.com"
  "kafka.max_in_flight_bytes is a string|$SCHEMA_ERR|--set-string	config.kafka.max_in_flight_bytes=64MiB"
  "kafka.rebalance_drain_timeout unknown unit|$SCHEMA_ERR|--set	config.kafka.rebalance_drain_timeout=10 parsecs"
  "kafka.commit_interval 0s|$SCHEMA_ERR|--set	config.kafka.commit_interval=0s"
  "batch.max_size above the API's 300|$SCHEMA_ERR|--set	config.batch.max_size=301"
  "output_topic not a topic name|$SCHEMA_ERR|--set	config.kafka.output_topic=emails identified"
  "server.listen with a host name|$SCHEMA_ERR|--set	config.server.listen=localhost:8080"
  "cache.max_memory_bytes below 1 MiB|$SCHEMA_ERR|--set	config.cache.max_memory_bytes=1048575"
  "cache.dir empty|$SCHEMA_ERR|--set	config.cache.dir="
  "cache.partitions 0|$SCHEMA_ERR|--set	config.cache.partitions=0"
  "cache.replication_factor 0|$SCHEMA_ERR|--set	config.cache.replication_factor=0"
  "cache.topic not a topic name|$SCHEMA_ERR|--set	config.cache.topic=identify cache"
  "kafka.instance_id with whitespace|$SCHEMA_ERR|--set	config.kafka.instance_id=pod a"
  "kafka.instance_id over 249 characters|$SCHEMA_ERR|--set	config.kafka.instance_id=$(printf 'i%.0s' {1..250})"
  "kafka.instance_id fixed in config|every pod would join|--set	config.kafka.instance_id=identify-0"
  "kafka.instance_id fixed in configToml|every pod would join|--set-string	configToml=instance_id = \"identify-0\""
  "api.key in config|REFUSED|--set	config.api.key=sk-not-real"
  "kafka.sasl_password in config|REFUSED|--set	config.kafka.sasl_password=not-real"
  "kafka.ssl_key_password in config|REFUSED|--set	config.kafka.ssl_key_password=not-real"
  "sasl.password in kafka.producer|REFUSED|--set	config.kafka.producer.sasl\\.password=not-real"
  "ssl.key.password in kafka.consumer|REFUSED|--set	config.kafka.consumer.ssl\\.key\\.password=not-real"
  "sasl_password in configToml|must not be stored in the ConfigMap|--set-string	configToml=sasl_password = \"x\""
  "extraEnv repeating IDENTIFY_KAFKA__SASL_PASSWORD|already sets|--set	kafka.saslPasswordSecret.name=kafka-sasl	--set-json	extraEnv=[{\"name\":\"IDENTIFY_KAFKA__SASL_PASSWORD\",\"value\":\"x\"}]"
  "extraVolumes named config|$SCHEMA_ERR|--set-json	extraVolumes=[{\"name\":\"config\",\"emptyDir\":{}}]"
  "extraVolumes named store|$SCHEMA_ERR|--set-json	extraVolumes=[{\"name\":\"store\",\"emptyDir\":{}}]"
  "extraVolumeMounts at the store path|$SCHEMA_ERR|--set-json	extraVolumeMounts=[{\"name\":\"x\",\"mountPath\":\"/var/lib/identify-connector\"}]"
  "extraVolumeMounts without mountPath|$SCHEMA_ERR|--set-json	extraVolumeMounts=[{\"name\":\"kafka-ca\"}]"
  "kafka.saslPasswordSecret without a key|$SCHEMA_ERR|--set	kafka.saslPasswordSecret.name=s	--set	kafka.saslPasswordSecret.key="
  "input_topics empty|$SCHEMA_ERR|--set-json	config.kafka.input_topics=[]"
  "webhook public_url with a path behind the Ingress|REFUSED: with ingress.enabled|-f	$CHART/ci/webhook-values.yaml	--set	config.webhook.public_url=https://hooks.example.org/identify"
  "webhook public_url host not an Ingress host|none of the ingress.hosts|-f	$CHART/ci/webhook-values.yaml	--set	config.webhook.public_url=https://elsewhere.example.org"
  "configToml public_url with a path behind the Ingress|has the path /identify|--set	ingress.enabled=true	--set-string	configToml=public_url = \"https://identify.example.com/identify\""
  "webhook public_url without scheme|$SCHEMA_ERR|--set	config.webhook.public_url=identify.example.com"
  "image.pullPolicy Sometimes|$SCHEMA_ERR|--set	image.pullPolicy=Sometimes"
  "service.port out of range|$SCHEMA_ERR|--set	service.port=70000"
  "apiKey and existingSecret together|not both|--set	apiKey=k	--set	existingSecret=s"
  "PDB with minAvailable and maxUnavailable|not both|--set	podDisruptionBudget.enabled=true	--set	podDisruptionBudget.maxUnavailable=1"
  "workload.kind DaemonSet|$SCHEMA_ERR|--set	workload.kind=DaemonSet"
  "staticMembership always|$SCHEMA_ERR|--set	staticMembership=always"
  "staticMembership the string \"true\"|$SCHEMA_ERR|--set-string	staticMembership=true"
  "extraEnv repeating IDENTIFY_KAFKA__INSTANCE_ID with static membership|already sets|--set	workload.kind=StatefulSet	--set-json	extraEnv=[{\"name\":\"IDENTIFY_KAFKA__INSTANCE_ID\",\"value\":\"x\"}]"
  "store persistence with a 2-replica Deployment|use workload.kind=StatefulSet|--set	store.persistence.enabled=true	--set	replicaCount=2"
  "store persistence with an autoscaled Deployment|use workload.kind=StatefulSet|--set	store.persistence.enabled=true	--set	autoscaling.hpa.enabled=true	--set	autoscaling.partitions=6"
  "store.persistence.size not a quantity|$SCHEMA_ERR|--set	store.persistence.enabled=true	--set	store.persistence.size=lots"
  "store.persistence.accessModes ReadOnlyMany|$SCHEMA_ERR|--set	workload.kind=StatefulSet	--set	store.persistence.enabled=true	--set-json	store.persistence.accessModes=[\"ReadOnlyMany\"]"
  "keda and hpa together|not both|--set	autoscaling.keda.enabled=true	--set	autoscaling.hpa.enabled=true	--set	autoscaling.partitions=6"
  "autoscaling maxReplicas above partitions|get no partitions|--set	autoscaling.keda.enabled=true	--set	autoscaling.maxReplicas=8	--set	autoscaling.partitions=6"
  "autoscaling without maxReplicas nor partitions|set autoscaling.partitions|--set	autoscaling.hpa.enabled=true"
  "autoscaling minReplicas above maxReplicas|exceeds the maximum|--set	autoscaling.hpa.enabled=true	--set	autoscaling.minReplicas=4	--set	autoscaling.partitions=3"
  "autoscaling.minReplicas 0|$SCHEMA_ERR|--set	autoscaling.keda.enabled=true	--set	autoscaling.partitions=6	--set	autoscaling.minReplicas=0"
  "keda with configToml|cannot be used with configToml|-f	$CHART/ci/raw-config-toml-values.yaml	--set	autoscaling.keda.enabled=true	--set	autoscaling.partitions=6"
  "hpa CPU target without a CPU request|needs resources.requests.cpu|--set	autoscaling.hpa.enabled=true	--set	autoscaling.partitions=6	--set	resources.requests.cpu=null"
  "hpa without any metric|has no metric|--set	autoscaling.hpa.enabled=true	--set	autoscaling.partitions=6	--set	autoscaling.hpa.targetCPUUtilizationPercentage=null"
  "keda lagThreshold 0|$SCHEMA_ERR|--set	autoscaling.keda.enabled=true	--set	autoscaling.partitions=6	--set-string	autoscaling.keda.lagThreshold=0"
  "keda lagSeconds without a Prometheus server|needs autoscaling.keda.lagSeconds.serverAddress|--set	autoscaling.keda.enabled=true	--set	autoscaling.partitions=6	--set	serviceMonitor.enabled=true	--set-string	autoscaling.keda.lagSeconds.threshold=60"
  "keda lagSeconds default query without a ServiceMonitor|needs serviceMonitor.enabled|--set	autoscaling.keda.enabled=true	--set	autoscaling.partitions=6	--set-string	autoscaling.keda.lagSeconds.threshold=60	--set	autoscaling.keda.lagSeconds.serverAddress=http://prom:9090"
  "keda lagSeconds threshold 0|$SCHEMA_ERR|--set	autoscaling.keda.enabled=true	--set	autoscaling.partitions=6	--set-string	autoscaling.keda.lagSeconds.threshold=0"
)
for case in "${INVALID_CASES[@]}"; do
  IFS='|' read -r name expect argstr <<<"$case"
  IFS=$'\t' read -r -a cargs <<<"$argstr"
  if render "$WORK/invalid.yaml" "${cargs[@]}"; then
    fail "rejects: $name (helm template succeeded)"
  elif grep -qF -- "$expect" "$WORK/invalid.yaml.err"; then
    pass "rejects: $name"
  else
    fail "rejects: $name (failed for another reason)"
    sed 's/^/       /' "$WORK/invalid.yaml.err"
  fi
done

echo "== summary"
if [ -n "${HELM_RENDERED_CONFIG_DIR:-}" ]; then
  mkdir -p "$HELM_RENDERED_CONFIG_DIR"
  cp "$CONFIGS"/*.toml "$HELM_RENDERED_CONFIG_DIR"/
  echo "rendered config.toml files ($(find "$CONFIGS" -name '*.toml' | wc -l)): $HELM_RENDERED_CONFIG_DIR"
fi
echo "${#PASSED[@]} passed, ${#FAILED[@]} failed"
if [ "${#FAILED[@]}" -gt 0 ]; then
  printf '  failed: %s\n' "${FAILED[@]}"
  exit 1
fi
