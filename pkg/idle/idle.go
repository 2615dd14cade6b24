// Package idle cuts a stream that stops sending: a response body whose Read
// waits longer than a timeout for bytes cancels its request. A slow stream
// that keeps moving is never cut, and the time between Reads (the caller's
// own pace) does not count. The upstream client and the peers wrap their
// bodies in it, each adding what it does on a stall.
package idle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrTimeout is the cause a stalled body's request is cancelled with; the
// error of a Read cut by it wraps it.
var ErrTimeout = errors.New("idle timeout")

// Body is a response body that cancels its request when one Read waits
// longer than its timeout. It is not safe for concurrent Reads, like any
// body; Close may be called while a Read blocks.
type Body struct {
	rc     io.ReadCloser
	ctx    context.Context // the request's: cancelled with ErrTimeout on a stall
	cancel context.CancelCauseFunc
	d      time.Duration
	timer  *time.Timer // armed only while a Read waits
}

// New returns rc as a Body. ctx is the context rc's request was made with
// and cancel cancels it: a Read that waits longer than d calls
// cancel(ErrTimeout), which ends the request and so the Read.
func New(ctx context.Context, cancel context.CancelCauseFunc, rc io.ReadCloser, d time.Duration) *Body {
	b := &Body{rc: rc, ctx: ctx, cancel: cancel, d: d}
	b.timer = time.AfterFunc(d, func() { cancel(ErrTimeout) })
	b.timer.Stop()
	return b
}

// Read reads from the body. An error of a Read the timeout cut wraps
// ErrTimeout and says for how long nothing came; other errors, io.EOF
// included, are the body's own.
func (b *Body) Read(p []byte) (int, error) {
	b.timer.Reset(b.d)
	n, err := b.rc.Read(p)
	b.timer.Stop()
	if err != nil && err != io.EOF && context.Cause(b.ctx) == ErrTimeout {
		err = fmt.Errorf("nothing for %s: %w", b.d, ErrTimeout)
	}
	return n, err
}

// Timeout is how long a Read may wait for bytes.
func (b *Body) Timeout() time.Duration { return b.d }

// Close ends the request and closes the body. It does not block on the
// other end.
func (b *Body) Close() error {
	b.timer.Stop()
	b.cancel(context.Canceled)
	return b.rc.Close()
}
