{{/* Names and labels. */}}
{{- define "cbtls.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cbtls.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "cbtls.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cbtls.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cbtls.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "cbtls.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: cobrowse-tls-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "cbtls.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cbtls.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "cbtls.peeringName" -}}
{{- default (include "cbtls.fullname" .) .Values.peering.name -}}
{{- end -}}

{{- define "cbtls.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The namespaced rules: exactly the API calls of operator/cobrowse_tls/kube.py plus kopf's own
(events; peering objects when peering is on). Used by the ClusterRole (cluster-wide mode) and
by the Role in each watched namespace (namespaced mode).
*/}}
{{- define "cbtls.namespacedRules" -}}
# The CRs: kopf lists/watches them; finalizers (MSCAPI cleanup) are merge patches.
- apiGroups: ["tls.cobrowse.io"]
  resources: ["cobrowsetlses"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["tls.cobrowse.io"]
  resources: ["cobrowsetlses/status"]
  verbs: ["patch"]
# Sources (read) and outputs (server-side apply): the truststore Secret, the security ConfigMap.
- apiGroups: [""]
  resources: ["secrets", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Events: created for the CobrowseTLS; listed to read why the agent DaemonSet has no pods.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
# Restarts: read the workloads, patch the pod-template annotation tls.cobrowse.io/restarted-for.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "patch"]
# The MSCAPI agent DaemonSet (server-side apply, deleted with its CR) and its pods' readiness.
- apiGroups: ["apps"]
  resources: ["daemonsets"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
{{- end -}}

{{- define "cbtls.peeringRule" -}}
- apiGroups: ["kopf.dev"]
  resources: [{{ . | quote }}]
  verbs: ["get", "list", "watch", "patch"]
{{- end -}}

{{/* kopf's resource discovery: it watches CRDs to notice CobrowseTLS being (re)installed. */}}
{{- define "cbtls.crdRule" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end -}}
