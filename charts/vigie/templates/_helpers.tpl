{{- define "vigie.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vigie.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "vigie.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "vigie.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vigie.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- /*
The web view's values, read with their defaults: `helm upgrade --reuse-values` from a
chart that had no `web` keeps values without them.
*/}}
{{- define "vigie.webEnabled" -}}
{{- if dig "enabled" true (.Values.web | default dict) }}true{{ end -}}
{{- end -}}

{{- define "vigie.webSessionSecret" -}}
{{- $given := dig "sessionKey" "existingSecret" "" (.Values.web | default dict) -}}
{{- default (printf "%s-web-session" (include "vigie.fullname" .)) $given -}}
{{- end -}}

{{- define "vigie.webSessionKey" -}}
{{- dig "sessionKey" "key" "session-key" (.Values.web | default dict) -}}
{{- end -}}
