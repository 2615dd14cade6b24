package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/berth-registry/berth/cache"
	"github.com/spf13/cobra"
)

// storeFlags name a store: --cache-dir, else the config's cache.dir.
type storeFlags struct{ config, cacheDir string }

func (f *storeFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.config, "config", "", "YAML configuration file whose cache.dir names the store (default: the embedded default)")
	c.Flags().StringVar(&f.cacheDir, "cache-dir", "", "directory of the content store")
}

func (f *storeFlags) dir() (string, error) {
	if f.cacheDir != "" {
		return f.cacheDir, nil
	}
	cfg, err := loadConfig(f.config)
	if err != nil {
		return "", err
	}
	return cfg.Cache.Dir, nil
}

// open opens the store for a command that needs it to itself (gc,
// verify), logging warnings to stderr; hint says what to do when a server
// holds it.
func (f *storeFlags) open(hint string) (*cache.Store, error) {
	dir, err := f.dir()
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := cache.Open(dir, cache.Options{Logger: log})
	if err != nil {
		return nil, inUse(err, hint)
	}
	return s, nil
}

// inUse explains ErrInUse to a person.
func inUse(err error, what string) error {
	if errors.Is(err, cache.ErrInUse) {
		return fmt.Errorf("%w: a server is running on this store; %s", err, what)
	}
	return err
}

func lsCmd() *cobra.Command {
	var (
		sf     storeFlags
		addr   string
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "ls",
		Short: "List every image this node has served, with pull counts (the audit record)",
		Long: "List every image this node has served: per registry and repository, the tags and digests\n" +
			"of the manifests and the blobs served, with counts and first and last times.\n" +
			"Without --addr it reads the store's index, which a running server holds locked:\n" +
			"then pass --addr to ask the server (GET /debug/audit) instead.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			repos, err := loadAudit(&sf, addr)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(repos)
			}
			return printAudit(cmd.OutOrStdout(), repos)
		},
	}
	sf.add(c)
	c.Flags().StringVar(&addr, "addr", "", "base URL of a running berth's admin listener, e.g. http://127.0.0.1:5001")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return c
}

func loadAudit(sf *storeFlags, addr string) ([]cache.AuditRepo, error) {
	if addr == "" {
		dir, err := sf.dir()
		if err != nil {
			return nil, err
		}
		repos, err := cache.ReadAudit(dir, time.Second)
		return repos, inUse(err, "pass --addr to ask it")
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Get(strings.TrimRight(addr, "/") + "/debug/audit")
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("audit: %s answered %s", addr, resp.Status)
	}
	var repos []cache.AuditRepo
	if err := json.NewDecoder(resp.Body).Decode(&repos); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return repos, nil
}

// printAudit writes one line per image tag (or digest pulled without a
// tag), with the image's total pulls.
func printAudit(w io.Writer, repos []cache.AuditRepo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tPULLS\tTAG\tDIGEST\tCOUNT\tBLOBS\tLAST")
	for _, r := range repos {
		image := r.Registry + "/" + r.Name
		rows := append(append([]cache.AuditEntry{}, r.Tags...), r.Manifests...)
		for i, e := range rows {
			pulls, blobs := "", ""
			if i == 0 {
				pulls, blobs = fmt.Sprint(r.Pulls), fmt.Sprint(len(r.Blobs))
			}
			tag := e.Tag
			if tag == "" {
				tag = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", image, pulls, tag, short(e.Digest.String()), e.Count, blobs, e.Last.Local().Format(time.DateTime))
		}
		if len(rows) == 0 {
			fmt.Fprintf(tw, "%s\t%d\t-\t-\t0\t%d\t%s\n", image, r.Pulls, len(r.Blobs), r.Last.Local().Format(time.DateTime))
		}
	}
	return tw.Flush()
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
