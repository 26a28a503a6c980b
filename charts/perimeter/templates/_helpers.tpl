{{- define "perimeter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "perimeter.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "perimeter.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "perimeter.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- /* The warm runners' assignment Service, and the Secret that keeps its CA. */ -}}
{{- define "perimeter.assignmentService" -}}
{{- printf "%s-assignment" (include "perimeter.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "perimeter.assignmentCaSecret" -}}
{{- printf "%s-assignment-ca" (include "perimeter.fullname" .) -}}
{{- end -}}

{{- define "perimeter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "perimeter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- /* The selector labels as a flag's LABEL=VALUE[,LABEL=VALUE]. */ -}}
{{- define "perimeter.selectorLabelList" -}}
{{- $pairs := list -}}
{{- range $key, $value := include "perimeter.selectorLabels" . | fromYaml -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{- define "perimeter.labels" -}}
{{ include "perimeter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: perimeter
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "perimeter.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
