{{/*
Chart name, truncated to the 63 characters Kubernetes allows in a label.
*/}}
{{- define "identify-connector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. If the release name already contains the chart
name it is not repeated.
*/}}
{{- define "identify-connector.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "identify-connector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "identify-connector.labels" -}}
helm.sh/chart: {{ include "identify-connector.chart" . }}
{{ include "identify-connector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: connector
{{- end }}

{{- define "identify-connector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "identify-connector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "identify-connector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "identify-connector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "identify-connector.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Name and key of the Secret that holds the Crustdata API key, or nothing when
neither apiKey nor existingSecret is set.
*/}}
{{- define "identify-connector.secretName" -}}
{{- if and .Values.apiKey .Values.existingSecret }}
{{- fail "set either apiKey or existingSecret, not both" }}
{{- end }}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else if .Values.apiKey }}
{{- include "identify-connector.fullname" . }}
{{- end }}
{{- end }}

{{- define "identify-connector.secretKey" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecretKey | default "api-key" }}
{{- else }}
{{- print "api-key" }}
{{- end }}
{{- end }}

{{/*
Environment variables the chart sets from Secrets: the Crustdata API key and
the Kafka passwords. Fails when extraEnv repeats one of them (Kubernetes would
silently keep one of the two), and when a raw configToml carries a secret
(it is stored in clear in the ConfigMap).
*/}}
{{- define "identify-connector.secretEnv" -}}
{{- $secretName := include "identify-connector.secretName" . }}
{{- $vars := list }}
{{- if $secretName }}
{{- $vars = append $vars (dict "env" "CRUSTDATA_API_KEY" "name" $secretName "key" (include "identify-connector.secretKey" .)) }}
{{- end }}
{{- $kafka := .Values.kafka | default dict }}
{{- range $value, $env := dict "saslPasswordSecret" "IDENTIFY_KAFKA__SASL_PASSWORD" "sslKeyPasswordSecret" "IDENTIFY_KAFKA__SSL_KEY_PASSWORD" }}
{{- $ref := get $kafka $value | default dict }}
{{- if $ref.name }}
{{- $vars = append $vars (dict "env" $env "name" $ref.name "key" (required (printf "kafka.%s.key is required" $value) $ref.key)) }}
{{- end }}
{{- end }}
{{- range $vars }}
{{- $env := .env }}
{{- range $.Values.extraEnv }}
{{- if eq .name $env }}
{{- fail (printf "extraEnv sets %s, which the chart already sets from a Secret (apiKey/existingSecret, kafka.saslPasswordSecret, kafka.sslKeyPasswordSecret)" $env) }}
{{- end }}
{{- end }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .name | quote }}
      key: {{ .key | quote }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------------
Workload, local store, static membership and autoscaling.
--------------------------------------------------------------------- */}}

{{/* Deployment or StatefulSet (workload.kind). */}}
{{- define "identify-connector.workloadKind" -}}
{{- dig "kind" "Deployment" (.Values.workload | default dict) }}
{{- end }}

{{/* Name of the headless Service of a StatefulSet (a DNS label: <= 63). */}}
{{- define "identify-connector.headlessServiceName" -}}
{{- printf "%s-headless" (include "identify-connector.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/* Name of the PersistentVolumeClaim of a single-replica Deployment. */}}
{{- define "identify-connector.storeClaimName" -}}
{{- printf "%s-store" (include "identify-connector.fullname" .) }}
{{- end }}

{{/* "true" when the store lives on PersistentVolumeClaims, else "". */}}
{{- define "identify-connector.storePersistence" -}}
{{- if dig "persistence" "enabled" false (.Values.store | default dict) }}true{{ end }}
{{- end }}

{{/*
Spec of a store PersistentVolumeClaim (the PVC of a Deployment and the
volumeClaimTemplate of a StatefulSet). storageClass "" omits the field, "-"
sets storageClassName "" (no dynamic provisioning).
*/}}
{{- define "identify-connector.storeClaimSpec" -}}
{{- $p := .Values.store.persistence }}
accessModes:
  {{- toYaml ($p.accessModes | default (list "ReadWriteOnce")) | nindent 2 }}
{{- if eq ($p.storageClass | default "") "-" }}
storageClassName: ""
{{- else if $p.storageClass }}
storageClassName: {{ $p.storageClass | quote }}
{{- end }}
resources:
  requests:
    storage: {{ $p.size | default "1Gi" | quote }}
{{- end }}

{{/*
"true" when static membership is on, else "". staticMembership is the string
"auto" (on for a StatefulSet) or a boolean.
*/}}
{{- define "identify-connector.staticMembership" -}}
{{- $v := .Values.staticMembership }}
{{- if kindIs "bool" $v }}
{{- if $v }}true{{ end }}
{{- else if or (kindIs "invalid" $v) (eq (toString $v) "auto") }}
{{- if eq (include "identify-connector.workloadKind" .) "StatefulSet" }}true{{ end }}
{{- else }}
{{- fail (printf "staticMembership must be auto, true or false (booleans), not %v" $v) }}
{{- end }}
{{- end }}

{{/*
IDENTIFY_KAFKA__INSTANCE_ID (group.instance.id) from the pod name, when
static membership is on. Fails when extraEnv repeats it (Kubernetes would
silently keep one of the two).
*/}}
{{- define "identify-connector.instanceIdEnv" -}}
{{- if include "identify-connector.staticMembership" . }}
{{- range .Values.extraEnv }}
{{- if eq .name "IDENTIFY_KAFKA__INSTANCE_ID" }}
{{- fail "extraEnv sets IDENTIFY_KAFKA__INSTANCE_ID, which the chart already sets from the pod name (static membership, see staticMembership); set staticMembership: false to pass your own" }}
{{- end }}
{{- end }}
- name: IDENTIFY_KAFKA__INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- end }}

{{/* The autoscaler in use: "keda", "hpa" or "" (none). Both: an error. */}}
{{- define "identify-connector.autoscaler" -}}
{{- $a := .Values.autoscaling | default dict }}
{{- $keda := dig "keda" "enabled" false $a }}
{{- $hpa := dig "hpa" "enabled" false $a }}
{{- if and $keda $hpa }}
{{- fail "autoscaling: enable keda or hpa, not both (KEDA creates its own HorizontalPodAutoscaler; two autoscalers would fight over the replicas)" }}
{{- else if $keda }}keda
{{- else if $hpa }}hpa
{{- end }}
{{- end }}

{{/*
Most pods under autoscaling: autoscaling.maxReplicas, by default
autoscaling.partitions; never more than partitions (a pod beyond the
partition count gets no partition).
*/}}
{{- define "identify-connector.maxReplicas" -}}
{{- $a := .Values.autoscaling }}
{{- $max := $a.maxReplicas }}
{{- $partitions := $a.partitions }}
{{- if and (kindIs "invalid" $max) (kindIs "invalid" $partitions) }}
{{- fail "autoscaling: set autoscaling.partitions (the input topics' total partition count; maxReplicas defaults to it) or autoscaling.maxReplicas" }}
{{- end }}
{{- if kindIs "invalid" $max }}
{{- $max = $partitions }}
{{- end }}
{{- if and (not (kindIs "invalid" $partitions)) (gt (int $max) (int $partitions)) }}
{{- fail (printf "autoscaling.maxReplicas %d exceeds autoscaling.partitions %d: pods beyond the partition count get no partitions" (int $max) (int $partitions)) }}
{{- end }}
{{- if gt (int $a.minReplicas) (int $max) }}
{{- fail (printf "autoscaling.minReplicas %d exceeds the maximum of %d replicas" (int $a.minReplicas) (int $max)) }}
{{- end }}
{{- int $max }}
{{- end }}

{{/* Fewest pods: autoscaling.minReplicas with autoscaling, else replicaCount. */}}
{{- define "identify-connector.minPods" -}}
{{- if include "identify-connector.autoscaler" . }}
{{- int .Values.autoscaling.minReplicas }}
{{- else }}
{{- int .Values.replicaCount }}
{{- end }}
{{- end }}

{{/*
The rules across values that the schema cannot express; included once, by
templates/deployment.yaml.
*/}}
{{- define "identify-connector.checkWorkload" -}}
{{- $kind := include "identify-connector.workloadKind" . }}
{{- $autoscaler := include "identify-connector.autoscaler" . }}
{{- if and (include "identify-connector.storePersistence" .) (eq $kind "Deployment") }}
{{- if or $autoscaler (ne (int .Values.replicaCount) 1) }}
{{- fail (printf "store.persistence with a Deployment needs replicaCount 1 and no autoscaling (replicaCount is %d%s): each replica needs its own disk, because the store is opened by one process at a time; use workload.kind=StatefulSet (one PersistentVolumeClaim per pod)" (int .Values.replicaCount) (ternary (printf ", autoscaling.%s is enabled" $autoscaler) "" (ne $autoscaler ""))) }}
{{- end }}
{{- end }}
{{- if $autoscaler }}
{{- $_ := include "identify-connector.maxReplicas" . }}
{{- end }}
{{- if and (eq $autoscaler "keda") .Values.configToml }}
{{- fail "autoscaling.keda reads kafka.brokers, kafka.group_id and kafka.input_topics from the structured config; it cannot be used with configToml" }}
{{- end }}
{{- if and (eq $autoscaler "hpa") (not (kindIs "invalid" .Values.autoscaling.hpa.targetCPUUtilizationPercentage)) }}
{{- if not (dig "requests" "cpu" "" (.Values.resources | default dict)) }}
{{- fail "autoscaling.hpa.targetCPUUtilizationPercentage needs resources.requests.cpu (utilization is a percentage of the request); set it, or set the target to null and use externalLagMetric" }}
{{- end }}
{{- end }}
{{- if and (eq $autoscaler "hpa") (kindIs "invalid" .Values.autoscaling.hpa.targetCPUUtilizationPercentage) (not .Values.autoscaling.hpa.externalLagMetric) }}
{{- fail "autoscaling.hpa has no metric: set targetCPUUtilizationPercentage or externalLagMetric" }}
{{- end }}
{{- $instanceId := "" }}
{{- if .Values.configToml }}
{{- $instanceId = regexFind `(?m)^[ \t]*instance_id[ \t]*=[ \t]*("[^"]+"|'[^']+')` .Values.configToml }}
{{- else }}
{{- $instanceId = dig "kafka" "instance_id" "" (.Values.config | default dict) }}
{{- end }}
{{- if $instanceId }}
{{- fail "kafka.instance_id is set in the config: every pod would join the group with that one group.instance.id (a second live member fences the first). Leave it empty and use staticMembership (with workload.kind=StatefulSet each pod gets its own stable name as instance id)" }}
{{- end }}
{{- end }}

{{/*
configToml is stored in the ConfigMap like `config`; refuse the secret keys
there too (the schema cannot look inside the string).
*/}}
{{- define "identify-connector.checkConfigTomlSecrets" -}}
{{- if .Values.configToml }}
{{- $m := regexFind `(?m)^[ \t]*(sasl_password|ssl_key_password|key|"sasl\.password"|"ssl\.key\.password"|'sasl\.password'|'ssl\.key\.password')[ \t]*=` .Values.configToml }}
{{- if $m }}
{{- fail (printf "configToml sets %s: secrets must not be stored in the ConfigMap; use apiKey/existingSecret, kafka.saslPasswordSecret or kafka.sslKeyPasswordSecret" (trimSuffix "=" $m | trim)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The config.toml the connector reads: configToml verbatim when set, otherwise
the structured `config` map rendered to TOML.
*/}}
{{- define "identify-connector.configToml" -}}
{{- if .Values.configToml }}
{{- .Values.configToml }}
{{- else }}
{{- include "identify-connector.toml.table" (dict "prefix" "" "table" .Values.config) | trimAll "\n" }}
{{- end }}
{{- end }}

{{/*
Port of the HTTP server (metrics, probes, webhook), taken from the
server.listen address of the config ("0.0.0.0:8080" -> 8080).
*/}}
{{- define "identify-connector.httpPort" -}}
{{- $listen := "" }}
{{- if .Values.configToml }}
{{- $m := regexFind "(?m)^\\s*listen\\s*=\\s*\"[^\"]*:[0-9]+\"" .Values.configToml }}
{{- $listen = $m | trimSuffix "\"" }}
{{- else if and .Values.config .Values.config.server }}
{{- $listen = .Values.config.server.listen | default "" }}
{{- end }}
{{- $port := regexFind "[0-9]+$" $listen }}
{{- $port | default "8080" }}
{{- end }}

{{/*
webhook.public_url from the structured config or the raw configToml ("" when
unset).
*/}}
{{- define "identify-connector.publicUrl" -}}
{{- if .Values.configToml }}
{{- $m := regexFind `(?m)^[ \t]*public_url[ \t]*=[ \t]*"[^"]*"` .Values.configToml }}
{{- regexReplaceAll `^[^"]*"([^"]*)"$` $m "${1}" }}
{{- else }}
{{- dig "webhook" "public_url" "" (.Values.config | default dict) }}
{{- end }}
{{- end }}

{{/*
With the Ingress, the callback URL {public_url}/webhooks/crustdata/{token}
must reach the connector's POST /webhooks/crustdata/{token} unchanged: the
public_url must have no path, and its host must be one of the Ingress hosts.
*/}}
{{- define "identify-connector.checkWebhookIngress" -}}
{{- $public := include "identify-connector.publicUrl" . }}
{{- if and .Values.ingress.enabled $public }}
{{- $u := urlParse $public }}
{{- if not (has ($u.path | default "/") (list "/" "")) }}
{{- fail (printf "webhook.public_url %s has the path %s, but the Ingress routes /webhooks/crustdata at the host's root and the connector serves it there: use a public_url without a path (see the chart README)" $public $u.path) }}
{{- end }}
{{- $host := regexReplaceAll `:[0-9]+$` $u.host "" }}
{{- $hosts := list }}
{{- range .Values.ingress.hosts }}
{{- $hosts = append $hosts (.host | default "") }}
{{- end }}
{{- if not (or (has $host $hosts) (has "" $hosts)) }}
{{- fail (printf "webhook.public_url host %s is none of the ingress.hosts %v" $host $hosts) }}
{{- end }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------------
A small TOML renderer.

identify-connector.toml.table renders a map: first its scalar and array
entries as `key = value`, then each nested map as a `[dotted.path]` table
(recursively), so a table's own keys always precede its sub-tables, as TOML
requires. Keys with a nil value are skipped (set a key to null in your values
to drop it from the file). Keys that are not bare TOML keys (for example the
librdkafka property "security.protocol") are quoted.
--------------------------------------------------------------------- */}}
{{- define "identify-connector.toml.table" -}}
{{- $prefix := .prefix }}
{{- range $k, $v := .table }}
{{- if not (or (kindIs "map" $v) (kindIs "invalid" $v)) }}
{{ include "identify-connector.toml.key" $k }} = {{ include "identify-connector.toml.value" $v }}
{{- end }}
{{- end }}
{{- range $k, $v := .table }}
{{- if kindIs "map" $v }}
{{- $path := include "identify-connector.toml.key" $k }}
{{- if $prefix }}
{{- $path = printf "%s.%s" $prefix $path }}
{{- end }}

[{{ $path }}]
{{- include "identify-connector.toml.table" (dict "prefix" $path "table" $v) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "identify-connector.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}
{{- . }}
{{- else }}
{{- toJson . }}
{{- end }}
{{- end }}

{{/*
A TOML value. JSON string escapes (\" \\ \n \t \u00fc ...) are all valid in
TOML basic strings, so strings go through toJson. YAML numbers arrive as
float64; whole ones are written as integers.
*/}}
{{- define "identify-connector.toml.value" -}}
{{- if kindIs "string" . }}
{{- toJson . }}
{{- else if kindIs "bool" . }}
{{- ternary "true" "false" . }}
{{- else if or (kindIs "float64" .) (kindIs "float32" .) }}
{{- if eq (float64 (int64 .)) (float64 .) }}
{{- int64 . }}
{{- else }}
{{- . }}
{{- end }}
{{- else if or (kindIs "int" .) (kindIs "int64" .) (kindIs "int32" .) (kindIs "uint64" .) }}
{{- . }}
{{- else if kindIs "slice" . }}
{{- $items := list }}
{{- range . }}
{{- if or (kindIs "map" .) (kindIs "slice" .) (kindIs "invalid" .) }}
{{- fail "config: arrays may only hold strings, numbers and booleans" }}
{{- end }}
{{- $items = append $items (include "identify-connector.toml.value" .) }}
{{- end }}
{{- printf "[%s]" (join ", " $items) }}
{{- else }}
{{- fail (printf "config: cannot render a %s as TOML" (kindOf .)) }}
{{- end }}
{{- end }}
