//go:build bench

package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"sort"
	"syscall"
	"time"
)

var client = &http.Client{Transport: &http.Transport{
	DisableCompression: true, MaxIdleConnsPerHost: 64, ReadBufferSize: 256 << 10,
}}

// farClient is client with each socket's receive buffer fixed at 256 KiB,
// as if every client were on a host of its own, for the peak-RSS run's 500
// clients. On the server's host, with the kernel growing each of their
// receive buffers to megabytes, they held up to a gigabyte of its TCP
// memory (ss -tm), next to berth's send queues, past tcp_mem's pressure
// mark (nstat: TCPMemoryPressures, TCPRcvQDrop), where the kernel drops
// segments: new clients' requests, retransmitted with backoff, reached
// berth after its 30 s read-header timeout.
var farClient = &http.Client{Transport: &http.Transport{
	DisableCompression: true, MaxIdleConnsPerHost: 64, ReadBufferSize: 256 << 10,
	DialContext: (&net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 256<<10)
		}); cerr != nil {
			return cerr
		}
		return err
	}}).DialContext,
}}

// get reads url to the end and returns the byte count; when want is set
// the bytes are hashed and must match it.
func get(ctx context.Context, url, want string) (int64, error) {
	return getSized(ctx, client, url, want, 1<<20)
}

// getSized is get through hc with reads of bufSize bytes.
func getSized(ctx context.Context, hc *http.Client, url, want string, bufSize int) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("GET %s: %s %s", url, resp.Status, b)
	}
	var w io.Writer = io.Discard
	var h hash.Hash
	if want != "" {
		h = sha256.New()
		w = h
	}
	buf := make([]byte, bufSize)
	n, err := io.CopyBuffer(struct{ io.Writer }{w}, resp.Body, buf) // no ReadFrom: reads of bufSize
	if err != nil {
		return n, fmt.Errorf("GET %s: %w", url, err)
	}
	if h != nil {
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want {
			return n, fmt.Errorf("GET %s: digest %s, want %s", url, got, want)
		}
	}
	return n, nil
}

// getManifest GETs a manifest (OCI image manifest accepted) and returns
// its Docker-Content-Digest and body.
func getManifest(ctx context.Context, url string) (string, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", nil, err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := client.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s %s", url, resp.Status, b)
	}
	return resp.Header.Get("Docker-Content-Digest"), b, err
}

const manifestAccept = "application/vnd.oci.image.manifest.v1+json"

// manifestURL is the manifest's URL (by tag or digest) at addr.
func manifestURL(addr, repo, ref string) string {
	return fmt.Sprintf("http://%s/v2/%s/manifests/%s", addr, repo, ref)
}

// blobURL is the blob's URL on a registry or mirror at addr.
func blobURL(addr, repo, d string) string {
	return fmt.Sprintf("http://%s/v2/%s/blobs/%s", addr, repo, d)
}

// pullImage pulls repo:tag from addr as containerd does: the manifest by
// tag, then the config and layers, par at a time, every blob verified.
func pullImage(ctx context.Context, addr string, img *image, par int) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet,
		fmt.Sprintf("http://%s/v2/%s/manifests/%s", addr, img.Repo, img.Tag), nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	var m struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	err = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		return fmt.Errorf("manifest from %s: %s %v", addr, resp.Status, err)
	}
	ds := []string{m.Config.Digest}
	for _, l := range m.Layers {
		ds = append(ds, l.Digest)
	}
	sem := make(chan struct{}, par)
	errs := make(chan error, len(ds))
	for _, d := range ds {
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			_, err := get(ctx, blobURL(addr, img.Repo, d), d)
			errs <- err
		}()
	}
	for range ds {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	return err
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread describes a[i] ÷ b[i], GETs of the same round: its median,
// quartiles and range. On a shared machine one round's ratio can be
// anywhere from half to double; the median of a run moves with the load.
func spread(a, b []float64) string {
	var r []float64
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			r = append(r, a[i]/b[i])
		}
	}
	if len(r) == 0 {
		return "no rounds"
	}
	sort.Float64s(r)
	q := func(p float64) float64 { return r[int(p*float64(len(r)-1)+0.5)] }
	return fmt.Sprintf("median %.2f, quartiles %.2f–%.2f, range %.2f–%.2f (%d rounds)", median(r), q(0.25), q(0.75), r[0], r[len(r)-1], len(r))
}
