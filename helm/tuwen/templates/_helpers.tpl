{{/* Names, labels and the few derived values every template shares. */}}

{{- define "tuwen.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tuwen.fullname" -}}
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

{{- define "tuwen.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tuwen.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tuwen.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tuwen.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: api
{{- end -}}

{{- define "tuwen.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tuwen.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tuwen.image" -}}
{{- $tag := default (printf "%s-%s" .Chart.AppVersion .Values.image.flavor) .Values.image.tag -}}
{{- if .Values.image.registry -}}
{{- printf "%s/%s:%s" .Values.image.registry .Values.image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "tuwen.secretName" -}}
{{- default (include "tuwen.fullname" .) .Values.auth.existingSecret -}}
{{- end -}}

{{/* Milvus: the configured URI, else the bundled Milvus chart's Service, else "" (a local Milvus in dataDir, run by the service). */}}
{{- define "tuwen.milvusUri" -}}
{{- if .Values.config.milvusUri -}}
{{- .Values.config.milvusUri -}}
{{- else if .Values.milvus.enabled -}}
{{- $svc := ternary .Release.Name (printf "%s-milvus" .Release.Name) (contains "milvus" .Release.Name) -}}
{{- printf "http://%s:19530" ($svc | trunc 63 | trimSuffix "-") -}}
{{- end -}}
{{- end -}}

{{/* One env entry per setting: TUWEN_ + the key in SCREAMING_SNAKE_CASE; maps as JSON, lists joined by commas. */}}
{{- define "tuwen.configEnv" -}}
{{- range $key, $value := .Values.config }}
{{- if and (ne $key "milvusUri") (not (kindIs "invalid" $value)) }}
{{ printf "TUWEN_%s" ($key | snakecase | upper) }}: {{ ternary (toJson $value) (ternary (join "," $value) (toString $value) (kindIs "slice" $value)) (kindIs "map" $value) | quote }}
{{- end }}
{{- end }}
TUWEN_MILVUS_URI: {{ include "tuwen.milvusUri" . | quote }}
{{- end -}}

{{/* Refuse combinations that would deploy something broken or open. */}}
{{- define "tuwen.validate" -}}
{{- $local := not (include "tuwen.milvusUri" .) -}}
{{- if and $local (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) -}}
{{- fail "A local Milvus (no config.milvusUri and milvus.enabled=false) lives in one pod's dataDir: set replicaCount=1 and autoscaling.enabled=false, or point config.milvusUri at a Milvus server" -}}
{{- end -}}
{{- if and (not .Values.auth.existingSecret) (not .Values.auth.apiKeys) (not .Values.auth.allowAnonymous) -}}
{{- fail "No API keys: set auth.apiKeys (key:tenant,...) or auth.existingSecret, or auth.allowAnonymous=true for an open service" -}}
{{- end -}}
{{- if ne .Values.gpu.enabled (eq .Values.image.flavor "gpu") -}}
{{- fail "gpu.enabled and image.flavor disagree: use gpu.enabled=true with image.flavor=gpu, or false with cpu" -}}
{{- end -}}
{{- if and (eq .Values.bundle.source "initContainer") (not .Values.bundle.initContainer.image) -}}
{{- fail "bundle.source=initContainer needs bundle.initContainer.image (and its command)" -}}
{{- end -}}
{{- end -}}

{{/* A PVC-or-emptyDir volume. Args: dict "name" "persistence" "claim" "sizeLimit". */}}
{{- define "tuwen.volume" -}}
- name: {{ .name }}
{{- if .persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ default .claim .persistence.existingClaim }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .sizeLimit }}
{{- end }}
{{- end -}}
