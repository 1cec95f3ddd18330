{{/* Names ----------------------------------------------------------------------------- */}}

{{- define "aegis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name prefix, ≤ 42 characters so "<prefix>-postgresql-headless" etc. fit 63. */}}
{{- define "aegis.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 42 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 42 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 42 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "aegis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aegis.operator.fullname" -}}{{ include "aegis.fullname" . }}-operator{{- end -}}
{{- define "aegis.injector.fullname" -}}{{ include "aegis.fullname" . }}-injector{{- end -}}
{{- define "aegis.postgresql.fullname" -}}{{ include "aegis.fullname" . }}-postgresql{{- end -}}
{{- define "aegis.pgbouncer.fullname" -}}{{ include "aegis.fullname" . }}-pgbouncer{{- end -}}
{{- define "aegis.migrations.fullname" -}}{{ include "aegis.fullname" . }}-migrate{{- end -}}

{{- define "aegis.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "aegis.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "aegis.injector.serviceAccountName" -}}
{{- if .Values.injector.serviceAccount.create -}}
{{- default (include "aegis.injector.fullname" .) .Values.injector.serviceAccount.name -}}
{{- else -}}
{{- required "injector.serviceAccount.name is required when injector.serviceAccount.create is false" .Values.injector.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels ---------------------------------------------------------------------------- */}}

{{- define "aegis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aegis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "aegis.labels" -}}
helm.sh/chart: {{ include "aegis.chart" . }}
{{ include "aegis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aegis
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one component: include with (dict "root" $ "component" "operator"). */}}
{{- define "aegis.componentLabels" -}}
{{ include "aegis.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "aegis.componentSelectorLabels" -}}
{{ include "aegis.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Values used in several places -------------------------------------------------------- */}}

{{- define "aegis.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "aegis.sidecarImage" -}}
{{- default (include "aegis.image" .) .Values.injector.sidecar.image -}}
{{- end -}}

{{/* The Secret holding the ledger DSN, and its key. */}}
{{- define "aegis.ledger.secretName" -}}
{{- default (printf "%s-ledger" (include "aegis.fullname" .)) .Values.ledger.existingSecret -}}
{{- end -}}

{{- define "aegis.ledger.envVar" -}}
- name: AEGIS_LEDGER_DSN
  valueFrom:
    secretKeyRef:
      name: {{ include "aegis.ledger.secretName" . }}
      key: {{ .Values.ledger.secretKey }}
{{- end -}}

{{/* The operator's two ledger roles: read-only (status, analysis) and control (limits,
tenant roles); a key the Secret lacks leaves that part off. Never the owner's DSN. */}}
{{- define "aegis.ledger.operatorEnv" -}}
- name: AEGIS_LEDGER_DSN
  valueFrom:
    secretKeyRef:
      name: {{ include "aegis.ledger.secretName" . }}
      key: {{ .Values.ledger.readerSecretKey }}
      optional: true
- name: AEGIS_LEDGER_CONTROL_DSN
  valueFrom:
    secretKeyRef:
      name: {{ include "aegis.ledger.secretName" . }}
      key: {{ .Values.ledger.controlSecretKey }}
      optional: true
{{- with include "aegis.ledger.tenantUrl" . }}
- name: AEGIS_LEDGER_TENANT_URL
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Where sidecars reach the ledger: ledger.tenants.url, else the chart's PgBouncer. */}}
{{- define "aegis.ledger.tenantUrl" -}}
{{- if .Values.ledger.tenants.url -}}
{{- .Values.ledger.tenants.url -}}
{{- else if .Values.pgbouncer.enabled -}}
{{- $database := .Values.pgbouncer.database | default .Values.postgresql.database -}}
{{- printf "postgresql://%s.%s.svc:%d/%s" (include "aegis.pgbouncer.fullname" .) .Release.Namespace (int .Values.pgbouncer.port) $database -}}
{{- end -}}
{{- end -}}

{{/* The roles the migration job grants: the chart's own with postgresql.enabled. */}}
{{- define "aegis.ledger.grantArgs" -}}
{{- $roles := .Values.ledger.roles }}
{{- $reader := $roles.reader }}
{{- $control := $roles.control }}
{{- if .Values.postgresql.enabled }}
{{- $reader = default "aegis_reader" $reader }}
{{- $control = default "aegis_control" $control }}
{{- end }}
{{- with $control }}, --grant-control, {{ . }}{{ end }}
{{- with $reader }}, --grant-reader, {{ . }}{{ end }}
{{- end -}}

{{/* The namespaces the operator serves when not cluster-wide (JSON list). */}}
{{- define "aegis.operator.namespaces" -}}
{{- toJson (.Values.operator.watchNamespaces | default (list .Release.Namespace)) -}}
{{- end -}}

{{- define "aegis.webhookName" -}}
{{- include "aegis.injector.fullname" . -}}
{{- end -}}

{{- define "aegis.injector.tlsSecretName" -}}
{{- include "aegis.injector.fullname" . -}}-tls
{{- end -}}

{{- define "aegis.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}


{{- define "aegis.injector.certManagerSecretName" -}}
{{- include "aegis.injector.fullname" . -}}-cert
{{- end -}}

{{/* The standard OTEL_* variables of the tracing values, as a JSON object. */}}
{{- define "aegis.tracing.vars" -}}
{{- $t := .Values.tracing -}}
{{- if not $t.endpoint -}}
{{- fail "tracing.enabled needs tracing.endpoint (the OTLP/HTTP URL of a collector)" -}}
{{- end -}}
{{- $vars := dict "OTEL_TRACES_EXPORTER" "otlp" "OTEL_EXPORTER_OTLP_PROTOCOL" "http/protobuf" "OTEL_EXPORTER_OTLP_ENDPOINT" $t.endpoint "OTEL_TRACES_SAMPLER" $t.sampler -}}
{{- with $t.samplerArg }}{{- $_ := set $vars "OTEL_TRACES_SAMPLER_ARG" . -}}{{- end -}}
{{- range $name, $value := $t.extraEnv }}{{- $_ := set $vars $name (toString $value) -}}{{- end -}}
{{- toJson $vars -}}
{{- end -}}
