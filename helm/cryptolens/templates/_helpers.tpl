{{/* Chart name, truncated to the DNS label limit. */}}
{{- define "cryptolens.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped full name. */}}
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
app.kubernetes.io/name: {{ include "cryptolens.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: cryptolens
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cryptolens.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cryptolens.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cryptolens.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "cryptolens.redisUrl" -}}
{{- if .Values.externalRedis.url -}}
{{ .Values.externalRedis.url }}
{{- else -}}
redis://{{ include "cryptolens.fullname" . }}-redis:6379/0
{{- end -}}
{{- end -}}

{{/* The address of a gRPC component for clients: DNS over the headless Service, round-robin. */}}
{{- define "cryptolens.grpcAddr" -}}
dns:///{{ include "cryptolens.fullname" .root }}-{{ .component }}-headless:{{ (index .root.Values.components .component).grpcPort }}
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
