package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"syscall"
)

// redacted is an error a client may see: its message names the registry
// and a reason, never an endpoint's address, a resolver's address or a
// socket's addresses. The detail (the wrapped error's own text, with those
// addresses) goes to the log: redacted is a slog.LogValuer.
type redacted struct {
	msg    string
	detail string  // for the log: the endpoint and the original error
	errs   []error // the original error and sentinels, for errors.Is/As
}

func (e *redacted) Error() string   { return e.msg }
func (e *redacted) Unwrap() []error { return e.errs }

// LogValue is the message with its detail.
func (e *redacted) LogValue() slog.Value { return slog.StringValue(e.msg + " [" + e.detail + "]") }

// redact returns err as an error whose message is prefix and a reason for
// err that names no address, wrapping err and sentinels; where is the
// endpoint (host:port) for the log.
func redact(prefix, where string, err error, sentinels ...error) error {
	return &redacted{
		msg:    prefix + ": " + reason(err),
		detail: where + ": " + err.Error(),
		errs:   append([]error{err}, sentinels...),
	}
}

// reason says why a network operation failed without naming an address:
// the texts of net, DNS and TLS errors carry the addresses of both ends and
// of the resolver. An error of another kind keeps its own text.
func reason(err error) string {
	var (
		dnsErr  *net.DNSError
		opErr   *net.OpError
		recErr  tls.RecordHeaderError
		uaErr   x509.UnknownAuthorityError
		hostErr x509.HostnameError
		certErr x509.CertificateInvalidError
		vErr    *tls.CertificateVerificationError
		netErr  net.Error
	)
	switch {
	case errors.Is(err, errIdleTimeout):
		return "no bytes within the idle-read timeout"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timed out"
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return "host name does not resolve"
		}
		if dnsErr.IsTimeout {
			return "host name lookup timed out"
		}
		return "host name lookup failed"
	case errors.As(err, &recErr):
		return "TLS handshake failed: the endpoint does not speak TLS"
	case errors.As(err, &uaErr), errors.As(err, &hostErr), errors.As(err, &certErr), errors.As(err, &vErr):
		return "TLS certificate not trusted"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to the endpoint"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timed out"
	case errors.As(err, &opErr):
		if opErr.Op == "dial" {
			return "connect failed"
		}
		return "connection broken"
	}
	return err.Error()
}
