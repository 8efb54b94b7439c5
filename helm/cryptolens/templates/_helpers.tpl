{{/* Chart name, truncated to the DNS label limit. */}}
{{- define "cryptolens.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped full name; a release already named after the chart is not doubled. */}}
{{- define "cryptolens.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Standard labels. Call with (dict "root" $ "component" "core"). */}}
{{- define "cryptolens.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "cryptolens.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: cryptolens
{{- end -}}

{{/* Labels that select one component's pods. Same call as cryptolens.labels. */}}
{{- define "cryptolens.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cryptolens.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cryptolens.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* "true" when the chart runs its own Redis: enabled and no external one configured. */}}
{{- define "cryptolens.bundledRedis" -}}
{{- if and .Values.redis.enabled (not .Values.externalRedis.url) (not .Values.externalRedis.urlSecret.name) -}}
true
{{- else if not (or .Values.externalRedis.url .Values.externalRedis.urlSecret.name) -}}
{{ fail "redis.enabled=false needs externalRedis.url (redis://host:6379/0) or externalRedis.urlSecret" }}
{{- end -}}
{{- end -}}

{{/* The Secret holding the bundled Redis' password and URL: the user's, or the generated one. */}}
{{- define "cryptolens.redisSecretName" -}}
{{- .Values.redis.auth.existingSecret | default (printf "%s-redis" (include "cryptolens.fullname" .)) -}}
{{- end -}}

{{/* The external Redis' Secrets apart from the URL, by file name (each file a *_FILE setting). */}}
{{- define "cryptolens.externalRedisSecrets" -}}
{{- $r := .Values.externalRedis -}}
{{- if not (include "cryptolens.bundledRedis" .) }}
{{- range $file, $ref := dict "redis-password" $r.passwordSecret "redis-ca.crt" $r.caSecret "redis-sentinel-password" $r.sentinelPasswordSecret }}
{{- if $ref.name }}
{{ $file }}: {{ toJson $ref }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Where CRYPTOLENS_* files from Secrets are mounted. */}}
{{- define "cryptolens.secretsDir" -}}/etc/cryptolens-secrets{{- end -}}

{{/*
The Secrets one gRPC component reads, as projected-volume sources; each key becomes a file named
after its setting. Call with (dict "root" $ "component" "fetch"); empty when there is none.
*/}}
{{- define "cryptolens.secretSources" -}}
{{- $v := .root.Values -}}
{{- if $v.externalRedis.urlSecret.name }}
- secret:
    name: {{ $v.externalRedis.urlSecret.name }}
    items: [{key: {{ $v.externalRedis.urlSecret.key }}, path: redis-url}]
{{- else if include "cryptolens.bundledRedis" .root }}
- secret:
    name: {{ include "cryptolens.redisSecretName" .root }}
    items: [{key: redis-url, path: redis-url}]
{{- end }}
{{- range $file, $ref := (include "cryptolens.externalRedisSecrets" .root | fromYaml) }}
- secret:
    name: {{ $ref.name }}
    items: [{key: {{ $ref.key }}, path: {{ $file }}}]
{{- end }}
{{- if and (eq .component "fetch") $v.config.coingeckoApiKeySecret.name }}
- secret:
    name: {{ $v.config.coingeckoApiKeySecret.name }}
    items: [{key: {{ $v.config.coingeckoApiKeySecret.key }}, path: coingecko-api-key}]
{{- end }}
{{- if eq .component "alerts" }}
{{- with $v.alerts.webhookUrlSecret }}{{ if .name }}
- secret:
    name: {{ .name }}
    items: [{key: {{ .key }}, path: webhook-url}]
{{- end }}{{ end }}
{{- with $v.alerts.alertmanagerUrlSecret }}{{ if .name }}
- secret:
    name: {{ .name }}
    items: [{key: {{ .key }}, path: alertmanager-url}]
{{- end }}{{ end }}
{{- end }}
{{- include "cryptolens.tlsSource" .root }}
{{- end -}}

{{/* The gRPC TLS Secret as a projected-volume source; empty while tls.enabled is false. */}}
{{- define "cryptolens.tlsSource" -}}
{{- with .Values.tls }}{{ if .enabled }}
- secret:
    name: {{ required "tls.enabled needs tls.secretName: a Secret with tls.crt, tls.key and ca.crt" .secretName }}
    items: [{key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}, {key: ca.crt, path: ca.crt}]
{{- end }}{{ end }}
{{- end -}}

{{/*
TLS settings of a pod, files of the tlsSource. Servers (the gRPC components) get their certificate
and key; every client the CA and the name to verify, and for mTLS its own certificate (the same
one). Call with (dict "root" $ "server" true|false); empty while tls.enabled is false.
*/}}
{{- define "cryptolens.tlsEnv" -}}
{{- $t := .root.Values.tls -}}
{{- if $t.enabled }}
{{- $dir := include "cryptolens.secretsDir" .root }}
- name: CRYPTOLENS_TLS_CA_FILE
  value: {{ $dir }}/ca.crt
- name: CRYPTOLENS_TLS_SERVER_NAME
  value: {{ required "tls.enabled needs tls.serverName: the DNS name the certificate carries" $t.serverName | quote }}
{{- if .server }}
- name: CRYPTOLENS_TLS_CERT_FILE
  value: {{ $dir }}/tls.crt
- name: CRYPTOLENS_TLS_KEY_FILE
  value: {{ $dir }}/tls.key
{{- if $t.mutual }}
- name: CRYPTOLENS_TLS_CLIENT_CA_FILE
  value: {{ $dir }}/ca.crt
{{- end }}
{{- end }}
{{- if $t.mutual }}
- name: CRYPTOLENS_TLS_CLIENT_CERT_FILE
  value: {{ $dir }}/tls.crt
- name: CRYPTOLENS_TLS_CLIENT_KEY_FILE
  value: {{ $dir }}/tls.key
{{- end }}
{{- end }}
{{- end -}}

{{/* The address of a gRPC component for clients: DNS over the headless Service, round-robin. */}}
{{- define "cryptolens.grpcAddr" -}}
dns:///{{ include "cryptolens.fullname" .root }}-{{ .component }}-headless:{{ (index .root.Values.components .component).grpcPort }}
{{- end -}}

{{/*
Pod spec fields every CryptoLens pod shares (indent with nindent 6 under "spec:").
Service links are off: Kubernetes would otherwise inject CRYPTOLENS_<SERVICE>_PORT=tcp://... for
every Service of a release named "cryptolens", colliding with the app's own CRYPTOLENS_* settings.
*/}}
{{- define "cryptolens.podCommon" -}}
enableServiceLinks: false
automountServiceAccountToken: false
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

{{/* Environment every CryptoLens container shares. */}}
{{- define "cryptolens.commonEnv" -}}
- name: CRYPTOLENS_HOST
  value: "0.0.0.0"
- name: CRYPTOLENS_SYMBOLS
  value: {{ join "," .Values.config.symbols | quote }}
- name: CRYPTOLENS_INTERVAL
  value: {{ .Values.config.interval | quote }}
- name: CRYPTOLENS_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: CRYPTOLENS_FETCH_ADDR
  value: {{ include "cryptolens.grpcAddr" (dict "root" . "component" "fetch") | quote }}
- name: CRYPTOLENS_CORE_ADDR
  value: {{ include "cryptolens.grpcAddr" (dict "root" . "component" "core") | quote }}
- name: CRYPTOLENS_ALERTS_ADDR
  value: {{ include "cryptolens.grpcAddr" (dict "root" . "component" "alerts") | quote }}
- name: HOME
  value: /tmp
{{- end -}}

{{/*
Environment only gRPC components read; every secret is a *_FILE naming a file of the projected
"secrets" volume (cryptolens.secretSources), never a value. Call with (dict "root" $ "component" "fetch").
*/}}
{{- define "cryptolens.componentEnv" -}}
{{- $v := .root.Values -}}
{{- $dir := include "cryptolens.secretsDir" .root -}}
{{- include "cryptolens.tlsEnv" (dict "root" .root "server" true) }}
{{- if and $v.externalRedis.url (not $v.externalRedis.urlSecret.name) }}
- name: CRYPTOLENS_REDIS_URL
  value: {{ $v.externalRedis.url | quote }}
{{- else }}
{{- $_ := include "cryptolens.bundledRedis" .root }}{{/* fails when there is no Redis at all */}}
- name: CRYPTOLENS_REDIS_URL_FILE
  value: {{ $dir }}/redis-url
{{- end }}
{{- range $file, $_ := (include "cryptolens.externalRedisSecrets" .root | fromYaml) }}
{{- if eq $file "redis-ca.crt" }}{{/* the setting is the CA file's path itself */}}
- name: CRYPTOLENS_REDIS_CA_FILE
{{- else }}
- name: CRYPTOLENS_{{ $file | upper | replace "-" "_" }}_FILE
{{- end }}
  value: {{ $dir }}/{{ $file }}
{{- end }}
{{- if and $v.externalRedis.username (not (include "cryptolens.bundledRedis" .root)) }}
- name: CRYPTOLENS_REDIS_USERNAME
  value: {{ $v.externalRedis.username | quote }}
{{- end }}
{{- if eq .component "fetch" }}
- name: CRYPTOLENS_PROVIDER
  value: {{ $v.config.provider | quote }}
- name: CRYPTOLENS_HISTORY_DAYS
  value: {{ $v.config.historyDays | quote }}
{{- if $v.config.coingeckoApiKeySecret.name }}
- name: CRYPTOLENS_COINGECKO_API_KEY_FILE
  value: {{ $dir }}/coingecko-api-key
{{- end }}
{{- else if eq .component "alerts" }}
- name: CRYPTOLENS_RULES_FILE
  value: /etc/cryptolens/rules.yaml
{{- if $v.alerts.webhookUrlSecret.name }}
- name: CRYPTOLENS_WEBHOOK_URL_FILE
  value: {{ $dir }}/webhook-url
{{- end }}
{{- if $v.alerts.alertmanagerUrlSecret.name }}
- name: CRYPTOLENS_ALERTMANAGER_URL_FILE
  value: {{ $dir }}/alertmanager-url
{{- end }}
{{- end }}
{{- end -}}
