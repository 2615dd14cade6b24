package server_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// bigBlob pushes an image with one layer of about size bytes and returns
// the layer's digest and size, warm in the node's store.
func bigBlob(t *testing.T, up *upstreamtest.Registry, n *node, size int64) (string, int64) {
	t.Helper()
	_, dg, size := up.PushLayer(t, "big/one", size)
	if resp, body := get(t, http.MethodGet, n.URL+"/v2/big/one/blobs/"+dg.String()); resp.StatusCode != 200 || int64(len(body)) != size {
		t.Fatalf("warm: %d, %d bytes", resp.StatusCode, len(body))
	}
	return dg.String(), size
}

// rawGet sends a GET on a fresh connection with a small receive buffer and
// returns the connection with the response not read.
func rawGet(t *testing.T, baseURL, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(baseURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.(*net.TCPConn).SetReadBuffer(32 << 10)
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: berth\r\n\r\n", path)
	return c
}

// TestWriteTimeoutCutsAStalledClient: a client that stops reading a large
// blob is cut after listen.writeTimeout, not held for as long as it likes.
func TestWriteTimeoutCutsAStalledClient(t *testing.T) {
	t.Parallel()
	up := upstreamtest.New(t)
	n := startNode(t, up, func(c *config.Config) { c.Listen.WriteTimeout = config.Duration(time.Second) })
	dg, size := bigBlob(t, up, n, 16<<20)
	c := rawGet(t, n.URL, "/v2/big/one/blobs/"+dg)
	time.Sleep(5 * time.Second) // the client stalls past the write timeout: that is the test
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.Copy(io.Discard, c)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("read after the stall: %v", err)
	}
	if got >= size {
		t.Fatalf("a client that stopped reading for 5s got all %d bytes: the server waited for it", got)
	}
}

// TestWriteTimeoutSparesASlowClient: a client that reads slowly but keeps
// reading gets every byte, though the whole download takes many times
// listen.writeTimeout.
func TestWriteTimeoutSparesASlowClient(t *testing.T) {
	t.Parallel()
	up := upstreamtest.New(t)
	n := startNode(t, up, func(c *config.Config) { c.Listen.WriteTimeout = config.Duration(3 * time.Second) })
	dg, _ := bigBlob(t, up, n, 8<<20)
	c := rawGet(t, n.URL, "/v2/big/one/blobs/"+dg)
	br := bufio.NewReaderSize(c, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("response: %v %v", resp, err)
	}
	h := sha256.New()
	start := time.Now()
	for {
		// 1 MiB a second: about 8s for the blob, nearly three write
		// timeouts, each pause 2s short of one (slack for a loaded machine).
		n, err := io.CopyN(h, resp.Body, 1<<20)
		if err == io.EOF || n == 0 {
			break
		}
		if err != nil {
			t.Fatalf("slow read cut after %s: %v", time.Since(start), err)
		}
		time.Sleep(time.Second) // a slow client: that is the test
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != dg {
		t.Fatalf("slow client got %s, want %s", got, dg)
	}
	if el := time.Since(start); el < 6*time.Second {
		t.Logf("the download took only %s; the test meant it to outlast the write timeout", el)
	}
}

// TestMaxConnsClosesIdleForNew: at listen.maxConns, an idle keep-alive
// connection is closed so a new client is served.
func TestMaxConnsClosesIdleForNew(t *testing.T) {
	t.Parallel()
	up := upstreamtest.New(t)
	n := startNode(t, up, func(c *config.Config) { c.Listen.MaxConns = 3 })
	var clients []*http.Client
	for range 6 { // each client keeps its own idle connection
		cl := &http.Client{Transport: &http.Transport{}, Timeout: 20 * time.Second}
		defer cl.CloseIdleConnections()
		resp, err := cl.Get(n.URL + "/v2/")
		if err != nil {
			t.Fatalf("client %d: %v", len(clients), err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("client %d: %d", len(clients), resp.StatusCode)
		}
		clients = append(clients, cl)
	}
}

// TestAuditRecordsOnlyContentServed: the audit record lists what clients
// were sent, not what they asked for: a 404, a blob HEAD or a manifest
// HEAD by digest add nothing; a GET and a tag resolved by HEAD do.
func TestAuditRecordsOnlyContentServed(t *testing.T) {
	t.Parallel()
	up := upstreamtest.New(t)
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	md := up.Push(t, "real/app", "v1", img)
	n := startNode(t, up)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	missing := "sha256:" + strings.Repeat("0", 64)
	// The handler audits a response once it has sent it, so the client can
	// have the last byte first: each request here ends only when the
	// server closes its connection, after the handler returned.
	for _, rq := range []struct{ method, path string }{
		{http.MethodGet, "/v2/real/app/blobs/" + missing},          // 404
		{http.MethodGet, "/v2/junk/name/manifests/nosuchtag"},      // 404
		{http.MethodGet, "/v2/junk/name/blobs/" + missing},         // 404
		{http.MethodHead, "/v2/real/app/blobs/" + ld.String()},     // a HEAD sends no content
		{http.MethodHead, "/v2/real/app/manifests/" + md.String()}, // nor a HEAD by digest
	} {
		getHandled(t, rq.method, n.URL+rq.path)
	}
	if got, err := n.Store().Audit(); err != nil || len(got) != 0 {
		t.Fatalf("audit after 404s and HEADs: %v %s", err, fmt.Sprint(got))
	}
	getHandled(t, http.MethodHead, n.URL+"/v2/real/app/manifests/v1")
	if code := getHandled(t, http.MethodGet, n.URL+"/v2/real/app/blobs/"+ld.String()); code != http.StatusOK {
		t.Fatalf("GET blob: %d", code)
	}
	got, err := n.Store().Audit()
	if err != nil || len(got) != 1 {
		t.Fatalf("audit: %v %s", err, fmt.Sprint(got))
	}
	a := got[0]
	if a.Name != "real/app" || len(a.Tags) != 1 || a.Tags[0].Tag != "v1" || len(a.Blobs) != 1 || a.Blobs[0].Digest.String() != ld.String() || len(a.Manifests) != 0 {
		t.Fatalf("audit of real/app: %+v", a)
	}
}

// getHandled sends one request (with the manifest Accept header) on its
// own connection with "Connection: close" and reads until the server
// closes it, which net/http does only after the handler has returned. It
// returns the status.
func getHandled(t *testing.T, method, url string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", manifestAccept)
	req.Close = true
	conn, err := net.DialTimeout("tcp", req.URL.Host, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	if err := req.Write(conn); err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil { // to the server's close
		t.Fatalf("%s %s: waiting for the close: %v", method, url, err)
	}
	return resp.StatusCode
}
