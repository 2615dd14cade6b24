//go:build bench

package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// samplePeak watches pid's resident set (VmRSS) every 10 ms until done and
// keeps what it was made of at its highest: the kernel's per-mapping
// resident sizes (/proc/PID/smaps), summed by kind (the binary's text,
// read-only data and data, anonymous memory: the Go heap arenas, stacks
// and the runtime's own). It writes them to dir/name.peak-smaps.txt and
// prints the summary (and writes it into dir, unless dir is ""): where
// each MiB of the peak RSS is. Reading smaps costs berth next to nothing
// (the kernel walks its page tables), and it is read only when the RSS
// grew by 64 KiB since.
func samplePeak(ctx context.Context, pid int, dir, name string, done <-chan struct{}) {
	var best int64
	var bestText string
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if rss := vmRSS(pid); rss > best+64<<10 || (rss > best && bestText == "") {
			if s, ok := smapsSummary(pid); ok {
				best, bestText = rss, s
			}
		}
		select {
		case <-done:
			if bestText == "" {
				return
			}
			if dir != "" {
				file := filepath.Join(dir, name+".peak-smaps.txt")
				if err := os.WriteFile(file, []byte(bestText), 0o644); err != nil {
					fmt.Println("smaps:", err)
				}
			}
			fmt.Printf("%s: peak resident set (VmRSS %.1f MiB), by kind of mapping:\n%s", name, float64(best)/MiB, bestText)
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// vmRSS is pid's VmRSS in bytes, 0 when unknown.
func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// smapsSummary sums pid's resident KiB per kind of mapping: the
// executable's segments by permission (r-xp text, r--p read-only data,
// rw-p data), other files, and anonymous memory by size class (the Go
// heap reserves arenas of 64 MiB, 4 MiB-aligned; the rest is the
// runtime's off-heap structures and thread stacks).
func smapsSummary(pid int) (string, bool) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return "", false
	}
	defer f.Close()
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	kinds := map[string]int64{}
	var kind string
	var total int64
	s := bufio.NewScanner(f)
	for s.Scan() {
		fs := strings.Fields(s.Text())
		if len(fs) == 0 {
			continue
		}
		if strings.Contains(fs[0], "-") && !strings.HasSuffix(fs[0], ":") {
			kind = mappingKind(fs, exe)
			continue
		}
		if fs[0] == "Rss:" && len(fs) > 1 {
			kb, _ := strconv.ParseInt(fs[1], 10, 64)
			kinds[kind] += kb
			total += kb
		}
	}
	if s.Err() != nil || total == 0 {
		return "", false
	}
	var names []string
	for k := range kinds {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return kinds[names[i]] > kinds[names[j]] })
	var b strings.Builder
	fmt.Fprintf(&b, "  %-34s %8.1f MiB\n", "total", float64(total)/1024)
	for _, k := range names {
		if kinds[k] > 0 {
			fmt.Fprintf(&b, "  %-34s %8.1f MiB\n", k, float64(kinds[k])/1024)
		}
	}
	return b.String(), true
}

// mappingKind names one smaps mapping line's kind.
func mappingKind(fs []string, exe string) string {
	perm := ""
	if len(fs) > 1 {
		perm = fs[1]
	}
	path := ""
	if len(fs) > 5 {
		path = fs[5]
	}
	switch {
	case path == exe && exe != "":
		return "binary " + perm
	case strings.HasPrefix(path, "["):
		return path
	case path != "":
		return "file " + filepath.Base(path)
	}
	var lo, hi uint64
	if a, b, ok := strings.Cut(fs[0], "-"); ok {
		lo, _ = strconv.ParseUint(a, 16, 64)
		hi, _ = strconv.ParseUint(b, 16, 64)
	}
	if hi-lo >= 4<<20 && lo%(4<<20) == 0 {
		return "anon, Go heap arenas"
	}
	return "anon, other (runtime, threads)"
}

// memstatsSummary picks the lines of a /debug/pprof/heap?debug=1 answer's
// runtime.MemStats that say where the Go runtime's memory is: the heap in
// use and idle, goroutine stacks, the runtime's own structures, the
// heap's goal.
func memstatsSummary(heap string) string {
	var b strings.Builder
	for _, l := range strings.Split(heap, "\n") {
		for _, k := range []string{"# Sys ", "# HeapAlloc ", "# HeapInuse ", "# HeapIdle ", "# HeapReleased ", "# Stack ", "# MSpan ", "# MCache ", "# BuckHashSys ", "# GCSys ", "# OtherSys ", "# NextGC ", "# NumGC "} {
			if strings.HasPrefix(l, k) {
				b.WriteString("  memstats " + strings.TrimPrefix(l, "# ") + "\n")
			}
		}
	}
	return b.String()
}
