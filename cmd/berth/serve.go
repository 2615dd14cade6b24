package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/server"
	"github.com/spf13/cobra"
)

type serveFlags struct {
	config, addr, adminAddr, cacheDir, defaultRegistry, tagTTL, maxSize string
	registries                                                          []string
	peerBind, peerAdvertise, peerSecretFile                             string
	peerJoin                                                            []string
	logLevel, logFormat                                                 string
	tlsAddr, tlsCert, tlsKey                                            string
	offline                                                             bool
}

func serveCmd() *cobra.Command {
	var f serveFlags
	c := &cobra.Command{
		Use:   "serve",
		Short: "Serve the registry mirror",
		Long: "Serve the registry mirror. With no flags it runs on the embedded default configuration\n" +
			"(`berth config default`): cache under ./berth-data, Docker Hub, registry.k8s.io, quay.io and ghcr.io.\n" +
			"Settings come from the config file, then BERTH_* environment variables, then flags.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.resolve(cmd)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), cfg)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.config, "config", "", "YAML configuration file (default: the embedded default)")
	fl.StringVar(&f.addr, "addr", "", "HTTP listen address, host:port")
	fl.StringVar(&f.adminAddr, "admin-addr", "", `admin listener host:port for /metrics, /debug/* and the admin API ("" turns it off)`)
	fl.StringVar(&f.cacheDir, "cache-dir", "", "directory of the content store")
	fl.StringArrayVar(&f.registries, "registry", nil, "upstream registry NAME=URL[,URL...], or NAME alone for https://NAME (repeatable); replaces a configured registry of the same NAME")
	fl.StringVar(&f.defaultRegistry, "default-registry", "", "registry of requests that name none")
	fl.StringVar(&f.tagTTL, "tag-ttl", "", "how long a tag's digest is trusted without asking upstream (e.g. 60s)")
	fl.StringVar(&f.maxSize, "cache-max-size", "", "store quota: 50GiB, or a percentage of the filesystem such as 80%")
	fl.StringVar(&f.peerBind, "peer-bind", "", "gossip address host:port; empty runs the node alone")
	fl.StringVar(&f.peerAdvertise, "peer-advertise", "", "HTTP address host:port peers reach this node at")
	fl.StringSliceVar(&f.peerJoin, "peer-join", nil, "seed addresses or DNS names to join (comma separated)")
	fl.StringVar(&f.peerSecretFile, "peer-secret-file", "", "file holding the cluster's shared secret")
	fl.StringVar(&f.tlsAddr, "tls-addr", "", "HTTPS listen address, host:port (beside --addr)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "TLS certificate file (PEM); re-read when it changes and on SIGHUP")
	fl.StringVar(&f.tlsKey, "tls-key", "", "TLS private key file (PEM)")
	fl.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error")
	fl.StringVar(&f.logFormat, "log-format", "", "text or json")
	fl.BoolVar(&f.offline, "offline", false, "contact no upstream: serve what the store holds (tags whatever their age); a miss says the mirror is offline")
	return c
}

// resolve builds the configuration: file or embedded default, then env,
// then the flags that were set, then credential env and validation, as
// config.Resolve does for `berth config validate`. Every problem is reported.
func (f *serveFlags) resolve(cmd *cobra.Command) (*config.Config, error) {
	cfg, err := loadFile(f.config)
	if err != nil {
		return nil, err
	}
	return cfg, config.Resolve(cfg, os.Environ(), func(cfg *config.Config) error {
		var errs []error
		set := func(name string, apply func() error) {
			if cmd.Flags().Changed(name) {
				if err := apply(); err != nil {
					errs = append(errs, fmt.Errorf("--%s: %w", name, err))
				}
			}
		}
		set("addr", func() error { cfg.Listen.Addr = f.addr; return nil })
		set("admin-addr", func() error { cfg.Admin.Addr = f.adminAddr; return nil })
		set("cache-dir", func() error { cfg.Cache.Dir = f.cacheDir; return nil })
		set("offline", func() error { cfg.Offline = f.offline; return nil })
		set("default-registry", func() error { cfg.DefaultRegistry = f.defaultRegistry; return nil })
		set("cache-max-size", func() error { cfg.Cache.MaxSize = f.maxSize; return nil })
		set("tag-ttl", func() (e error) { cfg.TagTTL, e = config.ParseDuration(f.tagTTL); return e })
		set("registry", func() error {
			var errs []error
			for _, v := range f.registries {
				r, err := config.ParseRegistryFlag(v)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", v, err))
					continue
				}
				cfg.SetRegistry(r)
			}
			return errors.Join(errs...)
		})
		set("peer-bind", func() error { cfg.Peers.Bind = f.peerBind; return nil })
		set("peer-advertise", func() error { cfg.Peers.Advertise = f.peerAdvertise; return nil })
		set("peer-join", func() error { cfg.Peers.Join = f.peerJoin; return nil })
		set("peer-secret-file", func() error { cfg.Peers.SecretFile = f.peerSecretFile; return nil })
		set("tls-addr", func() error { cfg.Listen.TLS.Addr = f.tlsAddr; return nil })
		set("tls-cert", func() error { cfg.Listen.TLS.CertFile = f.tlsCert; return nil })
		set("tls-key", func() error { cfg.Listen.TLS.KeyFile = f.tlsKey; return nil })
		set("log-level", func() error { cfg.Log.Level = f.logLevel; return nil })
		set("log-format", func() error { cfg.Log.Format = f.logFormat; return nil })
		return errors.Join(errs...)
	})
}

func newLogger(c config.Log) *slog.Logger { return newLoggerTo(os.Stderr, c) }

func newLoggerTo(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated already
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(c.Format, "json") {
		opts.ReplaceAttr = durationSeconds
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// durationSeconds writes durations as seconds (a number) in JSON logs, which
// log pipelines can compute with; text logs keep Go's readable form (1.5s).
func durationSeconds(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.Float64(a.Key, a.Value.Duration().Seconds())
	}
	return a
}

func serve(parent context.Context, cfg *config.Config) error {
	if parent == nil {
		parent = context.Background()
	}
	ctx, stop := signal.NotifyContext(parent, syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := newLogger(cfg.Log)
	for _, name := range config.UnknownEnv(os.Environ()) {
		log.Warn("environment variable names no setting", "name", name)
	}
	srv, err := server.New(cfg, log)
	if err != nil {
		return err
	}
	defer srv.Close()
	ls, err := srv.Listen()
	if err != nil {
		return err
	}
	// Caught from here to the end, so a SIGHUP during the drain does not
	// kill the process (its default action).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go reloadOnHUP(ctx, hup, srv, log)
	log.Info("serving", "addr", addrOf(ls.HTTP), "tls", addrOf(ls.TLS), "admin", addrOf(ls.Admin), "cache", cfg.Cache.Dir,
		"registries", len(cfg.Registries), "default", cfg.DefaultRegistry)
	return srv.Serve(ctx, ls)
}

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// reloadOnHUP reloads credentials and certificates on each signal from hup
// until ctx ends.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, srv *server.Server, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := srv.Reload(); err != nil {
				log.Warn("reload", "err", err)
				continue
			}
			log.Info("reloaded credentials and certificates")
		}
	}
}
