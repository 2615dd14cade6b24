package registry

import (
	"context"
	"net"
	"net/http"
	"syscall"
)

// connKey keeps a request's connection in its context (ConnContext).
type connKey struct{}

// ConnContext is an http.Server's ConnContext: it keeps a plain TCP
// connection's syscall.RawConn in the context of each request on it, so
// that the response of a blob still filling can bound the bytes it queues
// in the socket (boundUnsent). A connection that is not a syscall.Conn
// (TLS) is not kept; its responses go as before.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return ctx
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return ctx
	}
	return context.WithValue(ctx, connKey{}, rc)
}

// unsentMax bounds the bytes a filling blob's response queues in its
// socket beyond those sent (TCP_NOTSENT_LOWAT), for that response: without
// it the kernel grows each send buffer to megabytes (tcp_wmem), and 500
// slow clients of one blob held a gigabyte of the host's TCP memory, past
// tcp_mem's pressure mark, where the kernel drops segments (new clients'
// requests among them, which then reached berth after its read-header
// timeout). With it 500 responses queue at most 256 MiB unsent. Bytes in
// flight are not bounded by it, so a fast client's throughput is not.
const unsentMax = 512 << 10

// boundUnsent sets the bound on r's connection, if ConnContext kept it,
// and returns the function that lifts it again (the connection's next
// response, a hit by sendfile at full speed, has the system's default).
func boundUnsent(r *http.Request) (lift func()) {
	rc, ok := r.Context().Value(connKey{}).(syscall.RawConn)
	if !ok {
		return func() {}
	}
	var err error
	if cerr := rc.Control(func(fd uintptr) { err = setUnsentMax(int(fd), unsentMax) }); cerr != nil || err != nil {
		return func() {}
	}
	return func() { _ = rc.Control(func(fd uintptr) { _ = setUnsentMax(int(fd), 0) }) }
}
