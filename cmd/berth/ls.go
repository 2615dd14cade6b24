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
		sf             storeFlags
		addr, output   string
		asJSON         bool
		served, pinned bool
	)
	c := &cobra.Command{
		Use:   "ls",
		Short: "List what the store holds (sizes, pinned, pulls) or what it served (the audit list)",
		Long: "List every image the store holds now: one line per cached tag (and per image pinned by\n" +
			"digest), with the size of all it reaches (platforms, configs, layers, referrers), what its\n" +
			"manifests name that is not stored, whether a pin keeps it, and its pulls and last pull.\n" +
			"--served lists instead everything this node has served (the audit record): per registry\n" +
			"and repository, the tags and digests of the manifests and the blobs, with counts and first\n" +
			"and last times. --pinned lists the pins. -o json or -o csv for scripts and spreadsheets.\n" +
			"Without --addr it reads the store, which a running server holds locked: then pass --addr\n" +
			"with its admin address to ask it.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON {
				output = "json"
			}
			if output != "table" && output != "json" && output != "csv" {
				return fmt.Errorf("-o %q: table, json or csv", output)
			}
			if served && pinned {
				return errors.New("--served and --pinned list different things: pass one")
			}
			var v any
			var err error
			switch {
			case served:
				v, err = loadAudit(&sf, addr)
			case pinned:
				v, err = loadStore(&sf, addr, "/admin/pins", func(s *cache.Store) (any, error) { return s.Pins() }, new([]cache.PinStatus))
			default:
				v, err = loadStore(&sf, addr, "/admin/images", func(s *cache.Store) (any, error) { return s.Images() }, new([]cache.ImageEntry))
			}
			if err != nil {
				return err
			}
			return printList(cmd.OutOrStdout(), output, v)
		},
	}
	sf.add(c)
	c.Flags().StringVar(&addr, "addr", "", "base URL of a running berth's admin listener, e.g. http://127.0.0.1:5001")
	c.Flags().StringVarP(&output, "output", "o", "table", "table, json or csv")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON (as -o json)")
	c.Flags().BoolVar(&served, "served", false, "list what this node has served (the audit record)")
	c.Flags().BoolVar(&pinned, "pinned", false, "list the pins")
	return c
}

// loadStore reads a list from the store at sf (opened to itself) with
// local, or from the admin listener at addr's path into into.
func loadStore(sf *storeFlags, addr, path string, local func(*cache.Store) (any, error), into any) (any, error) {
	if addr == "" {
		s, err := sf.open("pass --addr with its admin address to ask it")
		if err != nil {
			return nil, err
		}
		defer s.Close()
		return local(s)
	}
	req, err := http.NewRequest(http.MethodGet, adminURL(addr, path), nil)
	if err != nil {
		return nil, err
	}
	body, err := adminSend(req)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(body, into); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return reflectElem(into), nil
}

func reflectElem(p any) any {
	switch v := p.(type) {
	case *[]cache.PinStatus:
		return *v
	case *[]cache.ImageEntry:
		return *v
	}
	return p
}

// printList writes a list of images, pins or audit records as a table,
// JSON or CSV.
func printList(w io.Writer, output string, v any) error {
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	switch v := v.(type) {
	case []cache.ImageEntry:
		if output == "csv" {
			return imagesCSV(w, v)
		}
		return printImages(w, v)
	case []cache.PinStatus:
		if output == "csv" {
			return pinsCSV(w, v)
		}
		return printPins(w, v)
	case []cache.AuditRepo:
		if output == "csv" {
			return auditCSV(w, v)
		}
		return printAudit(w, v)
	}
	return fmt.Errorf("nothing to print for %T", v)
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
