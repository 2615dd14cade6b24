package upstream

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
)

// rateLimit holds back a registry's requests after a 429 until its
// Retry-After has passed, so callers wait instead of asking again: the
// load on a limiting upstream is never multiplied.
type rateLimit struct {
	mu    sync.Mutex // guards until
	until time.Time
}

// block holds requests back for d from now (never shortening a hold).
func (l *rateLimit) block(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t := time.Now().Add(d); t.After(l.until) {
		l.until = t
	}
}

// wait blocks until the hold is over. When that is further away than max
// it returns at once with an error wrapping oci.ErrTooManyRequests.
func (l *rateLimit) wait(ctx context.Context, max time.Duration) error {
	l.mu.Lock()
	d := time.Until(l.until)
	l.mu.Unlock()
	if d <= 0 {
		return nil
	}
	if d > max {
		return fmt.Errorf("rate limited for another %s: %w", d.Round(time.Second), oci.ErrTooManyRequests)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// retryAfter parses Retry-After (seconds or an HTTP date); 1s when absent
// or unreadable.
func retryAfter(h http.Header) time.Duration {
	v := h.Get("Retry-After")
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return time.Second
}
