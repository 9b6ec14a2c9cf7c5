{{/* Names, labels and the image, shared by every template. */}}

{{- define "mopar.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mopar.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mopar.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mopar.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "mopar.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mopar.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
A model's gateway name, as the operator's names.gateway_name gives it (from helmTest.model):
the model's name on Knative, NAME-gateway without it; lowercase, '.' and '_' as '-'; over 49
characters, 40 of them and 8 hex digits of the sha256 of the whole.
*/}}
{{- define "mopar.gatewayName" -}}
{{- $name := lower .name | replace "." "-" | replace "_" "-" -}}
{{- if eq .serving "deployment" }}{{ $name = printf "%s-gateway" $name }}{{ end -}}
{{- if gt (len $name) 49 -}}
{{- printf "%s-%s" (regexReplaceAll "-+$" (trunc 40 $name) "") (sha256sum $name | trunc 8) -}}
{{- else -}}
{{- $name -}}
{{- end -}}
{{- end -}}

{{- define "mopar.redisName" -}}
{{- printf "%s-redis" (include "mopar.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mopar.redisSecretName" -}}
{{- default (include "mopar.redisName" .) .Values.redis.existingSecret -}}
{{- end -}}

{{/*
The rules the operator needs in each namespace it serves: exactly the requests it makes
(tests/operator/test_rbac.py derives them from a whole lifecycle and compares). Kopf lists,
watches and patches the models (finalizers, progress, status) and posts Events; `apply` gets,
creates and patches what the operator owns (repairing edits), stale serving objects are
listed and deleted, prepare Jobs are created and read, and a spec's own Redis Secret is read.
*/}}
{{- define "mopar.operatorRules" -}}
- apiGroups: ["mopar.dev"]
  resources: ["partitionedmodels"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["mopar.dev"]
  resources: ["partitionedmodels/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["configmaps", "secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "create"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["serving.knative.dev"]
  resources: ["services"]
  verbs: ["get", "list", "create", "patch", "delete"]
{{- end -}}
