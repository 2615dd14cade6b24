package netns

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The client roles run inside a node's namespace and talk to that node's
// berth on 127.0.0.1, as containerd on the node would. They print results
// on stdout, one line each, and exit non-zero on failure.

// pullResult is the line "result {json}" of the pull role.
type pullResult struct {
	Manifest string           `json:"manifest"`
	Blobs    map[string]int64 `json:"blobs"` // verified digest -> size
}

var httpClient = &http.Client{
	Transport: &http.Transport{DisableCompression: true, Proxy: nil},
	Timeout:   2 * time.Minute,
}

// blobURL is base/v2/repo/blobs/d?ns=ns, as containerd asks a mirror.
func blobURL(base, ns, repo, d string) string {
	return base + "/v2/" + repo + "/blobs/" + d + "?ns=" + url.QueryEscape(ns)
}

// runPull is the "pull" role: print "armed", wait for a line on stdin,
// then pull -ref through -base: the manifest by tag, then its config and
// layers in parallel, each checked against its digest and size.
func runPull(args []string) error {
	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	base := fs.String("base", "http://127.0.0.1:5000", "berth URL")
	ns := fs.String("ns", "", "upstream registry name")
	ref := fs.String("ref", "", "repo:tag")
	if err := fs.Parse(args); err != nil {
		return err
	}
	repo, tag, _ := strings.Cut(*ref, ":")
	fmt.Println("armed")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fmt.Errorf("wait for go: %w", err)
	}
	ctx := context.Background()
	u := *base + "/v2/" + repo + "/manifests/" + tag + "?ns=" + url.QueryEscape(*ns)
	body, hdr, err := get(ctx, u, "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	if err != nil {
		return err
	}
	md := sha(body)
	if got := hdr.Get("Docker-Content-Digest"); got != md {
		return fmt.Errorf("manifest: Docker-Content-Digest %q, bytes hash to %s", got, md)
	}
	m, err := v1.ParseManifest(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	descs := append([]v1.Descriptor{m.Config}, m.Layers...)
	res := pullResult{Manifest: md, Blobs: map[string]int64{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(descs))
	for i, d := range descs {
		wg.Go(func() {
			b, _, err := get(ctx, blobURL(*base, *ns, repo, d.Digest.String()), "")
			switch {
			case err != nil:
				errs[i] = err
			case sha(b) != d.Digest.String() || int64(len(b)) != d.Size:
				errs[i] = fmt.Errorf("blob %s: got %d bytes hashing to %s, want %d", d.Digest, len(b), sha(b), d.Size)
			default:
				mu.Lock()
				res.Blobs[d.Digest.String()] = int64(len(b))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	out, _ := json.Marshal(res)
	fmt.Printf("result %s\n", out)
	return nil
}

// runBlob is the "blob" role: GET one blob, print "first N" once N bytes
// arrived, then read the rest and print "ok SIZE" if it hashes to -digest.
// With -armed it prints "armed" and waits for a line on stdin first.
func runBlob(args []string) error {
	fs := flag.NewFlagSet("blob", flag.ContinueOnError)
	base := fs.String("base", "http://127.0.0.1:5000", "berth URL")
	ns := fs.String("ns", "", "upstream registry name")
	repo := fs.String("repo", "", "repository")
	d := fs.String("digest", "", "blob digest")
	first := fs.Int("first", 64<<10, "bytes to read before saying so")
	armed := fs.Bool("armed", false, `print "armed" and wait for a line on stdin before the GET`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *armed {
		fmt.Println("armed")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			return fmt.Errorf("wait for go: %w", err)
		}
	}
	resp, err := httpClient.Get(blobURL(*base, *ns, *repo, *d))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("blob %s: %s", *d, resp.Status)
	}
	h := sha256.New()
	n, err := io.CopyN(h, resp.Body, int64(*first))
	if err != nil {
		return fmt.Errorf("blob %s: first bytes: %w", *d, err)
	}
	fmt.Printf("first %d\n", n)
	m, err := io.Copy(h, resp.Body)
	if err != nil {
		return fmt.Errorf("blob %s after %d bytes: %w", *d, n+m, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != *d {
		return fmt.Errorf("blob %s: %d bytes hash to %s", *d, n+m, got)
	}
	fmt.Printf("ok %d\n", n+m)
	return nil
}

// runWait is the "wait" role: poll -url until it answers 200 with a line
// equal to -line, or -timeout passes.
func runWait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	u := fs.String("url", "", "URL to poll")
	line := fs.String("line", "", "line the body must hold")
	timeout := fs.Duration("timeout", 30*time.Second, "bound")
	if err := fs.Parse(args); err != nil {
		return err
	}
	deadline := time.Now().Add(*timeout)
	last := ""
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		b, _, err := get(ctx, *u, "")
		cancel()
		if err == nil && hasLine(b, *line) {
			return nil
		}
		last = fmt.Sprint(err)
		time.Sleep(100 * time.Millisecond) // polling a server in another process
	}
	return fmt.Errorf("%s: no line %q after %s (last error %s)", *u, *line, *timeout, last)
}

// runHTTP is the "get" and "post" roles: one request, the body on stdout.
func runHTTP(method string, args []string) error {
	if len(args) != 1 {
		return errors.New("want one URL")
	}
	req, err := http.NewRequest(method, args[0], nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s", method, args[0], resp.Status)
	}
	_, err = io.Copy(os.Stdout, resp.Body)
	return err
}

func get(ctx context.Context, u, accept string) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s: %.200s", u, resp.Status, b)
	}
	return b, resp.Header, err
}

func hasLine(b []byte, line string) bool {
	for l := range strings.SplitSeq(string(b), "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}
