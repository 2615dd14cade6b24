//go:build bench

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// berthLog is the log section of the berth config the bench writes: warn,
// or debug as JSON lines with -timeline (one line per request, fill and
// prefetch step, which the timeline reads back).
var berthLog = "log:\n  level: warn\n"

// logLine is one line of berth's JSON log, the fields the timeline reads.
type logLine struct {
	Time     time.Time `json:"time"`
	Msg      string    `json:"msg"`
	Digest   string    `json:"digest"`
	Method   string    `json:"method"`
	Path     string    `json:"path"`
	Status   int       `json:"status"`
	Bytes    int64     `json:"bytes"`
	Duration float64   `json:"duration"` // seconds
	Err      string    `json:"err"`
	Result   string    `json:"result"`
}

// span is one interval of the timeline, in seconds from the pull's start.
type span struct {
	what       string
	start, end float64
	bytes      int64
}

func (s span) String() string {
	rate := ""
	if s.bytes > 0 && s.end > s.start {
		rate = fmt.Sprintf(" %4.0f MB/s", float64(s.bytes)/(s.end-s.start)/1e6)
	}
	return fmt.Sprintf("%s %6.3f–%6.3f%s", s.what, s.start, s.end, rate)
}

// writeTimeline writes, for one pull that started at t0, a line per blob
// of img (config first, then the layers in order): the upstream's GETs of
// it (start–end, rate), and through berth (its log, when logFile is not
// ""): when a prefetch was queued and started, the fill (start–end) and
// every client request of it, with how it was served: "joined" an
// in-flight fill, "hit" a stored blob, or "own" (the fill started for it).
func writeTimeline(file string, t0 time.Time, img *image, ups []upEvent, logFile, head string) error {
	sec := func(t time.Time) float64 { return t.Sub(t0).Seconds() }
	var lines []logLine
	if logFile != "" {
		f, err := os.Open(logFile)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l logLine
			if json.Unmarshal(sc.Bytes(), &l) == nil && !l.Time.Before(t0) {
				lines = append(lines, l)
			}
		}
		f.Close()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# seconds from the pull's start (%s); rates in MB/s\n# %s\n", t0.UTC().Format(time.RFC3339Nano), head)
	// Manifests: the upstream's requests and berth's answers.
	for _, u := range ups {
		if strings.Contains(u.Path, "/manifests/") {
			fmt.Fprintf(&b, "upstream %-4s %s %d %s\n", u.Method, shortPath(u.Path), u.Status, span{"", sec(u.Start), sec(u.End), 0})
		}
	}
	for _, l := range lines {
		if l.Msg == "request" && strings.Contains(l.Path, "/manifests/") {
			fmt.Fprintf(&b, "client   %-4s %s %d %s\n", l.Method, shortPath(l.Path), l.Status, span{"", sec(l.Time.Add(-time.Duration(l.Duration * 1e9))), sec(l.Time), 0})
		}
	}
	blobs := append([]blob{img.Config}, img.Layers...)
	for i, bl := range blobs {
		name := fmt.Sprintf("L%d", i-1)
		if i == 0 {
			name = "cfg"
			if bl.Digest == "" {
				continue
			}
		}
		fmt.Fprintf(&b, "\n%s %s %d MiB\n", name, bl.Digest[7:19], bl.Size>>20)
		for _, u := range ups {
			if u.Method == "GET" && strings.HasSuffix(u.Path, bl.Digest) {
				fmt.Fprintf(&b, "  upstream GET %s %s\n", u.Range, span{"", sec(u.Start), sec(u.End), u.Bytes})
			}
		}
		var fill *span
		for _, l := range lines {
			if l.Digest != bl.Digest {
				continue
			}
			switch l.Msg {
			case "prefetch queued", "prefetch start", "prefetch skipped, under way":
				fmt.Fprintf(&b, "  %-15s %6.3f\n", l.Msg, sec(l.Time))
			case "prefetch end":
				fmt.Fprintf(&b, "  %-15s %6.3f %s\n", l.Msg, sec(l.Time), l.Result+l.Err)
			case "fill started":
				fill = &span{what: "fill", start: sec(l.Time), end: -1}
			case "fill", "fill failed":
				st := 0.0
				if fill != nil {
					st = fill.start
				}
				fill = &span{what: l.Msg, start: st, end: sec(l.Time), bytes: bl.Size}
				fmt.Fprintf(&b, "  berth %s\n", fill)
			}
		}
		for _, l := range lines {
			if l.Msg != "request" || !strings.HasSuffix(l.Path, bl.Digest) {
				continue
			}
			s := span{what: l.Method, start: sec(l.Time.Add(-time.Duration(l.Duration * 1e9))), end: sec(l.Time), bytes: l.Bytes}
			how := "own"
			switch {
			case fill == nil || fill.end >= 0 && fill.end <= s.start:
				how = "hit"
			case fill.start < s.start-0.002:
				how = "joined"
			}
			fmt.Fprintf(&b, "  client %s %d, %s\n", s, l.Status, how)
		}
	}
	return os.WriteFile(file, []byte(b.String()), 0o644)
}

// shortPath shortens the digests in a registry path to 12 hex digits.
func shortPath(p string) string {
	if i := strings.Index(p, "sha256:"); i >= 0 && len(p) >= i+19 {
		return p[:i+19]
	}
	return p
}
