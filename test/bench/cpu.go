//go:build bench

package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

// cpuUse is the CPU seconds each process on one GET's path spent during
// it, and its wall time. The bench process holds both the counting proxy
// and the client: "client" is the client's own thread (locked to it for
// the GET: its reads and hashing), "counter" the rest of the bench
// process (the counting proxy in front of the upstream). On 2 cores the
// GET cannot take less than Total/2 seconds.
type cpuUse struct {
	Wall     float64 `json:"wall"`
	Upstream float64 `json:"upstream"`
	Counter  float64 `json:"counter"`
	Server   float64 `json:"server,omitempty"` // berth or the proxy; 0 for direct
	Client   float64 `json:"client"`
	Total    float64 `json:"total"`
}

func (c cpuUse) String() string {
	s := fmt.Sprintf("wall %.3fs, CPU-s upstream %.3f counter %.3f", c.Wall, c.Upstream, c.Counter)
	if c.Server > 0 {
		s += fmt.Sprintf(" server %.3f", c.Server)
	}
	return s + fmt.Sprintf(" client %.3f, total %.3f (2-core floor %.3fs)", c.Client, c.Total, c.Total/2)
}

// threadCPU is the calling thread's user+system CPU seconds.
func threadCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// cpuTimedGet is timedGet with the CPU accounting of the path: up is the
// upstream registry, server the process in between (nil for direct). The
// GET runs on a goroutine locked to a thread of its own, so that thread's
// CPU is the client's.
func cpuTimedGet(ctx context.Context, url string, size int64, up, server *proc) (float64, cpuUse, error) {
	_, up0 := up.status()
	_, self0 := pidStatus(os.Getpid())
	var srv0 float64
	if server != nil {
		_, srv0 = server.status()
	}
	type res struct {
		dt, client float64
		err        error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		c0 := threadCPU()
		dt, err := timedGet(ctx, url, size)
		ch <- res{dt, threadCPU() - c0, err}
	}()
	r := <-ch
	_, up1 := up.status()
	_, self1 := pidStatus(os.Getpid())
	u := cpuUse{Wall: r.dt, Upstream: up1 - up0, Client: r.client}
	u.Counter = max(0, self1-self0-r.client)
	if server != nil {
		_, srv1 := server.status()
		u.Server = srv1 - srv0
	}
	u.Total = u.Upstream + u.Counter + u.Server + u.Client
	return r.dt, u, r.err
}

// medianCPU is the field-wise median of runs.
func medianCPU(runs []cpuUse) cpuUse {
	f := func(get func(cpuUse) float64) float64 {
		xs := make([]float64, len(runs))
		for i, r := range runs {
			xs[i] = get(r)
		}
		return median(xs)
	}
	return cpuUse{
		Wall: f(func(c cpuUse) float64 { return c.Wall }), Upstream: f(func(c cpuUse) float64 { return c.Upstream }),
		Counter: f(func(c cpuUse) float64 { return c.Counter }), Server: f(func(c cpuUse) float64 { return c.Server }),
		Client: f(func(c cpuUse) float64 { return c.Client }), Total: f(func(c cpuUse) float64 { return c.Total }),
	}
}

// cpuSummary is the per-path medians as lines, paths in a fixed order.
func cpuSummary(m map[string]cpuUse) string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "  %s: %s\n", n, m[n])
	}
	return b.String()
}

// hashSeconds is the fastest of three SHA-256 runs over size bytes on one
// thread of this machine (crypto/sha256, with the CPU's SHA extensions
// where it has them): no verifying server can have checked a blob's
// digest, and so release its last byte, sooner than this after its first.
func hashSeconds(size int64) float64 {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 131)
	}
	best := 0.0
	for r := range 3 {
		h := sha256.New()
		t0 := time.Now()
		for n := size; n > 0; n -= int64(len(buf)) {
			h.Write(buf[:min(n, int64(len(buf)))])
		}
		h.Sum(nil)
		if dt := time.Since(t0).Seconds(); r == 0 || dt < best {
			best = dt
		}
	}
	return best
}
