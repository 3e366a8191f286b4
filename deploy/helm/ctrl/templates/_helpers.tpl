{{/* Names. */}}
{{- define "ctrl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ctrl.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "ctrl.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "ctrl.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* A region's key, "<platform>-<region>": names its objects and Secret keys. */}}
{{- define "ctrl.regionKey" -}}
{{- printf "%s-%s" .platform .name -}}
{{- end -}}

{{/* Labels of every object; call with (dict "root" $ "component" "api"). */}}
{{- define "ctrl.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "ctrl.selectorLabels" . }}
{{- end -}}

{{- define "ctrl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ctrl.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* One service's image: (dict "root" $ "name" "ctrl-api"). */}}
{{- define "ctrl.image" -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.image.prefix) .name (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{- define "ctrl.secretName" -}}
{{- default (printf "%s-secrets" (include "ctrl.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Where agents reach ClusterService/EdgeService. */}}
{{- define "ctrl.controlUrl" -}}
{{- if .Values.controlUrl -}}
{{- .Values.controlUrl -}}
{{- else if eq .Values.clusterSync.mode "separate" -}}
{{- printf "http://%s-cluster-sync:%d" (include "ctrl.fullname" .) (int .Values.clusterSync.port) -}}
{{- else -}}
{{- printf "http://%s-api:%d" (include "ctrl.fullname" .) (int .Values.api.port) -}}
{{- end -}}
{{- end -}}

{{/* Pod-level settings every workload shares. */}}
{{- define "ctrl.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A secret environment variable; call with (dict "root" $ "name" "VAR" "key" "secret-key" "optional" false). */}}
{{- define "ctrl.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ default (include "ctrl.secretName" .root) .secret }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* The environment the control plane's configs expand. */}}
{{- define "ctrl.controlPlaneEnv" -}}
{{ include "ctrl.secretEnv" (dict "root" .root "secret" .secret "name" "CTRL_DB_PASSWORD" "key" "database-password") }}
{{ include "ctrl.secretEnv" (dict "root" .root "secret" .secret "name" "CTRL_API_TOKEN" "key" "api-token") }}
{{ include "ctrl.secretEnv" (dict "root" .root "secret" .secret "name" "CTRL_VAULT_KEY" "key" "vault-key") }}
{{ include "ctrl.secretEnv" (dict "root" .root "secret" .secret "name" "RESTATE_API_KEY" "key" "restate-api-key" "optional" true) }}
{{- end -}}

{{- define "ctrl.databaseSection" -}}
[database]
url = {{ printf "mysql://%s:${CTRL_DB_PASSWORD}@%s:%d/%s" .Values.database.user .Values.database.host (int .Values.database.port) .Values.database.name | toJson }}
max_connections = {{ int .Values.database.maxConnections }}
connect_timeout_seconds = 30
{{- end -}}

{{- define "ctrl.vaultSection" -}}
[vault]
keys = [{ id = {{ .Values.secrets.vaultKeyId | toJson }}, key = "${CTRL_VAULT_KEY}" }]
{{- end -}}

{{- define "ctrl.logSection" -}}
[log]
filter = {{ .Values.log.filter | toJson }}
format = {{ .Values.log.format | toJson }}
{{- with .Values.log.otlpEndpoint }}
otlp_endpoint = {{ . | toJson }}
otlp_sample_ratio = {{ $.Values.log.otlpSampleRatio | float64 }}
{{- end }}
{{- end -}}

{{/* ctrl-api's config (also the migration Job's). */}}
{{- define "ctrl.apiConfig" -}}
[http]
listen = {{ printf "0.0.0.0:%d" (int .Values.api.port) | toJson }}
ops_listen = {{ printf "0.0.0.0:%d" (int .Values.api.opsPort) | toJson }}
shutdown_grace_seconds = 10

[auth]
tokens = ["${CTRL_API_TOKEN}"]

{{ include "ctrl.databaseSection" . }}

{{ include "ctrl.vaultSection" . }}

[restate]
ingress_url = {{ .Values.restate.ingressUrl | toJson }}
admin_url = {{ .Values.restate.adminUrl | toJson }}
api_key = "${RESTATE_API_KEY:-}"

[limits]
requests_per_second = {{ int .Values.api.limits.requestsPerSecond }}
burst = {{ int .Values.api.limits.burst }}
unauthenticated_per_second = {{ int .Values.api.limits.unauthenticatedPerSecond }}
streams_per_token = {{ int .Values.api.limits.streamsPerToken }}

[custom_domains]
cname_domain = {{ .Values.platform.cnameDomain | toJson }}
platform_domains = {{ list .Values.platform.apexDomain | toJson }}
apex_addresses = {{ .Values.platform.apexAddresses | default list | toJson }}
{{- if eq .Values.clusterSync.mode "mounted" }}

[cluster_sync]
{{ include "ctrl.syncTimings" . }}
{{- end }}

{{ include "ctrl.logSection" . }}
{{- with .Values.api.extraConfig }}

{{ . }}
{{- end }}
{{- end -}}

{{- define "ctrl.syncTimings" -}}
heartbeat_interval_seconds = {{ int .Values.clusterSync.heartbeatIntervalSeconds }}
poll_interval_ms = {{ int .Values.clusterSync.pollIntervalMs }}
keepalive_seconds = {{ int .Values.clusterSync.keepaliveSeconds }}
{{- end -}}

{{/* ctrl-cluster-sync's config (mode "separate"). */}}
{{- define "ctrl.syncConfig" -}}
[http]
listen = {{ printf "0.0.0.0:%d" (int .Values.clusterSync.port) | toJson }}
ops_listen = {{ printf "0.0.0.0:%d" (int .Values.clusterSync.opsPort) | toJson }}
shutdown_grace_seconds = 10

{{ include "ctrl.databaseSection" . }}

[restate]
ingress_url = {{ .Values.restate.ingressUrl | toJson }}

[sync]
{{ include "ctrl.syncTimings" . }}

{{ include "ctrl.logSection" . }}
{{- end -}}

{{/* ctrl-worker's config. */}}
{{- define "ctrl.workerConfig" -}}
build_platform = {{ .Values.worker.buildPlatform | toJson }}

[restate]
listen = {{ printf "0.0.0.0:%d" (int .Values.worker.port) | toJson }}
admin_url = {{ .Values.restate.adminUrl | toJson }}
register_as = {{ printf "http://%s-worker:%d" (include "ctrl.fullname" .) (int .Values.worker.port) | toJson }}
ingress_url = {{ .Values.restate.ingressUrl | toJson }}
identity_keys = {{ .Values.restate.identityKeys | default list | toJson }}
api_key = "${RESTATE_API_KEY:-}"

{{ include "ctrl.databaseSection" . }}

[health]
listen = {{ printf "0.0.0.0:%d" (int .Values.worker.healthPort) | toJson }}

[deploy]
apex_domain = {{ .Values.platform.apexDomain | toJson }}
retire_previous_live_seconds = {{ int .Values.worker.retirePreviousLiveSeconds }}
readiness_timeout_seconds = {{ int .Values.worker.readinessTimeoutSeconds }}

[custom_domains]
apex_addresses = {{ .Values.platform.apexAddresses | default list | toJson }}

{{ include "ctrl.vaultSection" . }}

{{ include "ctrl.logSection" . }}
{{- with .Values.worker.extraConfig }}

{{ . }}
{{- end }}
{{- end -}}

{{/* krane's config for one region; call with (dict "root" $ "region" $region). */}}
{{- define "ctrl.kraneConfig" -}}
{{- $r := .region -}}
[cluster]
platform = {{ $r.platform | toJson }}
region = {{ $r.name | toJson }}
cell_id = {{ required (printf "regions: %s/%s needs krane.cellId" $r.platform $r.name) $r.krane.cellId | toJson }}

[control]
url = {{ include "ctrl.controlUrl" .root | toJson }}
token = "${KRANE_TOKEN}"

[provider]
kind = "kubernetes"

[kubernetes]
in_cluster = true
namespace = {{ $r.krane.namespace | toJson }}
network_policy = {{ $r.krane.networkPolicy | toJson }}
allow_exec = {{ .root.Values.krane.rbac.exec }}

{{ include "ctrl.vaultSection" .root }}

[http]
listen = "0.0.0.0:8070"

{{ include "ctrl.logSection" .root }}
{{- with $r.krane.extraConfig }}

{{ . }}
{{- end }}
{{- end -}}

{{/* frontline's config for one region; call with (dict "root" $ "region" $region). */}}
{{- define "ctrl.frontlineConfig" -}}
{{- $r := .region -}}
[region]
platform = {{ $r.platform | toJson }}
name = {{ $r.name | toJson }}

[control]
url = {{ include "ctrl.controlUrl" .root | toJson }}
token = "${FRONTLINE_TOKEN}"

[listen]
http = "0.0.0.0:8080"
https = "0.0.0.0:8443"
admin = "0.0.0.0:8881"

{{ include "ctrl.vaultSection" .root }}

[peers]
{{- range $k, $v := $r.frontline.peers }}
{{ $k | toJson }} = {{ $v | toJson }}
{{- end }}

{{ include "ctrl.logSection" .root }}
{{- end -}}

{{/* Probes on an HTTP port. */}}
{{- define "ctrl.probes" -}}
startupProbe:
  httpGet: {path: /health/live, port: {{ .live }}}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /health/live, port: {{ .live }}}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /health/ready, port: {{ .ready }}}
  periodSeconds: 5
  failureThreshold: 2
{{- end -}}

{{/* The chart-made Secret's data (the release's Secret and the migration Job's copy). */}}
{{- define "ctrl.secretData" -}}
{{- $v := .Values.secrets.values -}}
database-password: {{ required "secrets.values.databasePassword is required (or set secrets.existingSecret)" $v.databasePassword | quote }}
api-token: {{ required "secrets.values.apiToken is required (or set secrets.existingSecret)" $v.apiToken | quote }}
vault-key: {{ required "secrets.values.vaultKey is required (or set secrets.existingSecret)" $v.vaultKey | quote }}
{{- with $v.restateApiKey }}
restate-api-key: {{ . | quote }}
{{- end }}
{{- range (fromYaml (include "ctrl.regions" .)).regions }}
{{- $key := include "ctrl.regionKey" . }}
{{- if .krane.enabled }}
{{ printf "krane-%s-token" $key }}: {{ required (printf "secrets.values.kraneTokens.%s is required (or set secrets.existingSecret)" $key) (get ($v.kraneTokens | default dict) $key) | quote }}
{{- end }}
{{- if .frontline.enabled }}
{{ printf "frontline-%s-token" $key }}: {{ required (printf "secrets.values.frontlineTokens.%s is required (or set secrets.existingSecret)" $key) (get ($v.frontlineTokens | default dict) $key) | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* A NetworkPolicy: public ports from anywhere, private ones from .metrics, plus .extra rules. */}}
{{- define "ctrl.ingressPolicy" -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ .name }}
  labels:
    {{- include "ctrl.labels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "ctrl.selectorLabels" (dict "root" .root "component" .component) | nindent 6 }}
  policyTypes: [Ingress]
  {{- if not (or .public (and .private .metrics) .extra) }}
  ingress: []
  {{- else }}
  ingress:
    {{- range .public }}
    - ports: [{port: {{ . }}}]
    {{- end }}
    {{- if .private }}
    {{- with .metrics }}
    - from:
        {{- toYaml . | nindent 8 }}
      ports:
        {{- range $.private }}
        - {port: {{ . }}}
        {{- end }}
    {{- end }}
    {{- end }}
    {{- with .extra }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end -}}

{{/* The regions, each merged over regionDefaults, as YAML {regions: [...]}: range over
     (fromYaml (include "ctrl.regions" .)).regions. */}}
{{- define "ctrl.regions" -}}
{{- $out := list -}}
{{- range .Values.regions -}}
{{- $out = append $out (mergeOverwrite (deepCopy $.Values.regionDefaults) (deepCopy .)) -}}
{{- end -}}
{{- toYaml (dict "regions" $out) -}}
{{- end -}}

{{- /* One step of the migration Job: `ctrl-api <args>`, with the control
plane's variables and (for an agent) its token as AGENT_TOKEN only. */ -}}
{{- define "ctrl.migrateStep" -}}
- name: {{ .step.name }}
  image: {{ include "ctrl.image" (dict "root" .root "name" "ctrl-api") }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  command: {{ concat (list "ctrl-api" "--config" "/etc/ctrl/ctrl-api.toml") .step.args | toJson }}
  env:
    {{- include "ctrl.controlPlaneEnv" (dict "root" .root "secret" .secret) | nindent 4 }}
    {{- with .step.tokenKey }}
    {{- include "ctrl.secretEnv" (dict "root" $.root "secret" $.secret "name" "AGENT_TOKEN" "key" .) | nindent 4 }}
    {{- end }}
  resources:
    requests: {cpu: 50m, memory: 32Mi}
    limits: {memory: 128Mi}
  securityContext:
    {{- toYaml .root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - {name: config, mountPath: /etc/ctrl, readOnly: true}
    - {name: tmp, mountPath: /tmp}
{{- end -}}
