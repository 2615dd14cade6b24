package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
)

var errIdleTimeout = errors.New("idle-read timeout")

// idleBody is a response body that cancels its request when one Read
// waits longer than idle for bytes: a stalled upstream is cut, a slow one
// that keeps moving never is. Time between Reads (the caller's own pace)
// does not count. A Read error other than the caller's cancellation wraps
// oci.ErrUnavailable and calls onFail once (the endpoint goes into
// back-off, so a resumed fetch picks another endpoint). Not safe for
// concurrent Reads, like any body.
type idleBody struct {
	rc      io.ReadCloser
	reqCtx  context.Context // the request's context, cancelled on idle or Close
	parent  context.Context // the caller's context
	cancel  context.CancelCauseFunc
	idle    time.Duration
	timer   *time.Timer
	onFail  func(error)
	once    sync.Once
	release func() // gives back the fetch-limit slot; nil before do sets it
}

func newIdleBody(rc io.ReadCloser, reqCtx, parent context.Context, cancel context.CancelCauseFunc, idle time.Duration) *idleBody {
	b := &idleBody{rc: rc, reqCtx: reqCtx, parent: parent, cancel: cancel, idle: idle}
	b.timer = time.AfterFunc(idle, func() { cancel(errIdleTimeout) })
	b.timer.Stop()
	return b
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.idle)
	n, err := b.rc.Read(p)
	b.timer.Stop()
	if err == nil || err == io.EOF {
		return n, err
	}
	if b.parent.Err() != nil {
		return n, context.Cause(b.parent)
	}
	if context.Cause(b.reqCtx) == errIdleTimeout {
		err = fmt.Errorf("upstream body: no bytes for %s: %w: %w", b.idle, errIdleTimeout, oci.ErrUnavailable)
	} else {
		err = redact("upstream body", "", redactURLError(err), oci.ErrUnavailable)
	}
	b.once.Do(func() {
		if b.onFail != nil {
			b.onFail(err)
		}
	})
	return n, err
}

// Close ends the request and frees its connection.
func (b *idleBody) Close() error {
	b.timer.Stop()
	b.cancel(context.Canceled)
	if b.release != nil {
		b.release()
	}
	return b.rc.Close()
}
