package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/airgap"
	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/server"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

type preloadFlags struct {
	sf              storeFlags
	addr, adminAddr string
	file            string
	platforms       []string
	parallel        int
	noPin, noRefs   bool
	progress        string
}

func preloadCmd() *cobra.Command {
	var f preloadFlags
	c := &cobra.Command{
		Use:   "preload [REF...]",
		Short: "Pull whole images into a store (all or some platforms, with signatures), for air-gapped sites",
		Long: "Pull every manifest (all platforms of an index, or those --platform names), config and\n" +
			"layer of each image, and its referrers (signatures, SBOMs, attestations: the referrers\n" +
			"API, the sha256-<hex> tag schema and cosign's sha256-<hex>.sig, .att, .sbom tags),\n" +
			"verifying each by digest, so the store holds it and serves it later without its\n" +
			"upstream; then pin it (unless --no-pin). REF is a reference as docker writes it\n" +
			"(alpine:3.20, registry.k8s.io/pause:3.10, ghcr.io/org/app@sha256:...), as arguments or\n" +
			"one a line in -f FILE (# comments). A failed image does not stop the others; the\n" +
			"command then exits non-zero naming each. Running it again fetches nothing new.\n\n" +
			"With --addr it pulls through a running berth (and pins through its admin API at\n" +
			"--admin-addr); with --cache-dir (or --config) it runs a berth of its own on that store,\n" +
			"with the configuration's registries, which must not be in use by a server.",
		RunE: func(cmd *cobra.Command, args []string) error {
			refs, err := refList(args, f.file)
			if err != nil {
				return err
			}
			if len(refs) == 0 {
				return errors.New("name images as arguments or with -f FILE")
			}
			match, err := platformMatcher(f.platforms)
			if err != nil {
				return err
			}
			if f.progress != "auto" && f.progress != "bar" && f.progress != "plain" {
				return fmt.Errorf("--progress %s: want auto, bar or plain", f.progress)
			}
			if f.addr != "" && !f.noPin && f.adminAddr == "" {
				if f.adminAddr = defaultAdmin(f.addr); f.adminAddr == "" {
					return fmt.Errorf("--addr %s is not on this machine: pass its --admin-addr to pin, or --no-pin", f.addr)
				}
			}
			return runPreload(cmd, &f, refs, match)
		},
	}
	fl := c.Flags()
	f.sf.add(c)
	fl.StringVar(&f.addr, "addr", "", "base URL of a running berth to pull through (http://127.0.0.1:5000); without it, --cache-dir or the config's cache.dir is used directly")
	fl.StringVar(&f.adminAddr, "admin-addr", "", "admin address of the running berth, for pinning (with --addr; default http://127.0.0.1:5001 when --addr is on loopback)")
	fl.StringVarP(&f.file, "file", "f", "", "file of image references, one a line (- for standard input)")
	fl.StringSliceVar(&f.platforms, "platform", nil, "platforms of an index to preload, e.g. linux/amd64,linux/arm64 (default: all)")
	fl.IntVar(&f.parallel, "parallel", 4, "blobs fetched at once")
	fl.BoolVar(&f.noPin, "no-pin", false, "do not pin the preloaded images")
	fl.BoolVar(&f.noRefs, "no-referrers", false, "skip signatures, SBOMs and attestations")
	fl.StringVar(&f.progress, "progress", "auto", "auto (a bar on a terminal, lines otherwise), bar, or plain")
	return c
}

// platformMatcher parses --platform; nil means every platform.
func platformMatcher(specs []string) (platforms.Matcher, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	var ps []platforms.Platform
	for _, s := range specs {
		p, err := platforms.Parse(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--platform %s: %w", s, err)
		}
		ps = append(ps, p)
	}
	return platforms.Any(ps...), nil
}

func runPreload(cmd *cobra.Command, f *preloadFlags, refs []string, match platforms.Matcher) error {
	ctx := cmd.Context()
	// Its own transport, closed when done: a connection dialled and never
	// used would hold the server's graceful shutdown for 5s.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	p := &preloader{client: &http.Client{Transport: tr}, match: match, referrers: !f.noRefs, parallel: max(1, f.parallel)}
	switch {
	case f.addr != "":
		p.base = strings.TrimSuffix(f.addr, "/")
		if !f.noPin {
			p.pin = adminPinner(tr, f.adminAddr)
		}
	default:
		stop, err := p.ownNode(ctx, &f.sf, !f.noPin)
		if err != nil {
			return err
		}
		defer stop()
	}
	p.rep = newReporter(cmd, f.progress)
	results := p.run(ctx, refs)
	return p.rep.finish(results)
}

// ownNode runs a berth of the process's own on the store named by sf,
// serving on a loopback port until stop, and pins straight into its store.
func (p *preloader) ownNode(ctx context.Context, sf *storeFlags, pin bool) (stop func(), err error) {
	cfg, err := loadConfig(sf.config)
	if err != nil {
		return nil, err
	}
	if sf.cacheDir != "" {
		cfg.Cache.Dir = sf.cacheDir
	}
	cfg.Peers.Bind, cfg.Peers.Join = "", nil // never join a cluster from a command
	cfg.Listen.TLS = config.TLS{}
	// The node serves this command alone, on loopback: the operator is its
	// one client, so client access rules do not apply.
	cfg.Auth = config.Auth{}
	for i := range cfg.Registries {
		r := &cfg.Registries[i]
		r.Access, r.Users, r.Groups, r.Rules = config.AccessAnonymous, nil, nil, nil
	}
	if err := config.ApplyCredentialEnv(cfg, os.Environ()); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	srv, err := server.New(cfg, stderrLogger())
	if err != nil {
		return nil, inUse(err, "pass --addr to preload through it")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- srv.Run(runCtx, ln) }()
	p.base = "http://" + ln.Addr().String()
	if pin {
		p.pin = storePinner(srv.Store())
	}
	return func() {
		p.client.CloseIdleConnections()
		cancel()
		<-done
		srv.Close()
	}, nil
}

// storePinner pins an image in a store the process holds.
func storePinner(s *cache.Store) pinFunc {
	return func(_ context.Context, ref string, d digest.Digest) error {
		_, err := airgap.PinRef(s, ref, d, "preload")
		return err
	}
}

// adminPinner pins through a running berth's admin API.
func adminPinner(tr http.RoundTripper, admin string) pinFunc {
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	return func(ctx context.Context, ref string, d digest.Digest) error {
		q := url.Values{"ref": {ref}, "digest": {d.String()}, "source": {"preload"}}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(admin, "/")+"/admin/pin?"+q.Encode(), nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("pin through %s (or pass --no-pin): %w", admin, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			return fmt.Errorf("pin: %s: %s", resp.Status, errcodeMessage(msg))
		}
		return nil
	}
}

// defaultAdmin is the admin address of a berth at addr when that is on
// loopback (the admin listener's default), else "".
func defaultAdmin(addr string) string {
	u, err := url.Parse(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(u.Hostname()); u.Hostname() == "localhost" || ip != nil && ip.IsLoopback() {
		return "http://127.0.0.1:5001"
	}
	return ""
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
