{{/*
Chart name.
*/}}
{{- define "metricshard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/*
Base name of every resource. Truncated to 40 characters: the StatefulSet's name plus its
pods' controller-revision-hash suffix must fit a 63-character label value.
*/}}
{{- define "metricshard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "metricshard.operator.fullname" -}}
{{- printf "%s-operator" (include "metricshard.fullname" .) }}
{{- end }}

{{- define "metricshard.collector.fullname" -}}
{{- printf "%s-collector" (include "metricshard.fullname" .) }}
{{- end }}

{{- define "metricshard.nodeCollector.fullname" -}}
{{- printf "%s-node-collector" (include "metricshard.fullname" .) }}
{{- end }}

{{/*
Headless Service of the collector StatefulSet (stable pod DNS names).
*/}}
{{- define "metricshard.collector.headlessName" -}}
{{- printf "%s-collector-headless" (include "metricshard.fullname" .) }}
{{- end }}

{{- define "metricshard.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "metricshard.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "metricshard.collector.serviceAccountName" -}}
{{- if .Values.collector.serviceAccount.create }}
{{- default (include "metricshard.collector.fullname" .) .Values.collector.serviceAccount.name }}
{{- else }}
{{- required "collector.serviceAccount.name is required when collector.serviceAccount.create is false" .Values.collector.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "metricshard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object of the release.
*/}}
{{- define "metricshard.labels" -}}
helm.sh/chart: {{ include "metricshard.chart" . }}
{{ include "metricshard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: metricshard
{{- end }}

{{/*
Labels shared by every pod of the release (the metrics Service selects by these).
*/}}
{{- define "metricshard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "metricshard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one component: include "metricshard.componentLabels" (list . "collector")
*/}}
{{- define "metricshard.componentLabels" -}}
{{ include "metricshard.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "metricshard.componentSelectorLabels" -}}
{{ include "metricshard.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
Image reference: include "metricshard.image" (list . .Values.collector.image)
*/}}
{{- define "metricshard.image" -}}
{{- $root := index . 0 }}
{{- $image := index . 1 }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}

{{/*
The downward-API identity every metricshard process reads: POD_NAME, POD_NAMESPACE, NODE_NAME.
*/}}
{{- define "metricshard.podIdentityEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- end }}

{{/*
Probes and port of the HTTP endpoint every metricshard process serves.
*/}}
{{- define "metricshard.httpEndpoint" -}}
ports:
  - name: http-metrics
    containerPort: {{ .Values.metricsPort }}
    protocol: TCP
livenessProbe:
  httpGet:
    path: /healthz
    port: http-metrics
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: http-metrics
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
{{- end }}

{{/*
Scheduling fields shared by every pod: include "metricshard.scheduling" .Values.operator
*/}}
{{- define "metricshard.scheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Metadata lines injected under `metadata:` of each CRD file (which holds only metadata.name):
labels, and the keep policy so that uninstalling never deletes the CRDs and with them every
custom resource in the cluster. Indented for the CRD's top-level metadata; no trailing newline.
*/}}
{{- define "metricshard.crdMetadata" -}}
{{- if .Values.crds.keep }}
  annotations:
    helm.sh/resource-policy: keep
{{- end }}
  labels:
    {{- include "metricshard.labels" . | nindent 4 }}
{{- end }}
