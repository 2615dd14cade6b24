package server_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"testing"

	"github.com/berth-registry/berth/pkg/server"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// syncBuffer is a bytes.Buffer safe for the server's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines parses every line as a JSON object.
func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(s.b.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func TestLogsOneLinePerFetchAtInfoAndPerRequestAtDebug(t *testing.T) {
	up := upstreamtest.New(t)
	img, err := random.Image(64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	up.Push(t, "log/app", "v1", img)
	blobs, size := imageBlobs(t, img)

	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo} {
		t.Run(level.String(), func(t *testing.T) {
			var buf syncBuffer
			log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level}))
			srv, err := server.New(testConfig(t, up), log)
			if err != nil {
				t.Fatal(err)
			}
			ln := listen(t)
			stop := serve(t, srv, server.Listeners{HTTP: ln})
			base := "http://" + ln.Addr().String()
			requests := 0
			for range 2 { // cold, then warm: fetches only the first time
				if resp, _ := get(t, http.MethodGet, base+"/v2/log/app/manifests/v1", "Accept", manifestAccept); resp.StatusCode != 200 {
					t.Fatalf("manifest: %d", resp.StatusCode)
				}
				requests++
				for _, b := range blobs {
					if resp, body := get(t, http.MethodGet, base+"/v2/log/app/blobs/"+b); resp.StatusCode != 200 || sha(body) != b {
						t.Fatalf("blob %s: %d", b, resp.StatusCode)
					}
					requests++
				}
			}
			stop() // fills have logged once the store is closed

			fills, reqs := map[string]int{}, 0
			var fillBytes float64
			for _, l := range buf.lines(t) {
				switch l["msg"] {
				case "fill":
					if l["level"] != "INFO" || l["component"] != "cache" || l["source"] != "upstream" {
						t.Errorf("fill line: %v", l)
					}
					fills[l["digest"].(string)]++
					fillBytes += l["bytes"].(float64)
				case "request":
					if l["level"] != "DEBUG" || l["component"] != "api" || l["status"] != float64(200) || l["method"] != "GET" {
						t.Errorf("request line: %v", l)
					}
					reqs++
				}
			}
			if len(fills) != len(blobs) || fillBytes != size {
				t.Errorf("fill lines for %d digests, %v bytes; want %d, %v", len(fills), fillBytes, len(blobs), size)
			}
			for _, b := range blobs {
				if fills[b] != 1 {
					t.Errorf("blob %s: %d fill lines, want 1", b, fills[b])
				}
			}
			wantReqs := requests
			if level > slog.LevelDebug {
				wantReqs = 0
			}
			if reqs != wantReqs {
				t.Errorf("%d request lines, want %d", reqs, wantReqs)
			}
		})
	}
}
