{{/*
berth.config renders berth's config file (pkg/config) from the values.
The pod's environment completes it: BERTH_PEERS_BIND, BERTH_PEERS_ADVERTISE
and BERTH_PEERS_NODE_NAME come from the pod's IP and node (daemonset.yaml).
*/}}
{{- define "berth.config" -}}
{{- $v := .Values -}}
{{- $listen := dict "addr" (printf ":%d" (int $v.http.port)) -}}
{{- if $v.tls.enabled -}}
{{- $_ := set $listen "tls" (dict "addr" (printf ":%d" (int $v.tls.port)) "certFile" (printf "%s/tls.crt" (include "berth.tlsDir" .)) "keyFile" (printf "%s/tls.key" (include "berth.tlsDir" .))) -}}
{{- end -}}
{{- $cache := dict "dir" (include "berth.cacheDir" .) "maxSize" (toString $v.cache.maxSize) "highWatermark" $v.cache.highWatermark "lowWatermark" $v.cache.lowWatermark -}}
{{- $regs := list -}}
{{- range $v.registries -}}
{{- $r := omit . "password" "existingSecret" -}}
{{- if or .password .existingSecret -}}
{{- $_ := set $r "passwordFile" (printf "%s/registries/%s/password" (include "berth.secretsDir" $) (include "berth.registryKey" .name)) -}}
{{- end -}}
{{- $regs = append $regs $r -}}
{{- end -}}
{{- $c := dict "listen" $listen "admin" (dict "addr" (printf ":%d" (int $v.admin.port))) "cache" $cache "defaultRegistry" $v.defaultRegistry "registries" $regs "log" (deepCopy $v.log) "metrics" (deepCopy $v.metrics) "prefetch" (deepCopy $v.prefetch) -}}
{{- $auth := dict "realm" $v.auth.realm -}}
{{- if $v.auth.groups -}}{{- $_ := set $auth "groups" (deepCopy $v.auth.groups) -}}{{- end -}}
{{- if include "berth.authHtpasswd" . -}}{{- $_ := set $auth "htpasswd" (printf "%s/auth/htpasswd" (include "berth.secretsDir" .)) -}}{{- end -}}
{{- if include "berth.authTokens" . -}}{{- $_ := set $auth "tokens" (printf "%s/auth/tokens" (include "berth.secretsDir" .)) -}}{{- end -}}
{{- $_ := set $c "auth" $auth -}}
{{- if $v.peers.enabled -}}
{{- $join := printf "%s.%s.svc.%s:%d" (include "berth.peersService" .) .Release.Namespace $v.peers.clusterDomain (int $v.peers.port) -}}
{{- $_ := set $c "peers" (dict "join" (list $join) "secretFile" (printf "%s/gossip-key" (include "berth.secretsDir" .)) "timeout" $v.peers.timeout "askNext" $v.peers.askNext "fanout" $v.peers.fanout "stripeSize" $v.peers.stripeSize) -}}
{{- end -}}
{{- $c = mergeOverwrite $c (deepCopy $v.config) -}}
{{- toYaml $c -}}
{{- end -}}
