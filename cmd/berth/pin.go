package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/airgap"
	"github.com/spf13/cobra"
)

func pinCmd() *cobra.Command   { return pinOrUnpin(true) }
func unpinCmd() *cobra.Command { return pinOrUnpin(false) }

func pinOrUnpin(pin bool) *cobra.Command {
	var (
		sf   storeFlags
		addr string
	)
	use, short, long := "pin IMAGE...", "Keep images in the store: never evicted, never collected",
		"Pin images the store holds, by tag (alpine:3.20, registry.k8s.io/pause:3.10) or by digest\n"+
			"(ghcr.io/org/app@sha256:..., or a bare sha256:...). A pin keeps the whole image: every\n"+
			"platform of an index, configs, layers, and referrers (signatures, SBOMs, attestations);\n"+
			"a pin by tag follows the tag when it moves and keeps the digest it first named. With\n"+
			"--cache-dir (or --config) it changes a stopped store; with --addr it asks a running\n"+
			"berth's admin API. berth preload and berth import pin what they bring in."
	if !pin {
		use, short, long = "unpin IMAGE...", "Let pinned images be evicted and collected again",
			"Drop the pins of images, named as berth pin names them; a bare digest drops every pin\n"+
				"rooted there. With --cache-dir (or --config) it changes a stopped store; with --addr\n"+
				"it asks a running berth's admin API."
	}
	c := &cobra.Command{
		Use: use, Short: short, Long: long,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			do := func(ref string) (string, error) { return pinRemote(addr, ref, pin) }
			if addr == "" {
				s, err := sf.open("pass --addr with its admin address")
				if err != nil {
					return err
				}
				defer s.Close()
				do = func(ref string) (string, error) { return pinLocal(s, ref, pin) }
			}
			var errs []error
			for _, ref := range args {
				line, err := do(ref)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintln(cmd.OutOrStdout(), line)
			}
			return errors.Join(errs...)
		},
	}
	sf.add(c)
	c.Flags().StringVar(&addr, "addr", "", "admin address of a running berth, e.g. http://127.0.0.1:5001")
	return c
}

func pinLocal(s *cache.Store, ref string, pin bool) (string, error) {
	if !pin {
		if err := airgap.UnpinRef(s, ref); err != nil {
			return "", err
		}
		return "unpinned " + ref, nil
	}
	st, err := airgap.PinRef(s, ref, "", "cli")
	if err != nil {
		return "", err
	}
	return pinLine(st), nil
}

func pinLine(st cache.PinStatus) string {
	line := fmt.Sprintf("pinned %s %s: %d blobs, %d bytes", st.Ref, st.Digest, st.Blobs, st.Bytes)
	if len(st.Missing) > 0 {
		line += fmt.Sprintf(" (%d named but not stored: platforms never pulled)", len(st.Missing))
	}
	return line
}

// adminURL is addr (with http:// when it names no scheme) and path.
func adminURL(addr, path string) string {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return strings.TrimRight(addr, "/") + path
}

func pinRemote(addr, ref string, pin bool) (string, error) {
	method := http.MethodPost
	if !pin {
		method = http.MethodDelete
	}
	req, err := http.NewRequest(method, adminURL(addr, "/admin/pin?"+url.Values{"ref": {ref}}.Encode()), nil)
	if err != nil {
		return "", err
	}
	body, err := adminSend(req)
	if err != nil {
		return "", fmt.Errorf("%s: %w", ref, err)
	}
	if !pin {
		return "unpinned " + ref, nil
	}
	var st cache.PinStatus
	if err := json.Unmarshal(body, &st); err != nil {
		return "", fmt.Errorf("%s: %w", ref, err)
	}
	return pinLine(st), nil
}

// adminSend sends req to an admin listener and returns the body of a 200.
func adminSend(req *http.Request) ([]byte, error) {
	client := &http.Client{Timeout: time.Minute}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, errcodeMessage(body))
	}
	return body, nil
}

// printPins writes one line per pin.
func printPins(w io.Writer, pins []cache.PinStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PIN\tDIGEST\tNOW\tBLOBS\tSIZE\tMISSING\tSOURCE\tPINNED")
	for _, p := range pins {
		now := "-"
		if p.Current != "" {
			now = short(p.Current.String())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", p.Ref, short(p.Digest.String()), now, p.Blobs, p.Bytes, len(p.Missing), orDash(p.Source), stamp(p.Created))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}
