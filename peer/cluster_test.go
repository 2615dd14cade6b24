package peer

import (
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	dto "github.com/prometheus/client_model/go"
)

func hasMembers(c *Cluster, want map[string]string) func() bool {
	return func() bool { return maps.Equal(c.Members(), want) }
}

func TestJoinLeaveAndDead(t *testing.T) {
	t.Parallel()
	m := metrics.New(nil, 1)
	cfgA := testConfig("a", "127.0.0.1:5001", "s3cret")
	cfgA.Metrics = m
	a := start(t, cfgA)
	b := start(t, testConfig("b", "127.0.0.1:5002", "s3cret", a.GossipAddr()))
	c := start(t, testConfig("c", "127.0.0.1:5003", "s3cret\n", b.GossipAddr()))

	eventually(t, 10*time.Second, "a sees b and c", hasMembers(a, map[string]string{"b": "127.0.0.1:5002", "c": "127.0.0.1:5003"}))
	eventually(t, 10*time.Second, "c sees a and b", hasMembers(c, map[string]string{"a": "127.0.0.1:5001", "b": "127.0.0.1:5002"}))
	if !a.Ready() || !b.Ready() || !c.Ready() {
		t.Fatalf("ready: a %v b %v c %v", a.Ready(), b.Ready(), c.Ready())
	}
	if got := gauge(t, m); got != 2 {
		t.Fatalf("peers gauge = %v, want 2", got)
	}

	// A clean leave drops out at once (well before dead detection).
	if err := c.Close(time.Second); err != nil {
		t.Fatalf("close c: %v", err)
	}
	eventually(t, 3*time.Second, "a drops c after it left", hasMembers(a, map[string]string{"b": "127.0.0.1:5002"}))
	if got := gauge(t, m); got != 1 {
		t.Fatalf("peers gauge = %v, want 1", got)
	}

	// A crash is detected by probes.
	b.kill()
	eventually(t, 10*time.Second, "a drops b after it died", hasMembers(a, map[string]string{}))
	if got := gauge(t, m); got != 0 {
		t.Fatalf("peers gauge = %v, want 0", got)
	}
}

func TestWrongKeyNotAdmitted(t *testing.T) {
	t.Parallel()
	a := start(t, testConfig("a", "127.0.0.1:5001", "s3cret"))
	b := start(t, testConfig("b", "127.0.0.1:5002", "s3cret", a.GossipAddr()))
	x := start(t, testConfig("x", "127.0.0.1:5009", "wrong", a.GossipAddr(), b.GossipAddr()))
	plain := start(t, testConfig("plain", "127.0.0.1:5008", "", a.GossipAddr()))

	eventually(t, 10*time.Second, "a and b join", hasMembers(a, map[string]string{"b": "127.0.0.1:5002"}))
	eventually(t, 10*time.Second, "x and plain try twice", func() bool { return x.joinAttempts.Load() >= 2 && plain.joinAttempts.Load() >= 2 })
	for _, c := range []*Cluster{a, b} {
		if got := c.Members(); got["x"] != "" || got["plain"] != "" {
			t.Fatalf("%s admitted a node without the key: %v", c.Name(), got)
		}
	}
	if len(x.Members()) != 0 || x.Ready() || len(plain.Members()) != 0 || plain.Ready() {
		t.Fatalf("outsiders joined: x %v ready %v, plain %v ready %v", x.Members(), x.Ready(), plain.Members(), plain.Ready())
	}
	// Nobody ranks x, so nobody asks it; x asks nobody.
	d := digest.FromString("x")
	if _, _, err := x.FetchBlob(t.Context(), oci.Repo{Registry: "r", Name: "n"}.Blob(d), 0); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("x fetch: %v, want ErrNoPeer", err)
	}
	for _, m := range a.live() {
		if m.Name == "x" || m.Name == "plain" {
			t.Fatalf("a ranks %s", m.Name)
		}
	}
}

func TestAloneWorksAlone(t *testing.T) {
	t.Parallel()
	a := start(t, testConfig("a", ":5001", "s3cret"))
	if !a.Ready() {
		t.Fatal("a node without seeds is not ready")
	}
	// An unspecified advertise host becomes the gossip IP.
	if got := a.selfMember().HTTP; got != "127.0.0.1:5001" {
		t.Fatalf("advertised HTTP address %q, want 127.0.0.1:5001", got)
	}
	repo := oci.Repo{Registry: "r", Name: "n"}
	if _, _, err := a.FetchBlob(t.Context(), repo.Blob(digest.FromString("x")), 0); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("fetch alone: %v, want ErrNoPeer", err)
	}
	if _, _, err := a.FetchManifest(t.Context(), repo.Manifest(digest.FromString("x").String())); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("manifest alone: %v, want ErrNoPeer", err)
	}
	if _, err := a.ResolveTag(t.Context(), repo.Manifest("latest")); !errors.Is(err, ErrSelfOwner) {
		t.Fatalf("tag alone: %v, want ErrSelfOwner", err)
	}
}

func TestSeedsNamingOnlySelfIsReady(t *testing.T) {
	t.Parallel()
	addr := freePort(t)
	cfg := testConfig("a", "127.0.0.1:5001", "s3cret", addr)
	cfg.Bind = addr
	a := start(t, cfg)
	eventually(t, 5*time.Second, "a alone by its seeds is ready", a.Ready)
}

func TestRejoinFindsALateSeed(t *testing.T) {
	t.Parallel()
	seed := freePort(t)
	a := start(t, testConfig("a", "127.0.0.1:5001", "s3cret", seed))
	eventually(t, 5*time.Second, "a tried its seed", func() bool { return a.joinAttempts.Load() >= 1 })
	if a.Ready() {
		t.Fatal("ready before any seed answered")
	}
	cfg := testConfig("b", "127.0.0.1:5002", "s3cret")
	cfg.Bind = seed
	b := start(t, cfg)
	eventually(t, 10*time.Second, "a finds b on a later try", hasMembers(b, map[string]string{"a": "127.0.0.1:5001"}))
	eventually(t, 5*time.Second, "a ready", a.Ready)
	if diff := cmp.Diff(map[string]string{"b": "127.0.0.1:5002"}, a.Members()); diff != "" {
		t.Fatal(diff)
	}
}

func gauge(t *testing.T, m *metrics.Metrics) float64 {
	t.Helper()
	var pb dto.Metric
	if err := m.Peers.Write(&pb); err != nil {
		t.Fatal(err)
	}
	return pb.GetGauge().GetValue()
}
