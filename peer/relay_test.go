package peer

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestAdmitCopyBoundsCopies(t *testing.T) {
	t.Parallel()
	c := &Cluster{cfg: Config{Fanout: 2}}
	req := httptest.NewRequest(http.MethodGet, "/v2/a/blobs/sha256:0", nil) // unmarked: the asker is unknown
	d, other := digest.FromString("a"), digest.FromString("b")
	var releases []func()
	for i := range 4 {
		rel, ok := c.AdmitCopy(req, d)
		if !ok {
			t.Fatalf("copy %d of 4 refused", i+1)
		}
		releases = append(releases, rel)
	}
	if _, ok := c.AdmitCopy(req, d); ok {
		t.Fatal("a fifth copy admitted, over 2 x fan-out")
	}
	if rel, ok := c.AdmitCopy(req, other); !ok {
		t.Fatal("another blob's copy refused")
	} else {
		rel()
	}
	releases[0]()
	releases[0]() // twice: counts once
	rel, ok := c.AdmitCopy(req, d)
	if !ok {
		t.Fatal("a copy refused after one ended")
	}
	if _, ok := c.AdmitCopy(req, d); ok {
		t.Fatal("a double release freed two places")
	}
	rel()
	for _, r := range releases[1:] {
		r()
	}
	if n := len(c.relays.copies); n != 0 {
		t.Fatalf("%d blobs still counted after every copy ended", n)
	}
	var nilc *Cluster
	if rel, ok := nilc.AdmitCopy(req, d); !ok {
		t.Fatal("a node alone refused a copy")
	} else {
		rel()
	}
}

// TestAdmitCopyRefusesWhomItStreamsFrom: two nodes whose views of the
// membership differ may each take the other for its parent; the one whose
// own fetch streams from the asker answers busy instead of waiting on it.
func TestAdmitCopyRefusesWhomItStreamsFrom(t *testing.T) {
	t.Parallel()
	key := deriveKeys([]byte("s3cret")).marker
	c := &Cluster{cfg: Config{Fanout: 4}, sign: signer{key: key, node: "a", now: time.Now}}
	d := digest.FromString("x")
	fromB := httptest.NewRequest(http.MethodGet, "/v2/a/blobs/"+d.String(), nil)
	signer{key: key, node: "b", now: time.Now}.sign(fromB, modeRelay)
	fromC := httptest.NewRequest(http.MethodGet, "/v2/a/blobs/"+d.String(), nil)
	signer{key: key, node: "c", now: time.Now}.sign(fromC, modeRelay)

	body := &peerBody{}
	c.streamsFrom(d, "b", 0, -1, body)
	if _, ok := c.AdmitCopy(fromB, d); ok {
		t.Fatal("a relay request from the node this one streams from was admitted")
	}
	rel, ok := c.AdmitCopy(fromC, d)
	if !ok {
		t.Fatal("another node's relay request refused")
	}
	rel()
	body.onClose() // what Close runs
	if rel, ok := c.AdmitCopy(fromB, d); !ok {
		t.Fatal("refused after the stream from b ended")
	} else {
		rel()
	}
}
