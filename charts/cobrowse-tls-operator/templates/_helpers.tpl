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

{{/* Lease leader election: asked for, or needed by several replicas; kopf peering replaces it. */}}
{{- define "cbtls.leaderElect" -}}
{{- if and (not .Values.peering.enabled) (or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1)) -}}
true
{{- end -}}
{{- end -}}

{{- define "cbtls.leaseName" -}}
{{- default (include "cbtls.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{- define "cbtls.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The namespaced rules: exactly the API calls of operator/cobrowse_tls/engine/kube.py plus kopf's
own (events). Used by the ClusterRole (cluster-wide mode) and by the Role in each watched
namespace (namespaced mode). No resourceNames: the names of sources, outputs and workloads come
from CobrowseTLS specs, which the chart cannot know; the admission policy fences the writes.
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
# Restarts: read the workloads (watched: reconciles read them from the operator's cache,
# engine/cache.py), patch the pod-template annotation tls.cobrowse.io/restarted-for
# (DaemonSets too: they can be restart targets, and the MSCAPI agent is one).
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "list", "watch", "patch"]
{{- end -}}

{{/* Only where MSCAPI is allowed: create and delete the agent DaemonSet, read its pods. */}}
{{- define "cbtls.agentRules" -}}
- apiGroups: ["apps"]
  resources: ["daemonsets"]
  verbs: ["create", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
{{- end -}}

{{/* kopf's peering: get/patch of the one named object; list/watch cannot be narrowed. */}}
{{- define "cbtls.peeringRule" -}}
- apiGroups: ["kopf.dev"]
  resources: [{{ .resource | quote }}]
  resourceNames: [{{ .name | quote }}]
  verbs: ["get", "patch"]
- apiGroups: ["kopf.dev"]
  resources: [{{ .resource | quote }}]
  verbs: ["list", "watch"]
{{- end -}}

{{/* kopf's resource discovery: it watches CRDs to notice CobrowseTLS being (re)installed. */}}
{{- define "cbtls.crdRule" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end -}}

{{/* "true" when some namespace may run MSCAPI agents. */}}
{{- define "cbtls.mscapiEnabled" -}}
{{- if or .Values.mscapi.namespaces .Values.mscapi.namespaceLabels -}}true{{- end -}}
{{- end -}}

{{/*
The words the agent image runs cobrowse-tls with, as JSON: agent.command, or the operator's
default (cobrowse_tls.core.agent_manifest.AgentConfig; tests/chart keeps the two equal).
*/}}
{{- define "cbtls.agentCommandJson" -}}
{{- if .Values.agent.command -}}
{{- splitList " " .Values.agent.command | compact | toJson -}}
{{- else -}}
{{- list "%CONTAINER_SANDBOX_MOUNT_POINT%\\agent\\python\\python.exe" "-m" "cobrowse_tls.cli" | toJson -}}
{{- end -}}
{{- end -}}

{{- define "cbtls.serviceAccountUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "cbtls.serviceAccountName" . }}
{{- end -}}
