package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
)

func preloadCmd() *cobra.Command {
	var (
		addr     string
		parallel int
	)
	c := &cobra.Command{
		Use:   "preload REF...",
		Short: "Pull images through a running berth so its store holds them (air-gapped sites)",
		Long: "Pull every manifest (all platforms of an index) and every blob of each image through a\n" +
			"running berth, verifying each by digest, so that berth's store holds the whole image and\n" +
			"serves it later without its upstream. REF is a reference as docker writes it:\n" +
			"alpine:3.20, registry.k8s.io/pause:3.10, ghcr.io/org/app@sha256:...",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Its own transport, closed when done: a connection dialled and
			// never used would hold the server's graceful shutdown for 5s.
			tr := http.DefaultTransport.(*http.Transport).Clone()
			defer tr.CloseIdleConnections()
			p := &preloader{base: strings.TrimSuffix(addr, "/"), client: &http.Client{Transport: tr}}
			for _, ref := range args {
				if err := p.image(cmd.Context(), ref, parallel); err != nil {
					return fmt.Errorf("preload %s: %w", ref, err)
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "preloaded %d images: %d manifests, %d blobs, %d bytes\n",
				len(args), p.manifests.Load(), p.blobs.Load(), p.bytes.Load())
			return nil
		},
	}
	c.Flags().StringVar(&addr, "addr", "http://127.0.0.1:5000", "base URL of the running berth")
	c.Flags().IntVar(&parallel, "parallel", 4, "blobs fetched at once")
	return c
}

// preloader walks images through berth's own API, so the server stays the
// store's one writer and every byte is verified on both ends.
type preloader struct {
	base                    string
	client                  *http.Client
	manifests, blobs, bytes atomic.Int64
	seen                    sync.Map // digest → struct{}: blobs shared by images go once
}

// manifestDoc holds the fields of an index or a manifest that name content.
type manifestDoc struct {
	MediaType string           `json:"mediaType"`
	Manifests []oci.Descriptor `json:"manifests"`
	Config    *oci.Descriptor  `json:"config"`
	Layers    []oci.Descriptor `json:"layers"`
}

func (p *preloader) image(ctx context.Context, ref string, parallel int) error {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return err
	}
	repo := oci.Repo{Registry: reference.Domain(named), Name: reference.Path(named)}
	tag := "latest"
	if t, ok := named.(reference.Tagged); ok {
		tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		tag = d.Digest().String()
	}
	var blobs []digest.Digest
	if err := p.walk(ctx, repo, tag, &blobs); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, parallel))
	for _, d := range blobs {
		if _, dup := p.seen.LoadOrStore(d, struct{}{}); dup {
			continue
		}
		g.Go(func() error { return p.blob(gctx, repo, d) })
	}
	return g.Wait()
}

// walk fetches the manifest ref and, for an index, every child, collecting
// the blobs they name.
func (p *preloader) walk(ctx context.Context, repo oci.Repo, ref string, blobs *[]digest.Digest) error {
	body, err := p.get(ctx, repo, "manifests/"+ref, strings.Join(oci.ManifestTypes, ", "))
	if err != nil {
		return err
	}
	data, err := io.ReadAll(io.LimitReader(body, oci.MaxManifestSize+1))
	body.Close()
	if err != nil {
		return err
	}
	if d, err := digest.Parse(ref); err == nil && d.Algorithm().FromBytes(data) != d {
		return fmt.Errorf("manifest %s: %w", d, oci.ErrDigestMismatch)
	}
	p.manifests.Add(1)
	var m manifestDoc
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("manifest %s: %w", ref, err)
	}
	for _, child := range m.Manifests {
		if err := p.walk(ctx, repo, child.Digest.String(), blobs); err != nil {
			return err
		}
	}
	if m.Config != nil {
		*blobs = append(*blobs, m.Config.Digest)
	}
	for _, l := range m.Layers {
		*blobs = append(*blobs, l.Digest)
	}
	return nil
}

// blob reads blob d through berth and checks it against its digest.
func (p *preloader) blob(ctx context.Context, repo oci.Repo, d digest.Digest) error {
	body, err := p.get(ctx, repo, "blobs/"+d.String(), "")
	if err != nil {
		return err
	}
	defer body.Close()
	v := d.Verifier()
	n, err := io.Copy(v, body)
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	if !v.Verified() {
		return fmt.Errorf("blob %s: %w", d, oci.ErrDigestMismatch)
	}
	p.blobs.Add(1)
	p.bytes.Add(n)
	return nil
}

// get asks berth for /v2/<name>/<subpath>, routed to the repository's
// registry with ns, as containerd does.
func (p *preloader) get(ctx context.Context, repo oci.Repo, subpath, accept string) (io.ReadCloser, error) {
	u := p.base + "/v2/" + repo.Name + "/" + subpath + "?ns=" + url.QueryEscape(repo.Registry)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s: %s", subpath, resp.Status, strings.TrimSpace(string(msg)))
	}
	return resp.Body, nil
}
