{{/* Names and labels shared by every template. */}}

{{- define "memoryguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "memoryguard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "memoryguard.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "memoryguard.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "memoryguard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "memoryguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: memoryguard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "agent"). */}}
{{- define "memoryguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "memoryguard.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "memoryguard.componentLabels" -}}
{{ include "memoryguard.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "memoryguard.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "memoryguard.operator.fullname" -}}
{{- printf "%s-operator" (include "memoryguard.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "memoryguard.agent.fullname" -}}
{{- printf "%s-agent" (include "memoryguard.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "memoryguard.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "memoryguard.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "memoryguard.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create -}}
{{- default (include "memoryguard.agent.fullname" .) .Values.agent.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.agent.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Kopf peering only makes sense with more than one replica; one replica runs standalone. */}}
{{- define "memoryguard.operator.peered" -}}
{{- if gt (int .Values.operator.replicas) 1 -}}true{{- end -}}
{{- end -}}

{{- define "memoryguard.scraper.fullname" -}}
{{- printf "%s-scraper" (include "memoryguard.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The agent pods' selector as the operator's --agent-selector wants it: k=v,k=v. */}}
{{- define "memoryguard.agent.selectorString" -}}
{{- $labels := include "memoryguard.selectorLabels" (dict "ctx" . "component" "agent") | fromYaml -}}
{{- $pairs := list -}}
{{- range $key := keys $labels | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%s" $key (get $labels $key)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/*
Namespaces the operator serves when not cluster-wide: the listed ones plus the release's own,
because the operator finds the agents by watching pods there. Comma-joined (empty: all).
*/}}
{{- define "memoryguard.operator.namespaces" -}}
{{- if .Values.operator.watchNamespaces -}}
{{- append .Values.operator.watchNamespaces .Release.Namespace | uniq | join "," -}}
{{- end -}}
{{- end -}}
