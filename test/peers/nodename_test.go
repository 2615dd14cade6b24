package peers

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/test/nodetest"
	"github.com/berth-registry/berth/test/upstreamtest"
)

// Three nodes on one host with no peers.nodeName get names of their own (the
// host name alone would collide) and peer; each keeps its name in its cache.
func TestDefaultNodeNamesDifferOnOneHost(t *testing.T) {
	up := upstreamtest.New(t)
	gossip := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	nodes := make([]*node, len(gossip))
	for i := range nodes {
		nodes[i] = startNode(t, up, "", gossip[i], gossip, nodetest.Member{})
		nodes[i].Name = fmt.Sprintf("n%d", i)
	}
	waitPeers(t, nodes, 2)
	host, _ := os.Hostname()
	for _, n := range nodes {
		id, err := os.ReadFile(filepath.Join(n.Store().Root(), "node-id"))
		if err != nil || len(id) != 8 {
			t.Fatalf("%s: node-id %q %v", n.Name, id, err)
		}
		if got := n.NodeName(); got != host+"-"+string(id) {
			t.Errorf("%s: name %q, want %q", n.Name, got, host+"-"+string(id))
		}
		if code, body := readyz(t, n); code != http.StatusOK {
			t.Errorf("%s: /readyz %d %s", n.Name, code, body)
		}
	}
}

// Two nodes that share a name cannot peer; each says so on /readyz.
func TestSharedNodeNameIsNotReady(t *testing.T) {
	up := upstreamtest.New(t)
	gossip := []string{freeAddr(t), freeAddr(t)}
	nodes := []*node{
		startNode(t, up, "twin", gossip[0], gossip, nodetest.Member{}),
		startNode(t, up, "twin", gossip[1], gossip, nodetest.Member{}),
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range nodes {
		for {
			code, body := readyz(t, n)
			if code == http.StatusServiceUnavailable && namesTwin(body) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node at %s: /readyz %d %q, want 503 naming the shared name", n.Addr, code, body)
			}
			time.Sleep(100 * time.Millisecond) // polling with a deadline: gossip decides when
		}
	}
}

// namesTwin reports whether a 503 /readyz body, {"ready":false,
// "reasons":[...]}, gives the shared name as a reason.
func namesTwin(body string) bool {
	var r struct{ Reasons []string }
	if json.Unmarshal([]byte(body), &r) != nil {
		return false
	}
	return slices.ContainsFunc(r.Reasons, func(why string) bool { return strings.Contains(why, `uses this node's name "twin"`) })
}

func readyz(t *testing.T, n *node) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + n.Addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
