package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-registry/berth/pkg/oci"
)

// Error is an upstream's error answer. It wraps the oci sentinel of its
// errcode or status, so errors.Is(err, oci.ErrUnauthorized) and the like
// work, and errors.As gives the upstream's own code and message to pass on.
type Error struct {
	Registry   string // the registry name, as configured
	StatusCode int    // the HTTP status
	Code       string // the errcode of the upstream's first error, "" if none
	Message    string // the upstream's own message(s), or the status text
	sentinel   error
}

// Error says which registry answered what; it holds no request URL.
func (e *Error) Error() string {
	s := fmt.Sprintf("upstream %s: %d", e.Registry, e.StatusCode)
	if e.Code != "" {
		s += " " + e.Code
	}
	return s + ": " + e.Message
}

// Unwrap returns the oci sentinel.
func (e *Error) Unwrap() error { return e.sentinel }

type errorBody struct {
	Errors []struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"errors"`
}

// maxErrorBody bounds an error body read.
const maxErrorBody = 64 << 10

// responseError reads (a bounded part of) resp's body, closes it, and
// returns the upstream's answer as an *Error. notFound is the sentinel of
// a 404 without an errcode.
func responseError(registry string, resp *http.Response, notFound error) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	drain(resp.Body)
	var body errorBody
	_ = json.Unmarshal(b, &body)
	e := &Error{Registry: registry, StatusCode: resp.StatusCode}
	var msgs []string
	for _, d := range body.Errors {
		if e.Code == "" {
			e.Code = d.Code
		}
		if d.Message != "" {
			msgs = append(msgs, d.Message)
		}
	}
	e.Message = strings.Join(msgs, "; ")
	if e.Message == "" {
		e.Message = strings.ToLower(http.StatusText(resp.StatusCode))
	}
	e.sentinel = sentinel(resp.StatusCode, e.Code, notFound)
	return e
}

// fromTransportError converts an error answer that ggcr read (ping, token).
func fromTransportError(terr *transport.Error) error {
	e := &Error{StatusCode: terr.StatusCode}
	var msgs []string
	for _, d := range terr.Errors {
		if e.Code == "" {
			e.Code = string(d.Code)
		}
		if d.Message != "" {
			msgs = append(msgs, d.Message)
		}
	}
	e.Message = strings.Join(msgs, "; ")
	if e.Message == "" {
		e.Message = strings.ToLower(http.StatusText(terr.StatusCode))
	}
	e.sentinel = sentinel(terr.StatusCode, e.Code, oci.ErrUnavailable)
	if e.Registry == "" && terr.Request != nil {
		e.Registry = terr.Request.URL.Host
	}
	return e
}

// sentinel maps an errcode, else a status, to an oci sentinel.
func sentinel(status int, code string, notFound error) error {
	if status >= 500 {
		return oci.ErrUnavailable
	}
	switch code {
	case "UNAUTHORIZED":
		return oci.ErrUnauthorized
	case "DENIED":
		return oci.ErrDenied
	case "TOOMANYREQUESTS":
		return oci.ErrTooManyRequests
	case "MANIFEST_UNKNOWN":
		return oci.ErrManifestUnknown
	case "BLOB_UNKNOWN":
		return oci.ErrBlobUnknown
	case "NAME_UNKNOWN":
		return oci.ErrNameUnknown
	case "NAME_INVALID":
		return oci.ErrNameInvalid
	case "TAG_INVALID":
		return oci.ErrTagInvalid
	case "DIGEST_INVALID":
		return oci.ErrDigestInvalid
	}
	switch status {
	case http.StatusUnauthorized:
		return oci.ErrUnauthorized
	case http.StatusForbidden:
		return oci.ErrDenied
	case http.StatusNotFound:
		return notFound
	case http.StatusTooManyRequests:
		return oci.ErrTooManyRequests
	}
	return oci.ErrUnavailable
}

// redactURLError drops the URL from a *url.Error: a redirect target's
// query may carry a signature.
func redactURLError(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}

// errorKind is the metrics label of an error.
func errorKind(err error) string {
	var nerr net.Error
	switch {
	case errors.Is(err, oci.ErrUnauthorized), errors.Is(err, oci.ErrDenied):
		return "auth"
	case errors.Is(err, oci.ErrTooManyRequests):
		return "429"
	case errors.Is(err, oci.ErrManifestUnknown), errors.Is(err, oci.ErrBlobUnknown), errors.Is(err, oci.ErrNameUnknown):
		return "notfound"
	case errors.Is(err, oci.ErrDigestMismatch):
		return "digest"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, errIdleTimeout), errors.As(err, &nerr) && nerr.Timeout():
		return "timeout"
	case errors.Is(err, oci.ErrUnavailable):
		var e *Error
		if errors.As(err, &e) && e.StatusCode >= 500 {
			return "5xx"
		}
		return "connect"
	}
	return "other"
}
