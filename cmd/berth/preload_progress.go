package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

// reporter tells a person how a preload goes: a progress bar of bytes on
// a terminal (standard error), one plain line per image otherwise. Its
// methods may be called from the blob fetchers at once.
type reporter struct {
	out, errw io.Writer
	useBar    bool

	mu  sync.Mutex // guards bar and the line writes
	bar *progressbar.ProgressBar

	blobs, bytes, manifests, referrers atomic.Int64
}

func newReporter(cmd *cobra.Command, mode string) *reporter {
	r := &reporter{out: cmd.OutOrStdout(), errw: cmd.ErrOrStderr()}
	r.useBar = mode == "bar" || mode == "auto" && isTerminal(r.errw)
	return r
}

// start begins the bar over total bytes of blobs.
func (r *reporter) start(total int64) {
	if !r.useBar {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(r.errw),
		progressbar.OptionSetDescription("preload"),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(r.errw) }),
	)
}

// counter is where blob bytes are counted as they arrive.
func (r *reporter) counter() io.Writer {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bar == nil {
		return io.Discard
	}
	return r.bar
}

func (r *reporter) blob(n int64) {
	r.blobs.Add(1)
	r.bytes.Add(n)
}

// line prints a line, above the bar when there is one.
func (r *reporter) line(w io.Writer, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bar != nil {
		r.bar.Clear()
	}
	fmt.Fprintf(w, format+"\n", args...)
}

func (r *reporter) done(p *imagePlan) {
	r.manifests.Add(int64(p.manifests))
	r.referrers.Add(int64(p.referrers))
	r.line(r.out, "preloaded %s %s (%d manifests, %d blobs, %d referrers)", p.ref, p.root, p.manifests, len(p.blobs), p.referrers)
}

func (r *reporter) failed(ref string, err error) {
	r.line(r.errw, "failed %s: %v", ref, err)
}

func (r *reporter) warn(ref string, err error) {
	r.line(r.errw, "warning %s: %v", ref, err)
}

// finish ends the bar, prints the summary and returns an error naming
// every image that failed.
func (r *reporter) finish(results []result) error {
	r.mu.Lock()
	if r.bar != nil {
		r.bar.Finish()
	}
	r.mu.Unlock()
	var failed []string
	for _, res := range results {
		if res.err != nil {
			failed = append(failed, res.ref+": "+res.err.Error())
		}
	}
	fmt.Fprintf(r.out, "preloaded %d images: %d manifests, %d blobs, %d bytes, %d referrers\n",
		len(results)-len(failed), r.manifests.Load(), r.blobs.Load(), r.bytes.Load(), r.referrers.Load())
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d images failed:\n  %s", len(failed), len(results), strings.Join(failed, "\n  "))
	}
	return nil
}
