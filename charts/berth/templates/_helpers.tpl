{{/* Chart name, truncated to a DNS label. */}}
{{- define "berth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's objects. */}}
{{- define "berth.fullname" -}}
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

{{/* Name of the headless gossip Service (also the metrics Service). */}}
{{- define "berth.peersService" -}}
{{- printf "%s-peers" (include "berth.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "berth.selectorLabels" -}}
app.kubernetes.io/name: {{ include "berth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "berth.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "berth.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: registry-mirror
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "berth.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "berth.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "berth.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Where the pod sees its files. */}}
{{- define "berth.configDir" -}}/etc/berth{{- end -}}
{{- define "berth.secretsDir" -}}/etc/berth/secrets{{- end -}}
{{- define "berth.tlsDir" -}}/etc/berth/tls{{- end -}}
{{- define "berth.cacheDir" -}}/var/lib/berth{{- end -}}

{{/* A registry name as a file and Secret key name: 10.0.0.5:5000 -> 10.0.0.5_5000. */}}
{{- define "berth.registryKey" -}}
{{- regexReplaceAll "[^a-zA-Z0-9.-]" . "_" -}}
{{- end -}}

{{/* The gossip key Secret: the chart's own unless peers.existingSecret. */}}
{{- define "berth.gossipSecretName" -}}
{{- default (include "berth.fullname" .) .Values.peers.existingSecret -}}
{{- end -}}
{{- define "berth.gossipSecretKey" -}}
{{- if .Values.peers.existingSecret -}}{{ .Values.peers.existingSecretKey }}{{- else -}}gossip-key{{- end -}}
{{- end -}}

{{/*
The gossip key, base64: the value given, else the one already in the
release's Secret (so upgrades keep it), else a new random one, unless
peers.generateKey is false: then the render fails, as it must under
helm template (GitOps), where there is no Secret to look up and every render
would make a new key.
*/}}
{{- define "berth.gossipKeyB64" -}}
{{- if .Values.peers.gossipKey -}}
{{- .Values.peers.gossipKey | b64enc -}}
{{- else -}}
{{- $old := lookup "v1" "Secret" .Release.Namespace (include "berth.fullname" .) -}}
{{- if and $old $old.data (hasKey $old.data "gossip-key") -}}
{{- index $old.data "gossip-key" -}}
{{- else if .Values.peers.generateKey -}}
{{- randAlphaNum 48 | b64enc -}}
{{- else -}}
{{- fail (printf "peers: no gossip key: set peers.existingSecret to a Secret you manage (e.g. kubectl -n %s create secret generic berth-gossip --from-literal=gossip-key=$(head -c 32 /dev/urandom | base64)), or peers.gossipKey; peers.generateKey=false refuses to make a random key, which helm template would make anew on every render" .Release.Namespace) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Validate values that would otherwise render a broken pod. */}}
{{- define "berth.validate" -}}
{{- if and (eq .Values.cache.type "emptyDir") (hasSuffix "%" (toString .Values.cache.maxSize)) -}}
{{- fail "cache.maxSize: a percentage cannot size an emptyDir; give a size such as 20GiB" -}}
{{- end -}}
{{- if not (has .Values.cache.type (list "hostPath" "emptyDir")) -}}
{{- fail (printf "cache.type: want hostPath or emptyDir, got %q" .Values.cache.type) -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) -}}
{{- fail "tls.secretName: required when tls.enabled" -}}
{{- end -}}
{{- if eq (int .Values.admin.port) (int .Values.http.port) -}}
{{- fail "admin.port: must differ from http.port" -}}
{{- end -}}
{{- if and .Values.auth.existingSecret (or .Values.auth.htpasswd .Values.auth.tokens) -}}
{{- fail "auth: set htpasswd and tokens, or existingSecret, not both" -}}
{{- end -}}
{{- range .Values.registries -}}
{{- if and .password .existingSecret -}}
{{- fail (printf "registries %s: set password or existingSecret, not both" .name) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* berth.authHtpasswd and berth.authTokens are non-empty when that client
credential file is configured, from the values or an existing Secret. */}}
{{- define "berth.authHtpasswd" -}}
{{- if or .Values.auth.htpasswd (and .Values.auth.existingSecret .Values.auth.existingSecretHtpasswdKey) -}}yes{{- end -}}
{{- end -}}
{{- define "berth.authTokens" -}}
{{- if or .Values.auth.tokens (and .Values.auth.existingSecret .Values.auth.existingSecretTokensKey) -}}yes{{- end -}}
{{- end -}}

{{/* The containerd mirror URL the hosts.toml files point at. */}}
{{- define "berth.mirrorURL" -}}
{{- $h := .Values.containerd.hostsToml -}}
{{- if $h.mirrorURL -}}
{{- $h.mirrorURL -}}
{{- else if .Values.hostNetwork -}}
{{- printf "http://127.0.0.1:%d" (int .Values.http.port) -}}
{{- else if .Values.http.hostPort.enabled -}}
{{- /* brackets: an IPv6 node address needs them; berth hosts-toml drops them around an IPv4 one */ -}}
{{- printf "http://[$(NODE_IP)]:%d" (int .Values.http.hostPort.port) -}}
{{- else -}}
{{- fail "containerd.hostsToml: containerd cannot reach berth without hostNetwork or http.hostPort.enabled; set containerd.hostsToml.mirrorURL" -}}
{{- end -}}
{{- end -}}
