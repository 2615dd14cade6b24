package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"

	"github.com/berth-registry/berth/pkg/oci"
)

// challenge is an error that carries a WWW-Authenticate value, as the
// access gate's refusals do.
type challenge struct{ error }

func (challenge) WWWAuthenticate() string { return `Basic realm="berth"` }
func (c challenge) Unwrap() error         { return c.error }

// TestWriteErrorSpeaksEveryErrcode: each error berth returns meets the wire
// as the OCI errcode JSON and status written here, independently of the
// table in errors.go; a row added there without a case here fails.
func TestWriteErrorSpeaksEveryErrcode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		err    error
		status int
		code   errcode.ErrorCode
	}{
		{"name invalid", oci.ErrNameInvalid, 400, errcode.ErrorCodeNameInvalid},
		{"tag invalid", oci.ErrTagInvalid, 400, errcode.ErrorCodeTagInvalid},
		{"digest invalid", oci.ErrDigestInvalid, 400, errcode.ErrorCodeDigestInvalid},
		{"registry unknown", oci.ErrRegistryUnknown, 403, errcode.ErrorCodeDenied},
		{"manifest invalid: a bad gateway", oci.ErrManifestInvalid, 502, v2.ErrorCodeManifestInvalid},
		{"manifest unknown", oci.ErrManifestUnknown, 404, errcode.ErrorCodeManifestUnknown},
		{"blob unknown", oci.ErrBlobUnknown, 404, errcode.ErrorCodeBlobUnknown},
		{"name unknown", oci.ErrNameUnknown, 404, errcode.ErrorCodeNameUnknown},
		{"not a route", oci.ErrNotRoute, 404, errcode.ErrorCodeNameUnknown},
		{"unauthorized", oci.ErrUnauthorized, 401, errcode.ErrorCodeUnauthorized},
		{"denied", oci.ErrDenied, 403, errcode.ErrorCodeDenied},
		{"too many requests", oci.ErrTooManyRequests, 429, errcode.ErrorCodeTooManyRequests},
		{"unavailable", oci.ErrUnavailable, 503, errcode.ErrorCodeUnavailable},
		{"push or delete", errUnsupported, 405, errcode.ErrorCodeUnsupported},
		{"digest mismatch", oci.ErrDigestMismatch, 502, errcode.ErrorCodeUnknown},
		{"too large", oci.ErrTooLarge, 502, errcode.ErrorCodeUnknown},
		{"refused upstream answer", oci.ErrBadUpstream, 502, errcode.ErrorCodeUnknown},
		{"timeout", context.DeadlineExceeded, 504, errcode.ErrorCodeUnavailable},
		{"anything else", errors.New("disk on fire"), 500, errcode.ErrorCodeUnknown},
		{"offline and unknown", fmt.Errorf("%w: %w", oci.ErrManifestUnknown, oci.ErrOffline), 404, errcode.ErrorCodeManifestUnknown},
	}
	covered := map[error]bool{}
	for _, tt := range tests {
		covered[tt.err] = true
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := httptest.NewRecorder()
			w.Header().Set("Docker-Content-Digest", "sha256:stale") // a header set before the error
			status := writeError(w, fmt.Errorf("fetch: %w", tt.err))
			var body struct {
				Errors []struct{ Code, Message string }
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			if status != tt.status || w.Code != tt.status || len(body.Errors) != 1 || body.Errors[0].Code != tt.code.String() {
				t.Fatalf("%d (returned %d) %q, want %d %s", w.Code, status, w.Body, tt.status, tt.code)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" || w.Header().Get("Docker-Content-Digest") != "" {
				t.Errorf("headers %v", w.Header())
			}
		})
	}
	for _, row := range errorCodes {
		if !covered[row.err] {
			t.Errorf("errors.go maps %v to %s, and no case here checks it", row.err, row.code)
		}
	}
}

func TestWriteErrorCarriesTheChallenge(t *testing.T) {
	t.Parallel()
	w := httptest.NewRecorder()
	writeError(w, challenge{fmt.Errorf("no credentials: %w", oci.ErrUnauthorized)})
	if w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") != `Basic realm="berth"` {
		t.Fatalf("%d, WWW-Authenticate %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
}
