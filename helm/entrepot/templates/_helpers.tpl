{{/* Names ------------------------------------------------------------------------------------ */}}

{{- define "entrepot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, at most 63 characters (names of objects and labels). */}}
{{- define "entrepot.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<suffix>", still within 63 characters. */}}
{{- define "entrepot.componentName" -}}
{{- $full := include "entrepot.fullname" .root }}
{{- printf "%s-%s" ($full | trunc (int (sub 62 (len .suffix)))) .suffix | trimSuffix "-" }}
{{- end }}

{{- define "entrepot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "entrepot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "entrepot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "entrepot.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Labels: call with (dict "root" $ "component" "web"). ---------------------------------------- */}}

{{- define "entrepot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "entrepot.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "entrepot.labels" -}}
helm.sh/chart: {{ include "entrepot.chart" .root }}
{{ include "entrepot.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: entrepot
{{- end }}

{{/* Credentials -------------------------------------------------------------------------------- */}}

{{/* The Secret a credential is read from: its existingSecret, else the release's Secret. */}}
{{- define "entrepot.secretName" -}}
{{- .existingSecret | default (include "entrepot.fullname" .root) }}
{{- end }}

{{/* The keys read from the release's own Secret (credentials without an existingSecret), as JSON. */}}
{{- define "entrepot.releaseSecretKeys" -}}
{{- $v := .Values }}
{{- $keys := list }}
{{- if not $v.database.existingSecret }}{{ $keys = append $keys $v.database.key }}{{ end }}
{{- if not $v.redis.existingSecret }}{{ $keys = append $keys $v.redis.key }}{{ end }}
{{- if not $v.secretKey.existingSecret }}{{ $keys = append $keys $v.secretKey.key }}{{ end }}
{{- with $v.s3.credentials }}
{{- if and .enabled (not .existingSecret) }}
{{- $keys = concat $keys (list .accessKeyIdKey .secretAccessKeyKey) }}
{{- end }}
{{- end }}
{{- range $v.upstreamCredentials }}{{ if not .existingSecret }}{{ $keys = append $keys .key }}{{ end }}{{ end }}
{{- $keys | uniq | toJson }}
{{- end }}

{{/* One env entry read from a Secret: (dict "root" $ "name" ENV "existingSecret" S "key" K). */}}
{{- define "entrepot.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "entrepot.secretName" . }}
      key: {{ .key }}
{{- end }}

{{/* Environment variables named by the upstream file that no env entry provides: render fails. */}}
{{- define "entrepot.checkUpstreamCredentials" -}}
{{- if not .Values.extraEnvFrom }}
{{- $provided := list }}
{{- range .Values.upstreamCredentials }}{{ $provided = append $provided .env }}{{ end }}
{{- range .Values.extraEnv }}{{ $provided = append $provided .name }}{{ end }}
{{- range .Values.upstreams }}
{{- $upstream := .name }}
{{- with .username_env }}
{{- if not (has . $provided) }}
{{- fail (printf "upstream %s: username_env %s is not set by upstreamCredentials (or extraEnv)" $upstream .) }}
{{- end }}
{{- end }}
{{- with .password_env }}
{{- if not (has . $provided) }}
{{- fail (printf "upstream %s: password_env %s is not set by upstreamCredentials (or extraEnv)" $upstream .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Environment ---------------------------------------------------------------------------------- */}}

{{/*
The environment of every container: settings as plain values (a change rolls the pods),
credentials from Secrets. ALLOWED_HOSTS gets the pod's own IP (kubelet probes and Prometheus
send it as the Host), in both forms Django compares: 10.1.2.3 and [fd00::1].
*/}}
{{- define "entrepot.env" -}}
{{- $v := .Values -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: ALLOWED_HOSTS
  value: {{ if has "*" $v.mirror.allowedHosts }}"*"{{ else }}{{ printf "%s,$(POD_IP),[$(POD_IP)]" (join "," $v.mirror.allowedHosts) | quote }}{{ end }}
- name: DJANGO_SETTINGS_MODULE
  value: config.settings
- name: MIRROR_CONFIG
  value: /etc/entrepot/upstreams.yaml
- name: LOG_LEVEL
  value: {{ $v.mirror.logLevel | quote }}
- name: MIRROR_CACHE_MAX_BYTES
  value: {{ $v.mirror.cacheMaxBytes | int64 | quote }}
- name: MIRROR_MAX_FILLS
  value: {{ $v.mirror.maxFills | int64 | quote }}
- name: MIRROR_GO_VERIFY
  value: {{ $v.mirror.goVerify | quote }}
- name: MIRROR_TRUSTED_PROXIES
  value: {{ if kindIs "invalid" $v.mirror.trustedProxies }}{{ ternary "1" "0" $v.ingress.enabled | quote }}{{ else }}{{ $v.mirror.trustedProxies | int64 | quote }}{{ end }}
{{- with $v.mirror.rateLimit }}
- name: MIRROR_RATE_LIMIT
  value: {{ . | quote }}
{{- end }}
- name: DATABASE_CONN_MAX_AGE
  value: {{ $v.database.connMaxAge | int64 | quote }}
- name: AWS_STORAGE_BUCKET_NAME
  value: {{ $v.s3.bucket | quote }}
- name: MIRROR_S3_PREFIX
  value: {{ $v.s3.prefix | quote }}
- name: MIRROR_S3_REDIRECT
  value: {{ $v.s3.redirect | toString | quote }}
{{- with $v.s3.endpointUrl }}
- name: AWS_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with $v.s3.region }}
- name: AWS_S3_REGION_NAME
  value: {{ . | quote }}
{{- end }}
{{- range $name, $value := $v.mirror.settings }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{ include "entrepot.secretEnv" (dict "root" . "name" "DATABASE_URL" "existingSecret" $v.database.existingSecret "key" $v.database.key) }}
{{ include "entrepot.secretEnv" (dict "root" . "name" "REDIS_URL" "existingSecret" $v.redis.existingSecret "key" $v.redis.key) }}
{{ include "entrepot.secretEnv" (dict "root" . "name" "SECRET_KEY" "existingSecret" $v.secretKey.existingSecret "key" $v.secretKey.key) }}
{{- with $v.s3.credentials }}
{{- if .enabled }}
{{ include "entrepot.secretEnv" (dict "root" $ "name" "AWS_ACCESS_KEY_ID" "existingSecret" .existingSecret "key" .accessKeyIdKey) }}
{{ include "entrepot.secretEnv" (dict "root" $ "name" "AWS_SECRET_ACCESS_KEY" "existingSecret" .existingSecret "key" .secretAccessKeyKey) }}
{{- end }}
{{- end }}
{{- range $v.upstreamCredentials }}
{{ include "entrepot.secretEnv" (dict "root" $ "name" .env "existingSecret" .existingSecret "key" .key) }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "entrepot.envFrom" -}}
{{- with .Values.extraEnvFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The upstream file (MIRROR_CONFIG), as mirror/config_file.py reads it. */}}
{{- define "entrepot.upstreamsFile" -}}
{{- include "entrepot.checkUpstreamCredentials" . }}
{{- toYaml (dict "upstreams" .Values.upstreams "always_warm" .Values.alwaysWarm) }}
{{- end }}

{{/* Pods ----------------------------------------------------------------------------------------- */}}

{{/* Pod-level fields every workload shares. */}}
{{- define "entrepot.podCommon" -}}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Scheduling fields of a component: (dict "root" $ "component" "web" "values" .Values.web). */}}
{{- define "entrepot.scheduling" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.topologySpreadConstraints }}
{{- $constraints := list }}
{{- range .values.topologySpreadConstraints }}
{{- $constraint := deepCopy . }}
{{- if not $constraint.labelSelector }}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" (include "entrepot.selectorLabels" $ | fromYaml)) }}
{{- end }}
{{- $constraints = append $constraints $constraint }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $constraints | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Waits until no migration is pending, so that a pod never runs on an older schema than its code
(the pre-install/pre-upgrade Job normally has applied them already).
*/}}
{{- define "entrepot.waitForMigrations" -}}
- name: wait-for-migrations
  image: {{ include "entrepot.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - sh
    - -c
    - |
      until python manage.py migrate --check; do
        echo "migrations pending or database unreachable; checking again in {{ .Values.migrations.waitSeconds }}s"
        sleep {{ .Values.migrations.waitSeconds }}
      done
  env:
    {{- include "entrepot.env" . | nindent 4 }}
  {{- with include "entrepot.envFrom" . }}{{ . | nindent 2 }}{{ end }}
  {{- with .Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.migrations.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    {{- include "entrepot.baseMounts" . | nindent 4 }}
{{- end }}

{{/* Writable /tmp and the upstream file, in every container. */}}
{{- define "entrepot.baseMounts" -}}
- name: tmp
  mountPath: /tmp
- name: upstreams
  mountPath: /etc/entrepot
  readOnly: true
{{- end }}

{{/* The volumes behind entrepot.baseMounts; call with (dict "root" $ "configMap" NAME). */}}
{{- define "entrepot.baseVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
- name: upstreams
  configMap:
    name: {{ .configMap }}
{{- end }}

{{/* The fill spool (MIRROR_DATA_DIR/spool): an emptyDir, or the component's spoolVolume. */}}
{{- define "entrepot.spoolVolume" -}}
- name: spool
{{- if .spoolVolume }}
  {{- toYaml .spoolVolume | nindent 2 }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .spoolSizeLimit }}
{{- end }}
{{- end }}
