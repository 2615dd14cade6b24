package cache

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-registry/berth/pkg/metrics"
)

// logSink is a log sink the fill goroutine and the test share.
type logSink struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *logSink) lines(msg string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(s.b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// A fill logs when it starts (digest, repository), its progress while it
// runs (bytes, size, rate, source, readers), and its end; its duration and
// size reach the fill histograms.
func TestFillLogsStartProgressAndEnd(t *testing.T) {
	var logs logSink
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, 10)
	s, err := Open(t.TempDir(), Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Metrics: m, ProgressInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	data, d := randomBlob(t, 1<<20)
	src := newGated(data)
	b, err := s.Fill(t.Context(), d, FillMeta{Repo: "r.example/team/app"}, src.open)
	if err != nil {
		t.Fatal(err)
	}
	if got := logs.lines("fill started"); len(got) != 1 || got[0]["digest"] != d.String() || got[0]["repo"] != "r.example/team/app" {
		t.Fatalf("fill started lines %v", got)
	}
	pw := <-src.pw
	if _, err := pw.Write(data[:1000]); err != nil {
		t.Fatal(err)
	}
	// Progress lines come while the fill waits for its source.
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := logs.lines("fill progress")
		if len(p) > 0 && p[len(p)-1]["bytes"] == float64(1000) {
			l := p[len(p)-1]
			if l["size"] != float64(len(data)) || l["source"] != "test" || l["readers"] != float64(1) || !strings.HasSuffix(l["rate"].(string), "MB/s") {
				t.Errorf("progress line %v", l)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress line at 1000 bytes: %v", p)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline: the ticker decides
	}
	if _, err := pw.Write(data[1000:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if got, err := readAll(t, b); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	for deadline := time.Now().Add(10 * time.Second); len(logs.lines("fill")) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no end line")
		}
		time.Sleep(10 * time.Millisecond)
	}
	mfs, _ := reg.Gather()
	seen := 0
	for _, mf := range mfs {
		switch mf.GetName() {
		case "berth_fill_size_bytes":
			seen++
			h := mf.GetMetric()[0].GetHistogram()
			if len(mf.GetMetric()) != 1 || h.GetSampleCount() != 1 || h.GetSampleSum() != float64(len(data)) {
				t.Errorf("fill size: %d samples summing %v, want 1 of %d", h.GetSampleCount(), h.GetSampleSum(), len(data))
			}
		case "berth_fill_duration_seconds":
			seen++
			if len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetHistogram().GetSampleCount() != 1 {
				t.Errorf("fill duration: %v", mf.GetMetric())
			}
		}
	}
	if seen != 2 {
		t.Errorf("fill histograms gathered: %d, want 2", seen)
	}
}
