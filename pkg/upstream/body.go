package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/berth-registry/berth/pkg/idle"
	"github.com/berth-registry/berth/pkg/oci"
)

// errIdleTimeout is the cause of a body cut for sending nothing.
var errIdleTimeout = idle.ErrTimeout

// idleBody is a response body cut by the idle-read timeout (an idle.Body):
// a stalled upstream is cut, a slow one that keeps moving never is. A Read
// error other than the caller's cancellation wraps oci.ErrUnavailable and
// calls onFail once (the endpoint goes into back-off, so a resumed fetch
// picks another endpoint). Not safe for concurrent Reads, like any body.
type idleBody struct {
	*idle.Body
	parent  context.Context // the caller's context
	onFail  func(error)
	once    sync.Once
	release func() // gives back the fetch-limit slot; nil before do sets it
}

func newIdleBody(rc io.ReadCloser, reqCtx, parent context.Context, cancel context.CancelCauseFunc, d time.Duration) *idleBody {
	return &idleBody{Body: idle.New(reqCtx, cancel, rc, d), parent: parent}
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.Body.Read(p)
	if err == nil || err == io.EOF {
		return n, err
	}
	if b.parent.Err() != nil {
		return n, context.Cause(b.parent)
	}
	if errors.Is(err, idle.ErrTimeout) {
		err = fmt.Errorf("upstream body: %w: %w", err, oci.ErrUnavailable)
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

// Close ends the request, frees its connection and gives back its slot.
func (b *idleBody) Close() error {
	err := b.Body.Close()
	if b.release != nil {
		b.release()
	}
	return err
}
