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

{{/* externalRedis.url wins; otherwise the bundled Redis, which then must be enabled. */}}
{{- define "cryptolens.redisUrl" -}}
{{- if .Values.externalRedis.url -}}
{{ .Values.externalRedis.url }}
{{- else if .Values.redis.enabled -}}
redis://{{ include "cryptolens.fullname" . }}-redis:6379/0
{{- else -}}
{{ fail "redis.enabled=false needs externalRedis.url (redis://host:6379/0)" }}
{{- end -}}
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
- name: CRYPTOLENS_REDIS_URL
  value: {{ include "cryptolens.redisUrl" . | quote }}
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

{{/* Environment only one gRPC component reads. Call with (dict "root" $ "component" "fetch"). */}}
{{- define "cryptolens.componentEnv" -}}
{{- $v := .root.Values -}}
{{- if eq .component "fetch" }}
- name: CRYPTOLENS_PROVIDER
  value: {{ $v.config.provider | quote }}
- name: CRYPTOLENS_HISTORY_DAYS
  value: {{ $v.config.historyDays | quote }}
{{- with $v.config.coingeckoApiKeySecret }}
{{- if .name }}
- name: CRYPTOLENS_COINGECKO_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- else if eq .component "alerts" }}
- name: CRYPTOLENS_RULES_FILE
  value: /etc/cryptolens/rules.yaml
- name: CRYPTOLENS_WEBHOOK_URL
  value: {{ $v.alerts.webhookUrl | quote }}
- name: CRYPTOLENS_ALERTMANAGER_URL
  value: {{ $v.alerts.alertmanagerUrl | quote }}
{{- end }}
{{- end -}}
