package registry

import (
	"context"
	"errors"
	"net/http"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
)

// apiFunc is one route, given the parsed request. It returns an error
// instead of writing one, so errors meet the wire in one place: ServeHTTP.
type apiFunc func(w http.ResponseWriter, r *http.Request, req oci.Request) error

// errorCodes maps berth's errors to OCI error codes, first match wins.
var errorCodes = []struct {
	err  error
	code errcode.ErrorCode
}{
	{oci.ErrNameInvalid, errcode.ErrorCodeNameInvalid},
	{oci.ErrTagInvalid, errcode.ErrorCodeTagInvalid},
	{oci.ErrDigestInvalid, errcode.ErrorCodeDigestInvalid},
	{oci.ErrRegistryUnknown, errcode.ErrorCodeDenied},
	{oci.ErrManifestInvalid, v2.ErrorCodeManifestInvalid},
	{oci.ErrManifestUnknown, errcode.ErrorCodeManifestUnknown},
	{oci.ErrBlobUnknown, errcode.ErrorCodeBlobUnknown},
	{oci.ErrNameUnknown, errcode.ErrorCodeNameUnknown},
	{oci.ErrNotRoute, errcode.ErrorCodeNameUnknown},
	{oci.ErrUnauthorized, errcode.ErrorCodeUnauthorized},
	{oci.ErrDenied, errcode.ErrorCodeDenied},
	{oci.ErrTooManyRequests, errcode.ErrorCodeTooManyRequests},
	{oci.ErrUnavailable, errcode.ErrorCodeUnavailable},
	{errUnsupported, errcode.ErrorCodeUnsupported},
}

var errUnsupported = errors.New("berth is a read-only mirror: push and delete are not supported")

// writeError writes err as OCI errcode JSON with the status its code
// carries. Content that failed its digest, or an upstream that answered
// nonsense, is a bad gateway: 502 with code UNKNOWN (MANIFEST_INVALID for
// a manifest answer that is no manifest).
func writeError(w http.ResponseWriter, err error) (status int) {
	code, status := errcode.ErrorCodeUnknown, http.StatusInternalServerError
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			code, status = c.code, c.code.Descriptor().HTTPStatusCode
			break
		}
	}
	if errors.Is(err, oci.ErrBadUpstream) || code == errcode.ErrorCodeUnknown && (errors.Is(err, oci.ErrDigestMismatch) || errors.Is(err, oci.ErrTooLarge)) {
		status = http.StatusBadGateway
	}
	if errors.Is(err, context.DeadlineExceeded) {
		code, status = errcode.ErrorCodeUnavailable, http.StatusGatewayTimeout
	}
	var ch interface{ WWWAuthenticate() string }
	if errors.As(err, &ch) && ch.WWWAuthenticate() != "" {
		w.Header().Set("WWW-Authenticate", ch.WWWAuthenticate())
	}
	writeCode(w, code, status, err.Error())
	return status
}
