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
