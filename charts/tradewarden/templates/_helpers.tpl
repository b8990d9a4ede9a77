{{/*
Shared template helpers of the tradewarden chart: names, labels and image references. Every template
includes these; the generated CRD templates (templates/crds/, from `make crds`) need "tradewarden.labels".
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "tradewarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every namespaced object: fullnameOverride, else the release name (when it already contains
the chart name), else release-chart. Truncated to leave room for suffixes such as "-operator".
*/}}
{{- define "tradewarden.fullname" -}}
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

{{/* chart-version, as the helm.sh/chart label wants it. */}}
{{- define "tradewarden.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object the chart renders (the CRDs included). */}}
{{- define "tradewarden.labels" -}}
helm.sh/chart: {{ include "tradewarden.chart" . }}
{{ include "tradewarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tradewarden
{{- end }}

{{/* The labels that select the operator's pod; never change them on upgrade (selectors are immutable). */}}
{{- define "tradewarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tradewarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tradewarden.operatorSelectorLabels" -}}
{{ include "tradewarden.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "tradewarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-operator" (include "tradewarden.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. Argument: (list image appVersion). */}}
{{- define "tradewarden.imageRef" -}}
{{- $image := index . 0 }}
{{- $appVersion := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $appVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "tradewarden.operatorImage" -}}
{{- include "tradewarden.imageRef" (list .Values.image .Chart.AppVersion) }}
{{- end }}

{{- define "tradewarden.runnerImage" -}}
{{- include "tradewarden.imageRef" (list .Values.runnerImage .Chart.AppVersion) }}
{{- end }}

{{/* The names of the reviewers' API key Secrets, as a JSON array (templates/reviewers.yaml). */}}
{{- define "tradewarden.reviewerSecrets" -}}
{{- $names := list }}
{{- range .Values.reviewers }}
{{- $names = append $names .apiKeySecretRef.name }}
{{- end }}
{{- toJson $names }}
{{- end }}
