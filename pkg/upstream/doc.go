// Package upstream is berth's client of upstream registries: the read side
// of the distribution API (manifests, blobs, tags/list, referrers) with
// authentication, redirects, endpoint failover, resumable blob streams,
// rate limits and per-registry timeouts and TLS.
//
// # Authentication
//
// Each endpoint is pinged once (GET /v2/) to learn its WWW-Authenticate
// challenge. Bearer challenges are answered by go-containerregistry's token
// exchange (pkg/v1/remote/transport.Exchange: realm, service and scope
// repository:<name>:pull; basic credentials, or the OAuth2 refresh-token
// flow for an identity token; a realm-URL guard against SSRF). berth keeps
// the tokens, one per endpoint and scope, until their expires_in (60s when
// the token server gives none) and renews a token on a 401. Basic
// challenges get the credentials on every request. go-containerregistry is
// used rather than distribution's client because distribution v3 keeps its
// client auth internal, and ggcr's exchange is the one crane and many
// tools rely on against Docker Hub, GHCR, GCR/AR, ECR, Quay and Harbor.
//
// Credentials of a registry come from, first match wins:
//   - the config: username with password or passwordFile;
//   - the config's dockerConfig, a Docker config.json whose "auths" entry
//     for the registry name or an endpoint host (for docker.io also
//     https://index.docker.io/v1/) holds "auth" (base64 user:password),
//     "username"/"password", "identitytoken" or "registrytoken", or whose
//     credHelpers entry or credsStore names a credential helper, run as
//     docker-credential-<name> (read with the Docker CLI's config package).
//     A helper's answer is asked for again when 10 minutes old or refused.
//
// The environment's BERTH_REGISTRY_<KEY>_* variables reach the client as
// config fields: config.ApplyCredentialEnv is their one reader, and this
// package reads no environment. Reload re-reads passwordFile and
// dockerConfig. Secrets never appear in logs, metrics or errors; an
// Authorization header is only ever sent to the endpoint's own host and
// port, never to a redirect target.
//
// # Mirror of a mirror
//
// berth may itself be the upstream of another berth. Every request carries
// the query parameter ns=<registry name>, so a berth upstream routes it to
// the same registry (real registries ignore unknown query parameters), and
// the header X-Berth-Hops (oci.HopHeader) with the number of berth hops the
// request has made: the incoming request's oci.Request.Hops plus one. A
// request that arrived with oci.MaxHops or more is refused (a loop).
package upstream
