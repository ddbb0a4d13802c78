{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "authgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-name prefix, unless the release name already contains the chart name. */}}
{{- define "authgate.fullname" -}}
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

{{- define "authgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "authgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "authgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "authgate.labels" -}}
helm.sh/chart: {{ include "authgate.chart" . }}
{{ include "authgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "authgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "authgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding `tokens` and `htpasswd`. */}}
{{- define "authgate.secretName" -}}
{{- if .Values.secret.create }}
{{- include "authgate.fullname" . }}
{{- else }}
{{- .Values.secret.existingSecret }}
{{- end }}
{{- end }}

{{- define "authgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* In-cluster base URL of the authgate Service, as the ingress controller reaches it. */}}
{{- define "authgate.serviceURL" -}}
{{- printf "http://%s.%s.svc.cluster.local:%d" (include "authgate.fullname" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}

{{/* The front doors authgate believes (--proxy): config.proxy, or derived from what the chart renders. */}}
{{- define "authgate.proxy" -}}
{{- if .Values.config.proxy }}
{{- .Values.config.proxy }}
{{- else }}
{{- $doors := list }}
{{- if or .Values.ingress.api.enabled .Values.ingress.ui.enabled }}
{{- if eq .Values.ingress.provider "traefik" }}
{{- $doors = append $doors "traefik" }}
{{- else }}
{{- $doors = concat $doors (list "ingress-nginx" "traefik") }}
{{- end }}
{{- end }}
{{- if and .Values.gateway.enabled (not .Values.grpc.enabled) }}
{{- $doors = append $doors "path-prefix" }}
{{- if eq .Values.gateway.externalAuth "filter" }}
{{- $doors = append $doors "nginx-gateway-fabric" }}
{{- end }}
{{- end }}
{{- default (list "ingress-nginx" "traefik") $doors | uniq | join "," }}
{{- end }}
{{- end }}

{{/* Whether the gateway asks over gRPC with no per-route context on one route (the filter's protocol GRPC):
then every check is decided on one route, --grpc-default-route. Istio's envoyExtAuthzGrpc sends no context
either, but authgate decides it on the route claiming the original path (config.policy path_prefixes). */}}
{{- define "authgate.gatewayGrpcWithoutContext" -}}
{{- if and .Values.grpc.enabled .Values.gateway.enabled (eq .Values.gateway.externalAuth "filter") }}true{{ end }}
{{- end }}

{{/* The policy routes of the enabled gateway parts, without repeats. */}}
{{- define "authgate.gatewayRoutes" -}}
{{- $routes := list }}
{{- range $key := list "api" "ui" }}
{{- $part := index $.Values.gateway $key }}
{{- if $part.enabled }}
{{- $routes = append $routes $part.route }}
{{- end }}
{{- end }}
{{- $routes | uniq | join "," }}
{{- end }}

{{/* --grpc-default-route: grpc.defaultRoute, or the one gateway route when the gateway's gRPC has no context
(with two routes, none: each part's route claims its path, as for Istio). */}}
{{- define "authgate.grpcDefaultRoute" -}}
{{- if .Values.grpc.defaultRoute }}
{{- .Values.grpc.defaultRoute }}
{{- else if include "authgate.gatewayGrpcWithoutContext" . }}
{{- $routes := include "authgate.gatewayRoutes" . }}
{{- if not (contains "," $routes) }}{{ $routes }}{{ end }}
{{- end }}
{{- end }}

{{- define "authgate.ingressNamespace" -}}
{{- default .Release.Namespace .Values.ingress.namespace }}
{{- end }}

{{/* The policy file: config.policy, plus decision_cache from ingress.authCache and throttle.redis from the chart's `throttle.redis` values. */}}
{{- define "authgate.policy" -}}
{{- $policy := deepCopy .Values.config.policy }}
{{- if .Values.ingress.authCache.enabled }}
{{- $cache := deepCopy (default (dict) (index $policy "decision_cache")) }}
{{- $_ := set $cache "max_age_seconds" (int .Values.ingress.authCache.seconds) }}
{{- $_ := set $policy "decision_cache" $cache }}
{{- end }}
{{- $r := .Values.throttle.redis }}
{{- if $r.url }}
{{- $redis := dict "url" $r.url "key_prefix" $r.keyPrefix "timeout_seconds" $r.timeoutSeconds }}
{{- if $r.existingSecret }}
{{- $_ := set $redis "password_env" "AUTHGATE_REDIS_PASSWORD" }}
{{- end }}
{{- if $r.tlsCASecret }}
{{- $_ := set $redis "tls_ca_file" "/etc/authgate/redis-tls/ca.crt" }}
{{- end }}
{{- $throttle := default (dict) $policy.throttle }}
{{- $_ := set $throttle "redis" $redis }}
{{- $_ := set $policy "throttle" $throttle }}
{{- end }}
{{- if .Values.signIn.enabled }}
{{- $routes := $policy.routes }}
{{- range $route := splitList "," (include "authgate.signInRoutes" (dict "root" . "part" "ui")) }}
{{- $r := deepCopy (index $routes $route) }}
{{- if not (has "session" $r.schemes) }}
{{- $_ := set $r "schemes" (prepend $r.schemes "session") }}
{{- end }}
{{- $_ := set $routes $route $r }}
{{- end }}
{{- range $route := splitList "," (include "authgate.signInRoutes" (dict "root" . "part" "api")) }}
{{- $r := deepCopy (index $routes $route) }}
{{- if not (has "session" $r.schemes) }}
{{- $_ := set $r "schemes" (append $r.schemes "session") }}
{{- end }}
{{- $_ := set $routes $route $r }}
{{- end }}
{{- $signIn := deepCopy (default (dict) (index $policy "sign_in")) }}
{{- $_ := set $signIn "prefix" .Values.signIn.prefix }}
{{- $_ := set $signIn "lifetime" .Values.signIn.lifetime }}
{{- $_ := set $signIn "idle_timeout" .Values.signIn.idleTimeout }}
{{- with .Values.signIn.title }}
{{- $_ := set $signIn "title" . }}
{{- end }}
{{- $o := .Values.signIn.oidc }}
{{- if $o.enabled }}
{{- $oidc := dict "issuer" $o.issuer "client_id" $o.clientId "scopes" $o.scopes "principal_claim" $o.principalClaim "require_email_verified" $o.requireEmailVerified "groups_claim" (default nil $o.groupsClaim) "algorithms" $o.algorithms "end_session" $o.endSession }}
{{- with $o.redirectUrl }}{{ $_ := set $oidc "redirect_url" . }}{{ end }}
{{- with $o.displayName }}{{ $_ := set $oidc "display_name" . }}{{ end }}
{{- $_ := set $signIn "oidc" $oidc }}
{{- end }}
{{- $_ := set $policy "sign_in" $signIn }}
{{- end }}
{{- toYaml $policy }}
{{- end }}

{{/* The policy routes of one part ("ui" or "api") of every enabled front door, without repeats, comma-joined:
signIn.enabled adds `session` to them. */}}
{{- define "authgate.signInRoutes" -}}
{{- $v := .root.Values }}
{{- $routes := list }}
{{- $ing := index $v.ingress .part }}
{{- if $ing.enabled }}{{ $routes = append $routes $ing.route }}{{ end }}
{{- if $v.gateway.enabled }}
{{- $gw := index $v.gateway .part }}
{{- if $gw.enabled }}{{ $routes = append $routes $gw.route }}{{ end }}
{{- end }}
{{- if $v.contour.enabled }}
{{- $c := index $v.contour .part }}
{{- if $c.enabled }}{{ $routes = append $routes $c.route }}{{ end }}
{{- end }}
{{- $routes | uniq | join "," }}
{{- end }}

{{/* The session cookie's name: the policy's sign_in.cookie_name, else authgate's default. */}}
{{- define "authgate.sessionCookie" -}}
{{- dig "sign_in" "cookie_name" "__Host-authgate" .Values.config.policy }}
{{- end }}

{{/* The request headers a gateway sends to authgate: gateway.headersToAuth, plus with signIn.enabled what a
browser's sign-in needs (the session cookie; Accept and Sec-Fetch-Mode tell a navigation from an API call;
Sec-Fetch-Site and Origin guard unsafe methods), without repeats (case-insensitive). A YAML list. */}}
{{- define "authgate.headersToAuth" -}}
{{- $headers := list }}
{{- $seen := list }}
{{- $wanted := .Values.gateway.headersToAuth }}
{{- if .Values.signIn.enabled }}
{{- $wanted = concat $wanted (list "Cookie" "Accept" "Sec-Fetch-Mode" "Sec-Fetch-Site" "Origin") }}
{{- end }}
{{- range $wanted }}
{{- if not (has (lower .) $seen) }}
{{- $seen = append $seen (lower .) }}
{{- $headers = append $headers . }}
{{- end }}
{{- end }}
{{- toYaml $headers }}
{{- end }}

{{/* The session keys: signIn.sessionKeys, else those of the installed Secret (kept across upgrades), else one
generated key (URL-safe base64 of 32 random bytes, as `authgate new-session-key` prints). */}}
{{- define "authgate.sessionKeys" -}}
{{- if .Values.signIn.sessionKeys }}
{{- join "\n" .Values.signIn.sessionKeys }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "authgate.secretName" .) }}
{{- if and $existing $existing.data (hasKey $existing.data "session-keys") }}
{{- index $existing.data "session-keys" | b64dec | trim }}
{{- else }}
{{- randBytes 32 | replace "+" "-" | replace "/" "_" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether more than one pod runs (PodDisruptionBudget only then). */}}
{{- define "authgate.multiplePods" -}}
{{- if .Values.autoscaling.enabled }}
{{- if gt (int .Values.autoscaling.minReplicas) 1 }}true{{ end }}
{{- else if gt (int .Values.replicaCount) 1 }}true
{{- end }}
{{- end }}

{{/* The test token: kept across upgrades (lookup), random on first install. */}}
{{- define "authgate.testToken" -}}
{{- $name := printf "%s-test-token" (include "authgate.fullname" .) }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name }}
{{- if and $existing $existing.data (hasKey $existing.data "token") }}
{{- index $existing.data "token" | b64dec }}
{{- else }}
{{- randAlphaNum 40 }}
{{- end }}
{{- end }}

{{/* Whether the chart manages a test token (tests on, and it owns the Secret). */}}
{{- define "authgate.managesTestToken" -}}
{{- if and .Values.tests.enabled .Values.secret.create }}true{{ end }}
{{- end }}

{{/*
Values that cannot work together fail here, at install, with a message naming the keys.
The schema catches wrong types and unknown keys; this catches combinations.
*/}}
{{- define "authgate.validate" -}}
{{- $v := .Values }}
{{- if $v.ingress.authCache.enabled }}
{{- if eq $v.ingress.provider "traefik" }}
{{- fail "ingress.authCache renders ingress-nginx's auth-cache-key; Traefik's ForwardAuth has no cache: set ingress.authCache.enabled=false" }}
{{- end }}
{{- $set := dig "decision_cache" "max_age_seconds" nil $v.config.policy }}
{{- if and (not (kindIs "invalid" $set)) (ne (int $set) (int $v.ingress.authCache.seconds)) }}
{{- fail (printf "config.policy.decision_cache.max_age_seconds (%v) and ingress.authCache.seconds (%d) contradict each other: with ingress.authCache on, drop the policy's value (the chart sets it)" $set (int $v.ingress.authCache.seconds)) }}
{{- end }}
{{- end }}
{{- if and $v.secret.create $v.secret.existingSecret }}
{{- fail (printf "secret.existingSecret (%q) and secret.create=true contradict each other: set secret.create=false to use your own Secret, or drop secret.existingSecret" $v.secret.existingSecret) }}
{{- end }}
{{- if and (not $v.secret.create) (not $v.secret.existingSecret) }}
{{- fail "no Secret source: set secret.create=true (with secret.tokens / secret.htpasswd) or name your own Secret in secret.existingSecret" }}
{{- end }}
{{- if and (not $v.secret.create) (or $v.secret.tokens $v.secret.htpasswd) }}
{{- fail "secret.tokens / secret.htpasswd are only used with secret.create=true; with secret.existingSecret put the lines in your own Secret" }}
{{- end }}
{{- range $i, $line := $v.secret.tokens }}
{{- $fields := regexSplit "\\s+" (trim $line) -1 }}
{{- if and (not (hasPrefix "#" (trim $line))) (lt (len $fields) 2) }}
{{- fail (printf "secret.tokens[%d]: expected 'NAME SECRET [ATTRIBUTE=VALUE ...]'" $i) }}
{{- end }}
{{- if and (not (hasPrefix "#" (trim $line))) (not (hasPrefix "sha256:" (index $fields 1))) (not $v.secret.allowPlainTokens) }}
{{- fail (printf "secret.tokens[%d] (%s): the secret is a plain token, not a sha256: digest; store its digest (authgate hash-token) or set secret.allowPlainTokens=true" $i (index $fields 0)) }}
{{- end }}
{{- end }}
{{- range $i, $line := $v.secret.htpasswd }}
{{- $hash := regexReplaceAll "^[^:]*:" (trim $line) "" }}
{{- if not (regexMatch "^(\\$2[aby]\\$|\\$apr1\\$|\\{SHA\\}|\\$5\\$|\\$6\\$)" $hash) }}
{{- fail (printf "secret.htpasswd[%d]: the hash must be bcrypt ($2y$), $apr1$, {SHA}, $5$ or $6$ - plain-text and DES crypt passwords are rejected by authgate" $i) }}
{{- end }}
{{- end }}
{{- if $v.signIn.oidc.enabled }}
{{- if not $v.signIn.enabled }}
{{- fail "signIn.oidc.enabled needs signIn.enabled=true (the OpenID sign-in issues the same session cookie)" }}
{{- end }}
{{- if or (not $v.signIn.oidc.issuer) (not $v.signIn.oidc.clientId) }}
{{- fail "signIn.oidc: set issuer (the provider's issuer URL) and clientId (the client authgate is registered as)" }}
{{- end }}
{{- if and $v.watchSecret.enabled $v.signIn.oidc.clientSecret.existingSecret }}
{{- fail "signIn.oidc.clientSecret.existingSecret is projected into the mounted credential directory, which watch mode does not use: put the key oidc-client-secret in secret.existingSecret instead" }}
{{- end }}
{{- if and $v.secret.create (not $v.signIn.oidc.clientSecret.existingSecret) }}
{{- fail "signIn.oidc: with secret.create the chart's Secret cannot hold the client secret; name the Secret that does in signIn.oidc.clientSecret.existingSecret" }}
{{- end }}
{{- end }}
{{- if and $v.rbac.operator.create $v.secret.create }}
{{- fail "rbac.operator.create=true is for editing the Secret with the authgate CLI, but secret.create=true makes Helm own the Secret and overwrite those edits: use secret.create=false with secret.existingSecret" }}
{{- end }}
{{- if and $v.podDisruptionBudget.enabled (not (kindIs "invalid" $v.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" $v.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set either minAvailable or maxUnavailable (set the other to null), not both" }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%d) is greater than autoscaling.maxReplicas (%d)" (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- end }}
{{- $routes := $v.config.policy.routes }}
{{- range $key := list "api" "ui" }}
{{- $ing := index $v.ingress $key }}
{{- if $ing.enabled }}
{{- if not (or $ing.host $v.ingress.host) }}
{{- fail (printf "ingress.%s.enabled=true but it has no host: set ingress.host (shared) or ingress.%s.host" $key $key) }}
{{- end }}
{{- if not $v.ingress.backend.serviceName }}
{{- fail (printf "ingress.%s.enabled=true but ingress.backend.serviceName (the protected application's Service) is empty" $key) }}
{{- end }}
{{- if not (hasKey $routes $ing.route) }}
{{- fail (printf "ingress.%s.route=%q is not a route of config.policy.routes (%s)" $key $ing.route (keys $routes | sortAlpha | join ", ")) }}
{{- end }}
{{- end }}
{{- end }}
{{- $doors := splitList "," (include "authgate.proxy" .) }}
{{- if $v.gateway.enabled }}
{{- if not $v.gateway.parentRefs }}
{{- fail "gateway.enabled=true but gateway.parentRefs is empty: name the Gateway the HTTPRoutes attach to" }}
{{- end }}
{{- if not $v.ingress.backend.serviceName }}
{{- fail "gateway.enabled=true but ingress.backend.serviceName (the protected application's Service) is empty" }}
{{- end }}
{{- range $key := list "api" "ui" }}
{{- $part := index $v.gateway $key }}
{{- if and $part.enabled (not (hasKey $v.config.policy.routes $part.route)) }}
{{- fail (printf "gateway.%s.route=%q is not a route of config.policy.routes" $key $part.route) }}
{{- end }}
{{- end }}
{{- if and $v.gateway.api.enabled $v.gateway.ui.enabled (eq $v.gateway.api.path $v.gateway.ui.path) }}
{{- fail (printf "gateway.api and gateway.ui both serve %s: give them different paths" $v.gateway.api.path) }}
{{- end }}
{{- if and (not $v.grpc.enabled) (eq $v.gateway.externalAuth "filter") (not (or (has "path-prefix" $doors) (has "envoy" $doors) (has "nginx-gateway-fabric" $doors))) }}
{{- fail (printf "gateway.externalAuth=filter needs config.proxy to include path-prefix (Envoy-based controllers) or nginx-gateway-fabric, got %q" $v.config.proxy) }}
{{- end }}
{{- if and (not $v.grpc.enabled) (ne $v.gateway.externalAuth "filter") (not (or (has "path-prefix" $doors) (has "envoy" $doors))) }}
{{- fail (printf "gateway.externalAuth=%s sends the original path after /auth/<route>: config.proxy must include path-prefix, got %q" $v.gateway.externalAuth $v.config.proxy) }}
{{- end }}
{{- $gatewayRoutes := include "authgate.gatewayRoutes" . }}
{{- $byPath := or (eq $v.gateway.externalAuth "istio") (and (include "authgate.gatewayGrpcWithoutContext" .) (contains "," $gatewayRoutes)) }}
{{- if $byPath }}
{{- $why := ternary "Istio allows one CUSTOM provider per Gateway, so authgate is asked on one provider for every part" "the filter's gRPC carries no per-route context" (eq $v.gateway.externalAuth "istio") }}
{{- range $key := list "api" "ui" }}
{{- $part := index $v.gateway $key }}
{{- if $part.enabled }}
{{- $claims := dig $part.route "path_prefixes" (list) $routes }}
{{- if not (has $part.path $claims) }}
{{- fail (printf "gateway.externalAuth=%s: %s, and the policy route claiming the original path decides: config.policy.routes.%s.path_prefixes must include gateway.%s.path (%s), got %v" $v.gateway.externalAuth $why $part.route $key $part.path $claims) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (include "authgate.gatewayGrpcWithoutContext" .) $v.grpc.defaultRoute (or (contains "," $gatewayRoutes) (ne $v.grpc.defaultRoute $gatewayRoutes)) }}
{{- fail (printf "gateway.externalAuth=%s over gRPC (grpc.enabled=true) sends no per-route context: grpc.defaultRoute=%s would decide every check on one route, but the enabled gateway parts use %s; leave grpc.defaultRoute empty (each part's route then decides by the path it claims in config.policy path_prefixes)" $v.gateway.externalAuth $v.grpc.defaultRoute $gatewayRoutes) }}
{{- end }}
{{- end }}
{{- if eq (int $v.health.port) 8080 }}
{{- fail "health.port=8080 is the container's HTTP port: choose another (the default is 8081)" }}
{{- end }}
{{- if and $v.grpc.enabled (eq (int $v.health.port) (int $v.grpc.port)) }}
{{- fail (printf "health.port=%d is also grpc.port: give each listener its own port" (int $v.health.port)) }}
{{- end }}
{{- if $v.grpc.enabled }}
{{- if eq (int $v.grpc.port) 8080 }}
{{- fail "grpc.port=8080 is the container's HTTP port: choose another (the default is 9001)" }}
{{- end }}
{{- if and $v.grpc.defaultRoute (not (hasKey $routes $v.grpc.defaultRoute)) }}
{{- fail (printf "grpc.defaultRoute=%q is not a route of config.policy.routes (%s)" $v.grpc.defaultRoute (keys $routes | sortAlpha | join ", ")) }}
{{- end }}
{{- else if $v.grpc.defaultRoute }}
{{- fail "grpc.defaultRoute is set but grpc.enabled=false: it only applies to the gRPC port" }}
{{- end }}
{{- if $v.contour.enabled }}
{{- if not $v.grpc.enabled }}
{{- fail "contour.enabled=true needs grpc.enabled=true: Contour asks authorization services only over gRPC" }}
{{- end }}
{{- if not $v.ingress.host }}
{{- fail "contour.enabled=true needs ingress.host: the HTTPProxy's virtualhost.fqdn" }}
{{- end }}
{{- if not $v.ingress.tls.secretName }}
{{- fail "contour.enabled=true needs ingress.tls.secretName: Contour applies authorization only to TLS virtual hosts (an HTTPProxy without TLS would serve the application unauthenticated)" }}
{{- end }}
{{- if not $v.ingress.backend.serviceName }}
{{- fail "contour.enabled=true but ingress.backend.serviceName (the protected application's Service) is empty" }}
{{- end }}
{{- if not (or $v.contour.api.enabled $v.contour.ui.enabled) }}
{{- fail "contour.enabled=true but neither contour.api nor contour.ui is enabled" }}
{{- end }}
{{- range $key := list "api" "ui" }}
{{- $part := index $v.contour $key }}
{{- if and $part.enabled (not (hasKey $routes $part.route)) }}
{{- fail (printf "contour.%s.route=%q is not a route of config.policy.routes (%s)" $key $part.route (keys $routes | sortAlpha | join ", ")) }}
{{- end }}
{{- end }}
{{- if and $v.contour.api.enabled $v.contour.ui.enabled (eq $v.contour.api.path $v.contour.ui.path) }}
{{- fail (printf "contour.api and contour.ui both serve %s: give them different paths" $v.contour.api.path) }}
{{- end }}
{{- end }}
{{- if and (or $v.ingress.api.enabled $v.ingress.ui.enabled) (eq $v.ingress.provider "traefik") (not (has "traefik" $doors)) }}
{{- fail (printf "ingress.provider=traefik sends ForwardAuth headers, but config.proxy=%q does not read them: set config.proxy=traefik" $v.config.proxy) }}
{{- end }}
{{- if and (or $v.ingress.api.enabled $v.ingress.ui.enabled) (eq $v.ingress.provider "nginx") (not (has "ingress-nginx" $doors)) }}
{{- fail (printf "ingress.provider=nginx renders ingress-nginx auth-url annotations, but config.proxy=%q does not read ingress-nginx's headers: set config.proxy=ingress-nginx,traefik (the default: ingress-nginx or Traefik's ingress-nginx provider)" $v.config.proxy) }}
{{- end }}
{{- if and $v.ingress.api.enabled $v.ingress.ui.enabled (eq (default $v.ingress.host $v.ingress.api.host) (default $v.ingress.host $v.ingress.ui.host)) (eq $v.ingress.api.path $v.ingress.ui.path) }}
{{- fail (printf "ingress.api and ingress.ui both serve %s%s: give them different paths or hosts" (default $v.ingress.host $v.ingress.api.host) $v.ingress.api.path) }}
{{- end }}
{{- if and $v.ingress.api.enabled (eq $v.ingress.provider "nginx") (gt (int $v.ingress.authKeepalive) 0) $v.ingress.authResponseHeaders }}
{{- fail (printf "ingress.authKeepalive=%d needs ingress.authResponseHeaders: [] - ingress-nginx v1.12-v1.15's keepalive (Lua) auth path answers 500 to every allowed request when auth-response-headers is set (docs/proxies.md, \"Keepalive to authgate\")" (int $v.ingress.authKeepalive)) }}
{{- end }}
{{- with $v.ingress.authResponseHeaders }}
{{- $listed := list }}
{{- range . }}{{ $listed = append $listed (lower .) }}{{ end }}
{{- range $identity := list "X-Auth-Request-User" "X-Auth-Request-Scheme" }}
{{- if not (has (lower $identity) $listed) }}
{{- fail (printf "ingress.authResponseHeaders lists %s but not %s: every door passes a client's own copy of an identity header it does not list to the application. List both X-Auth-Request-User and X-Auth-Request-Scheme (the default), or [] to copy none" (join ", " $v.ingress.authResponseHeaders) $identity) }}
{{- end }}
{{- end }}
{{- end }}
{{- $redis := $v.throttle.redis }}
{{- $policyThrottle := default (dict) $v.config.policy.throttle }}
{{- if and $redis.url (hasKey $policyThrottle "redis") }}
{{- fail "throttle.redis.url and config.policy.throttle.redis both set the shared throttle: keep throttle.redis.* (it also wires the password Secret and the CA) and drop config.policy.throttle.redis" }}
{{- end }}
{{- if and $redis.url (hasKey $policyThrottle "enabled") (not $policyThrottle.enabled) }}
{{- fail "throttle.redis.url shares a throttle that config.policy.throttle.enabled=false turns off: drop one of them" }}
{{- end }}
{{- if and (not $redis.url) (or $redis.existingSecret $redis.tlsCASecret) }}
{{- fail "throttle.redis.existingSecret / throttle.redis.tlsCASecret are set but throttle.redis.url is empty: set the URL, or drop them" }}
{{- end }}
{{- if and $redis.tlsCASecret (not (hasPrefix "rediss://" $redis.url)) }}
{{- fail (printf "throttle.redis.tlsCASecret is for TLS, but throttle.redis.url=%q is not rediss://" $redis.url) }}
{{- end }}
{{- if $v.signIn.enabled }}
{{- $policyPrefix := dig "sign_in" "prefix" "" $v.config.policy }}
{{- if and $policyPrefix (ne $policyPrefix $v.signIn.prefix) }}
{{- fail (printf "config.policy.sign_in.prefix (%s) and signIn.prefix (%s) contradict each other: with signIn.enabled the chart sets the policy's prefix, drop config.policy.sign_in.prefix" $policyPrefix $v.signIn.prefix) }}
{{- end }}
{{- if not (include "authgate.signInRoutes" (dict "root" . "part" "ui")) }}
{{- fail "signIn.enabled=true but no UI part is rendered (ingress.ui, gateway.ui or contour.ui): nothing would send a browser to the sign-in page" }}
{{- end }}
{{- if and (not $v.secret.create) $v.signIn.sessionKeys }}
{{- fail "signIn.sessionKeys go into the chart's Secret (secret.create=true); with secret.existingSecret put the session-keys key in your own Secret" }}
{{- end }}
{{- end }}
{{- if and $v.tests.enabled (not (hasKey $routes $v.tests.route)) }}
{{- fail (printf "tests.route=%q is not a route of config.policy.routes" $v.tests.route) }}
{{- end }}
{{- if and $v.tests.existingTokenSecret $v.secret.create }}
{{- fail "tests.existingTokenSecret is for secret.existingSecret setups; with secret.create=true the chart makes its own test token" }}
{{- end }}
{{- end }}
