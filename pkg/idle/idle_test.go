package idle_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/berth-registry/berth/pkg/idle"
)

// stream is a body that sends what is put into it and fails when its
// request's context ends, as a response body over a connection does.
type stream struct {
	ctx    context.Context
	chunks chan []byte
}

func (s *stream) Read(p []byte) (int, error) {
	select {
	case c, ok := <-s.chunks:
		if !ok {
			return 0, io.EOF
		}
		return copy(p, c), nil
	case <-s.ctx.Done():
		return 0, context.Cause(s.ctx)
	}
}

func (s *stream) Close() error { return nil }

func newBody(d time.Duration) (*idle.Body, *stream, context.Context) {
	ctx, cancel := context.WithCancelCause(context.Background())
	s := &stream{ctx: ctx, chunks: make(chan []byte)}
	return idle.New(ctx, cancel, s, d), s, ctx
}

func TestSlowStreamThatKeepsMovingIsNeverCut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, s, _ := newBody(time.Second)
		go func() {
			for range 5 {
				time.Sleep(900 * time.Millisecond) // in the bubble: fake time
				s.chunks <- []byte("x")
			}
			close(s.chunks)
		}()
		got, err := io.ReadAll(b)
		if err != nil || string(got) != "xxxxx" {
			t.Fatalf("slow stream: %q, %v", got, err)
		}
		_ = b.Close()
	})
}

func TestStallCancelsTheRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, s, ctx := newBody(time.Second)
		go func() { s.chunks <- []byte("some") }()
		p := make([]byte, 10)
		if n, err := b.Read(p); n != 4 || err != nil {
			t.Fatalf("first read: %d, %v", n, err)
		}
		time.Sleep(time.Hour) // between Reads: the caller's pace does not count
		if ctx.Err() != nil {
			t.Fatal("cancelled between Reads")
		}
		start := time.Now()
		_, err := b.Read(p)
		if !errors.Is(err, idle.ErrTimeout) || time.Since(start) != time.Second {
			t.Fatalf("stalled read: %v after %s, want ErrTimeout after 1s", err, time.Since(start))
		}
		if context.Cause(ctx) != idle.ErrTimeout {
			t.Fatalf("request cause %v", context.Cause(ctx))
		}
		_ = b.Close()
	})
}

func TestCloseEndsTheRequestWithoutATimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _, ctx := newBody(time.Second)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if context.Cause(ctx) != context.Canceled {
			t.Fatalf("cause after Close: %v", context.Cause(ctx))
		}
		time.Sleep(2 * time.Second)
		if context.Cause(ctx) != context.Canceled {
			t.Fatalf("the timer fired after Close: %v", context.Cause(ctx))
		}
	})
}
