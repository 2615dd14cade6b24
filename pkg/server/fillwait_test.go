package server_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/test/upstreamtest"
)

// TestFillingBlobQueuesLittleInAStalledClientsSocket: the response of a
// blob still filling keeps at most unsentMax (512 KiB) queued unsent in
// a stalled client's socket, not the megabytes the kernel lets a send
// buffer grow to: 500 slow clients of one blob held a gigabyte of the
// host's TCP memory. Measured on the server socket's send queue
// (/proc/net/tcp tx_queue) once the reader waits, not timed.
func TestFillingBlobQueuesLittleInAStalledClientsSocket(t *testing.T) {
	t.Parallel()
	up := upstreamtest.New(t)
	path, _ := pushBigLayer(t, up, "big/queue")
	n := startNode(t, up)
	release := up.Gate() // 8 MiB land, far more than any socket holds
	t.Cleanup(release)
	c := rawGet(t, n.URL, path)
	server := strings.TrimPrefix(n.URL, "http://")
	var queued, last int64 = -1, -2
	for deadline := time.Now().Add(time.Minute); queued != last; time.Sleep(200 * time.Millisecond) {
		last, queued = queued, sendQueue(t, server, c.LocalAddr().String())
		if time.Now().After(deadline) {
			t.Fatalf("the server's send queue still moves after a minute: %d bytes", queued)
		}
	}
	if queued > 768<<10 {
		t.Errorf("a stalled client of a filling blob: %d bytes queued in the server's socket, want at most 512 KiB unsent plus the client's window", queued)
	}
	t.Logf("a stalled client of a filling blob: %d bytes queued in the server's socket", queued)
}

// TestWaitingClientsOfAFillingBlobCostTwoGoroutinesEach: a client of a
// blob in flight costs the two goroutines net/http gives its connection
// (the handler and its background read) and none of berth's. At 500
// clients their stacks are 10 MB of berth's peak RSS (test/bench -figures
// rss500 -pprof); one more goroutine per client would add 1-4 MiB. Counted
// once the clients' handlers serve the blob, from a batch to the next, not
// timed. Not parallel, so that no other test's goroutines come and go.
func TestWaitingClientsOfAFillingBlobCostTwoGoroutinesEach(t *testing.T) {
	up := upstreamtest.New(t)
	path, _ := pushBigLayer(t, up, "big/goroutines")
	n := startNode(t, up)
	release := up.Gate() // 8 MiB land; the fill and its clients wait for the rest
	t.Cleanup(release)
	const batch = 8
	var before int
	for stage := 1; stage <= 2; stage++ {
		for range batch {
			rawGet(t, n.URL, path)
		}
		waitFillingHandlers(t, stage*batch)
		if stage == 1 {
			before = runtime.NumGoroutine()
		}
	}
	if added := runtime.NumGoroutine() - before; added > 2*batch {
		var dump strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&dump, 1)
		t.Errorf("%d more clients of a filling blob added %d goroutines, want at most 2 each:\n%s", batch, added, dump.String())
	}
}

// waitFillingHandlers waits (a minute at most) until want handlers serve a
// blob still filling (in Blob.SendTo: waiting for its bytes or sending them).
func waitFillingHandlers(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var dump strings.Builder
		if err := pprof.Lookup("goroutine").WriteTo(&dump, 1); err != nil {
			t.Fatal(err)
		}
		got := 0
		_, groups, _ := strings.Cut(dump.String(), "\n") // after "goroutine profile: total N"
		for _, g := range strings.Split(groups, "\n\n") {
			if strings.Contains(g, "cache.(*Blob).SendTo+") { // the function itself, not one it started
				n, _ := strconv.Atoi(strings.Fields(g)[0]) // "N @ 0x..." counts goroutines with this stack
				got += n
			}
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d handlers serve the filling blob after a minute, want %d", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pushBigLayer pushes repo:v1, an image of one 16 MiB random layer, and
// returns the layer's blob path on a registry and its size.
func pushBigLayer(t *testing.T, up *upstreamtest.Registry, repo string) (string, int64) {
	t.Helper()
	_, dg, size := up.PushLayer(t, repo, 16<<20)
	return "/v2/" + repo + "/blobs/" + dg.String(), size
}

// sendQueue reads the send queue (tx_queue: bytes the peer has not taken)
// of the IPv4 TCP socket from local to remote from /proc/net/tcp.
func sendQueue(t *testing.T, local, remote string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	hexAddr := func(a string) string {
		ap := netip.MustParseAddrPort(a)
		ip := ap.Addr().As4()
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ap.Port())
	}
	l, r := hexAddr(local), hexAddr(remote)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[1] == l && f[2] == r {
			tx, _, _ := strings.Cut(f[4], ":")
			n, err := strconv.ParseInt(tx, 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no socket %s -> %s in /proc/net/tcp", local, remote)
	return 0
}

// TestWriteTimeoutCutsAStalledClientOfAFillingBlob: a client that stops
// reading a blob still filling is cut after listen.writeTimeout, with its
// socket's unsent bytes bounded, while the fill is still under way.
func TestWriteTimeoutCutsAStalledClientOfAFillingBlob(t *testing.T) {
	t.Parallel()
	up := upstreamtest.New(t)
	path, size := pushBigLayer(t, up, "big/cut")
	n := startNode(t, up, func(c *config.Config) { c.Listen.WriteTimeout = config.Duration(time.Second) })
	release := up.Gate() // the fill stays half way: the stalled client is cut, not served to the end
	t.Cleanup(release)
	c := rawGet(t, n.URL, path)
	time.Sleep(5 * time.Second) // the client stalls past the write timeout: that is the test
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.Copy(io.Discard, c)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("read after the stall: %v (%d bytes): the server kept the connection", err, got)
	}
	if got >= size/2 {
		t.Fatalf("a client that stopped reading for 5s got %d bytes, all that had landed", got)
	}
}

// TestWriteTimeoutSparesAClientWaitingForTheFill: a client that takes every
// byte as it lands is not cut when the fill pauses for longer than
// listen.writeTimeout: the time its reader waits for bytes is not the
// client's.
func TestWriteTimeoutSparesAClientWaitingForTheFill(t *testing.T) {
	t.Parallel()
	up := upstreamtest.New(t)
	path, size := pushBigLayer(t, up, "big/pause")
	n := startNode(t, up, func(c *config.Config) { c.Listen.WriteTimeout = config.Duration(time.Second) })
	release := up.Gate()
	t.Cleanup(release)
	c := rawGet(t, n.URL, path)
	c.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("response: %v %v", resp, err)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, resp.Body, size/4); err != nil { // the client keeps up with the fill
		t.Fatal(err)
	}
	go func() {
		time.Sleep(3 * time.Second) // the fill pauses three write timeouts: that is the test
		release()
	}()
	if _, err := io.Copy(h, resp.Body); err != nil {
		t.Fatalf("a client that kept up with a paused fill was cut: %v", err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); !strings.HasSuffix(path, "/"+got) {
		t.Fatalf("got %s, want the digest of %s", got, path)
	}
}
