{{/* The chart name, overridable with nameOverride. */}}
{{- define "ci-executor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name; a release already named after the chart is not repeated. */}}
{{- define "ci-executor.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "ci-executor.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ci-executor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ci-executor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The API pods only: the migration hook's pods must not become Service endpoints. */}}
{{- define "ci-executor.serverSelectorLabels" -}}
{{ include "ci-executor.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "ci-executor.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ci-executor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "ci-executor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ci-executor.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ci-executor.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Where the runner creates build Jobs and their pods; the Role lives there too. Builds run
untrusted code, so by default they get a namespace of their own, away from the release's Secret. */}}
{{- define "ci-executor.buildNamespace" -}}
{{- .Values.config.k8sNamespace | default .Values.builds.namespace | default (printf "%s-builds" .Release.Namespace) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Objects of the build namespace, named after the release. */}}
{{- define "ci-executor.buildsName" -}}
{{- printf "%s-builds" (include "ci-executor.fullname" . | trunc 56 | trimSuffix "-") -}}
{{- end -}}

{{/* The build pods, as the runner labels them. */}}
{{- define "ci-executor.buildPodSelector" -}}
matchExpressions:
  - key: ci-executor/build-id
    operator: Exists
{{- end -}}

{{/* The marker secret: the value given, else the one already installed, else a new random one
(so replicas share it and it survives upgrades without anyone choosing it). */}}
{{- define "ci-executor.markerSecret" -}}
{{- $marker := .Values.secret.k8sMarkerSecret -}}
{{- if not $marker -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "ci-executor.secretName" .) -}}
{{- if and $existing $existing.data -}}
{{- $marker = index $existing.data "K8S_MARKER_SECRET" | default "" | b64dec -}}
{{- end -}}
{{- end -}}
{{- $marker | default (randAlphaNum 48) -}}
{{- end -}}

{{/* The migration hook's Job (and its Secret): Job names feed a 63-character pod label. */}}
{{- define "ci-executor.migrationName" -}}
{{- printf "%s-migrate" (include "ci-executor.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{- define "ci-executor.secretName" -}}
{{- default (include "ci-executor.fullname" .) .Values.secret.existingSecret -}}
{{- end -}}

{{/* Settings that belong in the Secret; extraConfig must not carry them into the ConfigMap. */}}
{{- define "ci-executor.secretKeys" -}}
DATABASE_URL QUEUE_URL API_TOKENS K8S_MARKER_SECRET
{{- end -}}

{{/* Settings the chart itself writes into the ConfigMap. */}}
{{- define "ci-executor.chartKeys" -}}
RUNNER HOST PORT WORKSPACE_ROOT PIPELINE_SERVICE_URL K8S_NAMESPACE K8S_DEFAULT_IMAGE K8S_TTL_SECONDS_AFTER_FINISHED MAX_CONCURRENT_BUILDS LEASE_SECONDS SHUTDOWN_GRACE_SECONDS LOG_LEVEL ACTIONS_PUBLIC_URL
{{- end -}}

{{/* ConfigMap data, shared with the Deployment's checksum so a config change rolls the pods. */}}
{{- define "ci-executor.configData" -}}
RUNNER: "kubernetes"
HOST: "0.0.0.0"
PORT: {{ .Values.service.port | quote }}
WORKSPACE_ROOT: {{ .Values.config.workspaceRoot | quote }}
PIPELINE_SERVICE_URL: {{ .Values.config.pipelineServiceUrl | quote }}
K8S_NAMESPACE: {{ include "ci-executor.buildNamespace" . | quote }}
K8S_DEFAULT_IMAGE: {{ .Values.config.k8sDefaultImage | quote }}
K8S_TTL_SECONDS_AFTER_FINISHED: {{ .Values.config.k8sTtlSecondsAfterFinished | quote }}
MAX_CONCURRENT_BUILDS: {{ .Values.config.maxConcurrentBuilds | quote }}
LEASE_SECONDS: {{ .Values.config.leaseSeconds | quote }}
SHUTDOWN_GRACE_SECONDS: {{ .Values.config.shutdownGraceSeconds | quote }}
LOG_LEVEL: {{ .Values.config.logLevel | quote }}
{{- /* Build pods call the artifact and cache API here: by default the Service's in-cluster name. */}}
ACTIONS_PUBLIC_URL: {{ .Values.config.actionsPublicUrl | default (printf "http://%s.%s.svc:%v" (include "ci-executor.fullname" .) .Release.Namespace .Values.service.port) | quote }}
{{- $secretKeys := splitList " " (include "ci-executor.secretKeys" .) }}
{{- $chartKeys := splitList " " (include "ci-executor.chartKeys" .) }}
{{- range $key, $value := .Values.extraConfig }}
{{- if has $key $secretKeys }}
{{- fail (printf "extraConfig.%s is a secret setting: set it under secret (or in secret.existingSecret)" $key) }}
{{- end }}
{{- if has $key $chartKeys }}
{{- fail (printf "extraConfig.%s is set by the chart: use the matching config or service value" $key) }}
{{- end }}
{{ $key }}: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Secret data (base64), shared with the Deployment's checksum. */}}
{{- define "ci-executor.secretData" -}}
DATABASE_URL: {{ required "secret.databaseUrl is required unless secret.existingSecret is set" .Values.secret.databaseUrl | b64enc | quote }}
QUEUE_URL: {{ required "secret.queueUrl is required unless secret.existingSecret is set" .Values.secret.queueUrl | b64enc | quote }}
API_TOKENS: {{ .Values.secret.apiTokens | b64enc | quote }}
K8S_MARKER_SECRET: {{ include "ci-executor.markerSecret" . | b64enc | quote }}
{{- end -}}
