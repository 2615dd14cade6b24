package upstream

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

func limitedClient(t *testing.T, u *upstreamReg, opts Options) *Client {
	t.Helper()
	c, err := New([]config.Registry{{Name: u.host(), Endpoints: []string{u.front.URL}}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNotFoundRemembered: a flood of requests for a digest the upstream
// does not have reaches it once per repository and TTL.
func TestNotFoundRemembered(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	img := u.push(t, "real/one", "v1", 1024)
	have, _ := layerOf(t, img)
	c := limitedClient(t, u, Options{NotFoundTTL: time.Hour})
	missing := digest.FromString("nowhere")
	for range 50 {
		if _, _, err := c.FetchBlob(testCtx(t), repoOf(c, "real/one").Blob(missing), 0); !errors.Is(err, oci.ErrBlobUnknown) {
			t.Fatalf("fetch of a missing blob: %v", err)
		}
		if _, _, err := c.GetManifest(testCtx(t), repoOf(c, "real/one").Manifest("nosuchtag")); !errors.Is(err, oci.ErrManifestUnknown) {
			t.Fatalf("fetch of a missing tag: %v", err)
		}
	}
	if n := len(u.fault.requests("/blobs/" + missing.String())); n != 1 {
		t.Errorf("50 fetches of a missing blob reached the upstream %d times, want 1", n)
	}
	if n := len(u.fault.requests("/manifests/nosuchtag")); n != 1 {
		t.Errorf("50 fetches of a missing tag reached the upstream %d times, want 1", n)
	}
	// Another repository is another question; content that exists is
	// never remembered as missing.
	if _, _, err := c.FetchBlob(testCtx(t), repoOf(c, "real/two").Blob(missing), 0); !errors.Is(err, oci.ErrBlobUnknown) {
		t.Fatal(err)
	}
	if n := len(u.fault.requests("/blobs/" + missing.String())); n != 2 {
		t.Errorf("a second repository: %d upstream requests, want 2", n)
	}
	for range 3 {
		rc, _, err := c.FetchBlob(testCtx(t), repoOf(c, "real/one").Blob(have), 0)
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}
	if n := len(u.fault.requests("/blobs/" + have.String())); n != 3 {
		t.Errorf("3 fetches of a present blob: %d upstream requests, want 3", n)
	}
}

func TestNotFoundForgottenAfterTTL(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	c := limitedClient(t, u, Options{NotFoundTTL: time.Nanosecond})
	missing := digest.FromString("nowhere")
	for range 3 {
		c.FetchBlob(testCtx(t), repoOf(c, "a/b").Blob(missing), 0)
		time.Sleep(time.Millisecond) // past the 1ns TTL
	}
	if n := len(u.fault.requests("/blobs/" + missing.String())); n != 3 {
		t.Errorf("with the TTL past, %d upstream requests, want 3", n)
	}
}

// TestFetchLimitQueues: past MaxConcurrent requests wait (a body holds its
// slot until closed); past MaxQueued waiting, a request fails at once with
// TOOMANYREQUESTS; a waiter whose context ends leaves the queue.
func TestFetchLimitQueues(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	img := u.push(t, "a/b", "v1", 1024)
	d, _ := layerOf(t, img)
	c := limitedClient(t, u, Options{MaxConcurrent: 1, MaxQueued: 1})
	repo := repoOf(c, "a/b")
	held, _, err := c.FetchBlob(testCtx(t), repo.Blob(d), 0)
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() {
		rc, _, err := c.FetchBlob(testCtx(t), repo.Blob(d), 0)
		if err == nil {
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
		}
		waited <- err
	}()
	for deadline := time.Now().Add(20 * time.Second); c.fetches.queued.Load() != 1; { // until the goroutine waits
		if time.Now().After(deadline) {
			t.Fatal("the second fetch never queued")
		}
		time.Sleep(time.Millisecond)
	}
	_, _, err = c.FetchBlob(testCtx(t), repo.Blob(d), 0)
	if !errors.Is(err, oci.ErrTooManyRequests) || !strings.Contains(err.Error(), "retry later") {
		t.Fatalf("third fetch with one slot and one queued: %v, want too many requests", err)
	}
	select {
	case err := <-waited:
		t.Fatalf("the queued fetch ended while the slot was held: %v", err)
	default:
	}
	held.Close()
	if err := <-waited; err != nil {
		t.Fatalf("queued fetch after the slot freed: %v", err)
	}
	// A waiter whose client left stops waiting.
	held, _, _ = c.FetchBlob(testCtx(t), repo.Blob(d), 0)
	defer held.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := c.FetchBlob(ctx, repo.Blob(d), 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiter past its deadline: %v", err)
	}
	if q := c.fetches.queued.Load(); q != 0 {
		t.Errorf("%d left in the queue", q)
	}
}
