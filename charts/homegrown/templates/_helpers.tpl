{{/* Chart name, truncated to a DNS label. */}}
{{- define "homegrown.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* `<release>-<chart>` (or the release alone when it already holds the chart name), truncated to 63 characters. */}}
{{- define "homegrown.fullname" -}}
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

{{/* Name of one component's resources: `<fullname>-<component>`; call with (list $ "mlflow"). */}}
{{- define "homegrown.componentName" -}}
{{- $ctx := index . 0 -}}
{{- printf "%s-%s" (include "homegrown.fullname" $ctx | trunc 50 | trimSuffix "-") (index . 1) -}}
{{- end -}}

{{/* Labels of every resource of one component; call with (list $ "mlflow"). */}}
{{- define "homegrown.labels" -}}
{{- $ctx := index . 0 -}}
helm.sh/chart: {{ printf "%s-%s" $ctx.Chart.Name $ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
{{ include "homegrown.selectorLabels" . }}
{{- end -}}

{{/* Selector labels of one component; call with (list $ "mlflow"). */}}
{{- define "homegrown.selectorLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ include "homegrown.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/*
An image reference from `repository`, a tag and an optional `digest`: `repository:tag`,
`repository:tag@sha256:…` (the runtime pulls by digest; the tag is for people), or the
repository as is when it already holds `@sha256:…`. Call with (list REPOSITORY TAG DIGEST).
*/}}
{{- define "homegrown.imageRef" -}}
{{- $repository := index . 0 -}}
{{- $tag := index . 1 -}}
{{- $digest := index . 2 -}}
{{- if contains "@" $repository -}}
{{- $repository -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}{{- with $digest }}@{{ . }}{{ end -}}
{{- end -}}
{{- end -}}

{{/* The reference of an image value (repository, tag, digest). */}}
{{- define "homegrown.image" -}}
{{- include "homegrown.imageRef" (list .repository .tag (.digest | default "")) -}}
{{- end -}}

{{/* A homegrown image (steps, trainer): the tag defaults to the chart's appVersion; call with (list $ .Values.steps.image). */}}
{{- define "homegrown.stepsImage" -}}
{{- $image := index . 1 -}}
{{- include "homegrown.imageRef" (list $image.repository (default (index . 0).Chart.AppVersion $image.tag) ($image.digest | default "")) -}}
{{- end -}}

{{/* Pod security context of the restricted Pod Security Standard; ids from a podSecurityContext value. */}}
{{- define "homegrown.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser }}
runAsGroup: {{ .runAsGroup }}
fsGroup: {{ .fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security context of the restricted Pod Security Standard, with a read-only root filesystem. */}}
{{- define "homegrown.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Placement and pull secrets shared by the platform's pods. */}}
{{- define "homegrown.podPlacement" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
A generated credential that survives upgrades: the value already in the release's Secret when
there is one (`lookup`), else a new random one. Call with (dict "ctx" $ "secret" NAME "key" KEY).
*/}}
{{- define "homegrown.generatedValue" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}

{{/* Fully qualified in-cluster DNS name of a Service; call with (list $ NAME). */}}
{{- define "homegrown.serviceHost" -}}
{{- $ctx := index . 0 -}}
{{- printf "%s.%s.svc.%s" (index . 1) $ctx.Release.Namespace $ctx.Values.clusterDomain -}}
{{- end -}}

{{/* ---- MLflow ---- */}}

{{/* The tracking URI steps use: the Service's in-cluster URL. */}}
{{- define "homegrown.mlflow.url" -}}
{{- printf "http://%s:%v" (include "homegrown.serviceHost" (list . (include "homegrown.componentName" (list . "mlflow")))) .Values.mlflow.port -}}
{{- end -}}

{{/* Secret with the admin credentials and the Flask secret key. */}}
{{- define "homegrown.mlflow.authSecret" -}}
{{- .Values.mlflow.auth.existingSecret | default (include "homegrown.componentName" (list . "mlflow")) -}}
{{- end -}}

{{/* Secret with the pipeline steps' own MLflow login (mlflow.auth.stepsUser). */}}
{{- define "homegrown.mlflow.stepsSecret" -}}
{{- .Values.mlflow.auth.stepsUser.existingSecret | default (printf "%s-steps" (include "homegrown.componentName" (list . "mlflow"))) -}}
{{- end -}}

{{/* Host headers the server accepts (--allowed-hosts): its Service names, the ingress host, then mlflow.allowedHosts. */}}
{{- define "homegrown.mlflow.allowedHosts" -}}
{{- $svc := include "homegrown.componentName" (list . "mlflow") -}}
{{- $hosts := list -}}
{{- range (list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (include "homegrown.serviceHost" (list . $svc))) -}}
{{- $hosts = concat $hosts (list . (printf "%s:*" .)) -}}
{{- end -}}
{{- if .Values.mlflow.ingress.enabled -}}
{{- $hosts = concat $hosts (list .Values.mlflow.ingress.host (printf "%s:*" .Values.mlflow.ingress.host)) -}}
{{- end -}}
{{- concat $hosts .Values.mlflow.allowedHosts | uniq | join "," -}}
{{- end -}}

{{/* ---- the tracking database ---- */}}

{{/* SQLAlchemy URI without a password: libpq takes it from PGPASSWORD. */}}
{{- define "homegrown.database.uri" -}}
{{- if .Values.postgresql.enabled -}}
{{- $host := include "homegrown.serviceHost" (list . (include "homegrown.componentName" (list . "postgres"))) -}}
{{- printf "postgresql+psycopg2://%s@%s:5432/%s" .Values.postgresql.user $host .Values.postgresql.database -}}
{{- else -}}
{{- $db := .Values.database.external -}}
{{- printf "postgresql+psycopg2://%s@%s:%v/%s" $db.user $db.host $db.port $db.database -}}
{{- with $db.sslMode }}?sslmode={{ . }}{{ end -}}
{{- end -}}
{{- end -}}

{{/* Secret and key of the database password; call with the root context, yields "name key". */}}
{{- define "homegrown.database.passwordRef" -}}
{{- if .Values.postgresql.enabled -}}
name: {{ .Values.postgresql.existingSecret | default (include "homegrown.componentName" (list . "postgres")) }}
key: password
{{- else -}}
name: {{ .Values.database.external.existingSecret }}
key: {{ .Values.database.external.passwordKey }}
{{- end -}}
{{- end -}}

{{/* ---- S3 ---- */}}

{{/* Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; empty when the pod's own identity is used. */}}
{{- define "homegrown.s3.secret" -}}
{{- if .Values.seaweedfs.enabled -}}
{{- include "homegrown.componentName" (list . "seaweedfs") -}}
{{- else -}}
{{- .Values.artifacts.s3.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* Custom S3 endpoint (bundled SeaweedFS or artifacts.s3.endpoint); empty for AWS. */}}
{{- define "homegrown.s3.customEndpoint" -}}
{{- if .Values.seaweedfs.enabled -}}
{{- printf "http://%s:8333" (include "homegrown.serviceHost" (list . (include "homegrown.componentName" (list . "seaweedfs")))) -}}
{{- else -}}
{{- .Values.artifacts.s3.endpoint -}}
{{- end -}}
{{- end -}}

{{/* The S3 endpoint steps use: the custom one, else AWS's regional endpoint. */}}
{{- define "homegrown.s3.endpoint" -}}
{{- include "homegrown.s3.customEndpoint" . | default (printf "https://s3.%s.amazonaws.com" .Values.artifacts.s3.region) -}}
{{- end -}}

{{- define "homegrown.s3.artifactsDestination" -}}
{{- $s3 := .Values.artifacts.s3 -}}
{{- if $s3.prefix }}{{ printf "s3://%s/%s" $s3.bucket $s3.prefix }}{{ else }}{{ printf "s3://%s" $s3.bucket }}{{ end -}}
{{- end -}}

{{/* ---- network policies ---- */}}

{{/* "true" when NetworkPolicies restrict egress too (mlflow.networkPolicy.egress.enabled), else "". */}}
{{- define "homegrown.egress" -}}
{{- if and .Values.mlflow.networkPolicy.enabled .Values.mlflow.networkPolicy.egress.enabled }}true{{ end -}}
{{- end -}}

{{/* policyTypes of a pod whose egress is restricted when egress policies are on. */}}
{{- define "homegrown.policyTypes" -}}
{{- if include "homegrown.egress" . }}[Ingress, Egress]{{ else }}[Ingress]{{ end -}}
{{- end -}}

{{/* Egress rule: DNS lookups, to whichever resolver the pod has (kube-dns, NodeLocal DNSCache). */}}
{{- define "homegrown.egress.dns" -}}
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end -}}

{{/* `to` peers of something outside this release: any pod of the cluster, or egress.externalCIDRs. */}}
{{- define "homegrown.egress.external" -}}
- namespaceSelector: {}
{{- range .Values.mlflow.networkPolicy.egress.externalCIDRs }}
- ipBlock: {cidr: {{ . | quote }}}
{{- end }}
{{- end -}}

{{/* TCP port of a URL: explicit, else 443 for https and 80 for http. */}}
{{- define "homegrown.urlPort" -}}
{{- $url := urlParse . -}}
{{- $hostPort := splitList ":" $url.host -}}
{{- if gt (len $hostPort) 1 }}{{ last $hostPort }}{{ else if eq $url.scheme "https" }}443{{ else }}80{{ end -}}
{{- end -}}

{{/* What MLflow may reach: DNS, its database, its S3 (bundled pods, or their ports outside), extraRules. */}}
{{- define "homegrown.mlflow.egress" -}}
{{ include "homegrown.egress.dns" . }}
{{- if .Values.postgresql.enabled }}
- to:
    - podSelector:
        matchLabels: {{- include "homegrown.selectorLabels" (list . "postgres") | nindent 10 }}
  ports:
    - {port: 5432, protocol: TCP}
{{- else }}
- to: {{- include "homegrown.egress.external" . | nindent 4 }}
  ports:
    - {port: {{ .Values.database.external.port }}, protocol: TCP}
{{- end }}
{{- if .Values.seaweedfs.enabled }}
- to:
    - podSelector:
        matchLabels: {{- include "homegrown.selectorLabels" (list . "seaweedfs") | nindent 10 }}
  ports:
    - {port: 8333, protocol: TCP}
{{- else }}
- to: {{- include "homegrown.egress.external" . | nindent 4 }}
  ports:
    - {port: {{ include "homegrown.urlPort" (.Values.artifacts.s3.endpoint | default "https://s3.amazonaws.com") }}, protocol: TCP}
{{- end }}
{{- with .Values.mlflow.networkPolicy.egress.extraRules }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ---- steps ---- */}}

{{/*
The `cluster:` section of a run config wiring a pipeline run to this release (ClusterConfig in
pipelines/config.py): images, the steps ConfigMap, the ServiceAccount and namespace of TrainJobs,
training placement, and the Secrets steps need as env.
*/}}
{{- define "homegrown.steps.cluster" -}}
{{- $secrets := list -}}
{{- if .Values.mlflow.auth.enabled -}}
{{- $secrets = append $secrets (dict "secret_name" (include "homegrown.mlflow.stepsSecret" .) "keys" (dict "MLFLOW_TRACKING_USERNAME" "MLFLOW_TRACKING_USERNAME" "MLFLOW_TRACKING_PASSWORD" "MLFLOW_TRACKING_PASSWORD")) -}}
{{- end -}}
{{- with include "homegrown.s3.secret" . -}}
{{- $secrets = append $secrets (dict "secret_name" . "keys" (dict "AWS_ACCESS_KEY_ID" "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" "AWS_SECRET_ACCESS_KEY")) -}}
{{- end -}}
image: {{ include "homegrown.stepsImage" (list . .Values.steps.image) }}
{{- if .Values.steps.trainImage.repository }}
train_image: {{ include "homegrown.stepsImage" (list . .Values.steps.trainImage) }}
{{- end }}
config_map: {{ .Values.steps.configMapName }}
namespace: {{ .Release.Namespace }}
service_account: {{ .Values.steps.serviceAccountName }}
{{- range $key, $value := dict "tolerations" .Values.training.tolerations "node_selector" .Values.training.nodeSelector "secrets" $secrets }}
{{ $key }}:{{ if $value }}{{ toYaml $value | nindent 2 }}{{ else }} {{ toJson $value }}{{ end }}
{{- end }}
{{- end -}}

{{/* Values no schema can check (they depend on each other); fails with what to change. */}}
{{- define "homegrown.validate" -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.database.external.host) -}}
{{- fail "database.external.host is required when postgresql.enabled=false: the host of your Postgres (or set postgresql.enabled=true for the bundled one)" -}}
{{- end -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.database.external.existingSecret) -}}
{{- fail "database.external.existingSecret is required when postgresql.enabled=false: the name of a Secret holding the password of database.external.user (under database.external.passwordKey)" -}}
{{- end -}}
{{- if and .Values.seaweedfs.enabled (or .Values.artifacts.s3.endpoint .Values.artifacts.s3.existingSecret) -}}
{{- fail "seaweedfs.enabled=true brings its own S3 endpoint and keys: leave artifacts.s3.endpoint and artifacts.s3.existingSecret empty, or turn seaweedfs off" -}}
{{- end -}}
{{- if and .Values.mlflow.auth.enabled (eq .Values.mlflow.auth.stepsUser.username .Values.mlflow.auth.adminUsername) -}}
{{- fail "mlflow.auth.stepsUser.username must differ from mlflow.auth.adminUsername: the steps get a user of their own, not the admin" -}}
{{- end -}}
{{- if and .Values.mlflow.ingress.enabled (not .Values.mlflow.ingress.host) -}}
{{- fail "mlflow.ingress.host is required when mlflow.ingress.enabled=true, e.g. mlflow.example.com" -}}
{{- end -}}
{{- if and .Values.mlflow.metrics.serviceMonitor.enabled (not .Values.mlflow.metrics.enabled) -}}
{{- fail "mlflow.metrics.serviceMonitor.enabled needs mlflow.metrics.enabled=true (the server only serves /metrics then)" -}}
{{- end -}}
{{- if and .Values.pipelineUpload.enabled (not .Values.pipelineUpload.runConfig) -}}
{{- fail "pipelineUpload.runConfig is required when pipelineUpload.enabled=true: the run config to compile, as in pipelines/configs/gpu.yaml (at least `corpus`)" -}}
{{- end -}}
{{- end -}}
