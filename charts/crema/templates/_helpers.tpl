{{/* Chart name, shortened to what a label value allows. */}}
{{- define "crema.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every resource name: the release name, or "<release>-crema". */}}
{{- define "crema.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "crema.operatorName" -}}
{{- printf "%s-operator" (include "crema.fullname" .) }}
{{- end }}

{{- define "crema.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: crema
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* Selector labels of the operator pods (stable across upgrades: never add to these). */}}
{{- define "crema.selectorLabels" -}}
app.kubernetes.io/name: crema-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "crema.operatorLabels" -}}
{{ include "crema.labels" . }}
app.kubernetes.io/name: crema-operator
app.kubernetes.io/component: operator
{{- end }}

{{- define "crema.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "crema.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "crema.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The namespace the operator watches in "namespace" scope. */}}
{{- define "crema.watchNamespace" -}}
{{- default .Release.Namespace .Values.rbac.watchNamespace }}
{{- end }}

{{- define "crema.webhookSecretName" -}}
{{- default (printf "%s-webhook" (include "crema.operatorName" .)) .Values.alertWebhook.existingSecret }}
{{- end }}

{{/*
Prometheus rule groups from the chart's monitoring files, as a list. A file may be a plain rule
file (groups:), a PrometheusRule (spec.groups) or a ConfigMap labelled crema.dev/prometheus-rules
whose data holds rule files; anything else (dashboards, other kinds) is not a rule file.
Returns {"files": [{"name": base name, "groups": [...]}]} as YAML.
*/}}
{{- define "crema.ruleFiles" -}}
{{- $out := list }}
{{- range $path, $_ := .Files.Glob "files/monitoring/**.{yaml,yml}" }}
{{- $base := base $path | trimSuffix ".yaml" | trimSuffix ".yml" }}
{{- $text := $.Files.Get $path }}
{{- with $.Values.prometheusRule.runbookBaseUrl }}
{{- $text = replace "https://github.com/crema-dev/crema/blob/main/docs/runbooks/" (printf "%s/" (trimSuffix "/" .)) $text }}
{{- end }}
{{- range $i, $doc := splitList "\n---" $text }}
{{- $obj := fromYaml $doc }}
{{- if and $obj (not (hasKey $obj "Error")) }}
{{- $groups := list }}
{{- if hasKey $obj "groups" }}
{{- $groups = $obj.groups }}
{{- else if eq (toString (get $obj "kind")) "PrometheusRule" }}
{{- $groups = $obj.spec.groups }}
{{- else if and (eq (toString (get $obj "kind")) "ConfigMap") (eq (toString (get (default dict (get (default dict $obj.metadata) "labels")) "crema.dev/prometheus-rules")) "true") }}
{{- range $k, $v := (default dict $obj.data) }}
{{- $rf := fromYaml $v }}
{{- if hasKey $rf "groups" }}
{{- $groups = concat $groups $rf.groups }}
{{- end }}
{{- end }}
{{- end }}
{{- if $groups }}
{{- $out = append $out (dict "name" (printf "%s%s" $base (ternary "" (printf "-%d" $i) (eq $i 0))) "groups" $groups) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml (dict "files" $out) }}
{{- end }}
