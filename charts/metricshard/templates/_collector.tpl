{{/*
Pod spec of a collector, shared by the StatefulSet (placement "sharded") and the DaemonSet
(placement "every-node"):
include "metricshard.collector.podSpec" (dict "root" . "placement" "sharded" "scheduling" .Values.collector "resources" .Values.collector.resources)
*/}}
{{- define "metricshard.collector.podSpec" -}}
{{- $root := .root -}}
{{- $values := $root.Values.collector -}}
serviceAccountName: {{ include "metricshard.collector.serviceAccountName" $root }}
automountServiceAccountToken: true
enableServiceLinks: false
terminationGracePeriodSeconds: {{ $values.terminationGracePeriodSeconds }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with include "metricshard.scheduling" .scheduling | trim }}
{{ . }}
{{- end }}
containers:
  - name: collector
    image: {{ include "metricshard.image" (list $root $values.image) | quote }}
    imagePullPolicy: {{ $values.image.pullPolicy }}
    args:
      - --cluster
      - --placement={{ .placement }}
      - --listen=0.0.0.0:{{ $root.Values.metricsPort }}
      - --log-format={{ $root.Values.logFormat }}
      {{- if eq .placement "every-node" }}
      - --node-label-refresh={{ $root.Values.daemonset.nodeLabelRefresh }}
      {{- end }}
      {{- with $values.extraArgs }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    env:
      {{- include "metricshard.podIdentityEnv" $root | nindent 6 }}
      {{- with $values.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- include "metricshard.httpEndpoint" $root | nindent 4 }}
    resources:
      {{- toYaml .resources | nindent 6 }}
    securityContext:
      {{- toYaml $root.Values.containerSecurityContext | nindent 6 }}
    {{- $hostMetrics := and (eq .placement "every-node") $root.Values.daemonset.hostMetrics.enabled }}
    {{- if or $values.extraVolumeMounts $hostMetrics }}
    volumeMounts:
      {{- if $hostMetrics }}
      - name: host-proc
        mountPath: /host/proc
        readOnly: true
      - name: host-sys
        mountPath: /host/sys
        readOnly: true
      - name: host-root
        mountPath: /host/root
        readOnly: true
        mountPropagation: HostToContainer
      {{- end }}
      {{- with $values.extraVolumeMounts }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- end }}
{{- if or $values.extraVolumes $hostMetrics }}
volumes:
  {{- if $hostMetrics }}
  - name: host-proc
    hostPath:
      path: /proc
  - name: host-sys
    hostPath:
      path: /sys
  - name: host-root
    hostPath:
      path: /
  {{- end }}
  {{- with $values.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end }}
