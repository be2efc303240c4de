{{/* The name of every object of the release: the release name, or "archway" inside it. */}}
{{- define "archway.fullname" -}}
{{- if contains "archway" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-archway" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "archway.selectorLabels" -}}
app.kubernetes.io/name: archway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "archway.labels" -}}
{{ include "archway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "archway.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The ConfigMap whose ca.crt the operator reads, if any. */}}
{{- define "archway.registryCAConfigMap" -}}
{{- if .Values.registryCA.existingConfigMap -}}
{{ .Values.registryCA.existingConfigMap }}
{{- else if .Values.registryCA.pem -}}
{{ include "archway.fullname" . }}-registry-ca
{{- end -}}
{{- end -}}
