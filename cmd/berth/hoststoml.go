package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/hoststoml"
)

// hostsTomlCmd is `berth hosts-toml`: write containerd hosts.toml files that
// make berth the mirror of each registry. The chart's opt-in init container
// runs it on every node.
func hostsTomlCmd() *cobra.Command {
	var f hostsTomlFlags
	cmd := &cobra.Command{
		Use:     "hosts-toml",
		Short:   "Write containerd hosts.toml files that mirror registries through berth",
		Long:    hostsTomlLong,
		Example: hostsTomlExample,
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return f.run(cmd) },
	}
	f.add(cmd)
	return cmd
}

const hostsTomlLong = `Write <dir>/<registry>/hosts.toml for each --registry, so containerd asks berth
first and falls back to the registry itself when berth cannot be reached within
--dial-timeout. containerd's config_path must point at --dir
(/etc/containerd/certs.d by default).

Each file starts with the line "` + hoststoml.Marker + `". A hosts.toml without that
line, or a registry directory holding other files (Docker-style certificates),
is never replaced: it is reported as skipped, with a warning on stderr. With --prepend, berth's [host] table goes first into such a
hosts.toml, between "` + hoststoml.BlockBegin + `" and "` + hoststoml.BlockEnd + `" lines, and the
operator's server, hosts and settings stay as they are (a later run rewrites
only those lines). --prune removes berth's files, and the lines it prepended,
for registries no longer listed; --remove removes all of them (no --registry
needed), as when berth is uninstalled.

--authorization-file FILE (or --authorization-env VAR) gives the
Authorization header containerd sends berth with every request, for a berth
with client auth: the whole value, "Bearer <token>" or "Basic <base64 of
user:password>". Files holding it are written 0600; it is never printed.

--registry takes what berth serve --registry takes: NAME=URL[,URL...]
(docker.io=https://registry-1.docker.io; the first URL is containerd's
fallback) or NAME alone (docker.io means https://registry-1.docker.io, any
other NAME https://NAME).
NAME "` + hoststoml.Default + `" is containerd's catch-all for registries without a directory.

--containerd-config checks that containerd reads --dir: its CRI plugin's
config_path must name it, and under containerd 2.1+'s transfer service (the
default unless use_local_image_pull = true) it must name only it, since a
config_path of several directories (/etc/containerd/certs.d:/etc/docker/certs.d)
is not split there and every hosts.toml is silently ignored (containerd issues
12415, 12636). A config that would bypass berth fails the command with the fix,
before anything is written; --fix-containerd-config applies the fix (one line,
the old file kept as config.toml.berth-backup) and containerd must then be
restarted.`

const hostsTomlExample = `  berth hosts-toml --dir /etc/containerd/certs.d --mirror http://127.0.0.1:5000 \
    --registry docker.io=https://registry-1.docker.io --registry registry.k8s.io --registry _default`

// hostsTomlFlags are berth hosts-toml's flags.
type hostsTomlFlags struct {
	dir, mirror, ctrdConfig, authFile, authEnv    string
	registries                                    []string
	dial                                          time.Duration
	skipVerify, prune, fixConfig, prepend, remove bool
}

func (h *hostsTomlFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&h.dir, "dir", "/etc/containerd/certs.d", "containerd's hosts directory (its registry config_path)")
	f.StringVar(&h.mirror, "mirror", "", "berth's URL as containerd reaches it, e.g. http://127.0.0.1:5000 (http://[10.0.0.5]:5000 is read as http://10.0.0.5:5000)")
	f.StringArrayVar(&h.registries, "registry", nil, "registry to mirror: NAME or NAME=URL[,URL...] as for serve; repeat for each")
	f.DurationVar(&h.dial, "dial-timeout", hoststoml.DefaultDialTimeout, "how long containerd tries to connect to berth before falling back")
	f.BoolVar(&h.skipVerify, "skip-verify", false, "let containerd skip TLS verification of an https --mirror")
	f.BoolVar(&h.prune, "prune", false, "remove berth's hosts.toml of registries not listed")
	f.StringVar(&h.ctrdConfig, "containerd-config", "", "containerd's config.toml to check: it must make containerd read --dir (e.g. /etc/containerd/config.toml)")
	f.BoolVar(&h.fixConfig, "fix-containerd-config", false, "set config_path in --containerd-config to --dir when it would bypass berth (restart containerd afterwards)")
	f.BoolVar(&h.prepend, "prepend", false, "put berth first into a hosts.toml that is not berth's, keeping the rest of it, instead of skipping it")
	f.BoolVar(&h.remove, "remove", false, "remove every hosts.toml berth wrote in --dir, and the lines it prepended to others, then exit")
	f.StringVar(&h.authFile, "authorization-file", "", "file holding the Authorization header value containerd sends berth (\"Bearer <token>\" or \"Basic <base64>\")")
	f.StringVar(&h.authEnv, "authorization-env", "", "environment variable holding the Authorization header value containerd sends berth")
}

// run writes (or, with --remove, removes) berth's hosts.toml files.
func (h *hostsTomlFlags) run(cmd *cobra.Command) error {
	out := cmd.OutOrStdout()
	if h.remove {
		if len(h.registries) > 0 {
			return errors.New("--remove takes no --registry: it removes everything berth wrote in --dir")
		}
		results, err := hoststoml.Remove(h.dir)
		printResults(out, results)
		return err
	}
	opt, hosts, err := h.options()
	if err != nil {
		return err
	}
	if h.ctrdConfig != "" {
		if err := checkContainerdConfig(out, h.ctrdConfig, h.dir, h.fixConfig); err != nil {
			return err
		}
	}
	results, err := hoststoml.Write(h.dir, hosts, opt, h.prune)
	printResults(out, results)
	warnSkipped(cmd.ErrOrStderr(), results)
	return err
}

// options reads the flags (and the Authorization value) into what
// hoststoml.Write takes.
func (h *hostsTomlFlags) options() (hoststoml.Options, []hoststoml.Host, error) {
	if h.mirror == "" {
		return hoststoml.Options{}, nil, errors.New(`required flag "mirror" not set`)
	}
	auth, err := readAuthorization(h.authFile, h.authEnv)
	if err != nil {
		return hoststoml.Options{}, nil, err
	}
	hosts, err := parseRegistryFlags(h.registries)
	if err != nil {
		return hoststoml.Options{}, nil, err
	}
	return hoststoml.Options{Mirror: hoststoml.UnbracketIPv4(h.mirror), DialTimeout: h.dial, SkipVerify: h.skipVerify,
		Authorization: auth, Prepend: h.prepend}, hosts, nil
}

// warnSkipped warns on w of each hosts.toml left as it was because it is
// not berth's: berth is not the mirror of those registries.
func warnSkipped(w io.Writer, results []hoststoml.Result) {
	var skipped []string
	for _, r := range results {
		if r.Action == hoststoml.Skipped {
			skipped = append(skipped, r.Path)
		}
	}
	if len(skipped) > 0 {
		fmt.Fprintf(w, "WARNING: berth is NOT the mirror of %d registries, whose hosts.toml files are not berth's: %s (--prepend puts berth first in them)\n", len(skipped), strings.Join(skipped, ", "))
	}
}

// readAuthorization reads the Authorization header value from a file
// (trailing newline dropped) or an environment variable; "" when neither
// is given. Errors never carry the value.
func readAuthorization(file, env string) (string, error) {
	switch {
	case file != "" && env != "":
		return "", errors.New("give --authorization-file or --authorization-env, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--authorization-file: %w", err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", fmt.Errorf("--authorization-file %s is empty", file)
		}
		return v, nil
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok || v == "" {
			return "", fmt.Errorf("--authorization-env: $%s is not set", env)
		}
		return v, nil
	}
	return "", nil
}

// parseRegistryFlags turns --registry values into hosts. They take the
// forms `berth serve --registry` takes (config.ParseRegistryFlag); the first
// URL is the registry's own server, containerd's fallback. NAME
// hoststoml.Default alone is containerd's catch-all, with no server.
func parseRegistryFlags(values []string) ([]hoststoml.Host, error) {
	if len(values) == 0 {
		return nil, errors.New("no --registry given")
	}
	hosts := make([]hoststoml.Host, 0, len(values))
	var errs []error
	for _, v := range values {
		if v == hoststoml.Default {
			hosts = append(hosts, hoststoml.Host{Name: v})
			continue
		}
		r, err := config.ParseRegistryFlag(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("--registry %s: %w", v, err))
			continue
		}
		hosts = append(hosts, hoststoml.Host{Name: r.Name, Server: r.Endpoints[0]})
	}
	return hosts, errors.Join(errs...)
}

func printResults(w io.Writer, results []hoststoml.Result) {
	for _, r := range results {
		if r.Reason != "" {
			fmt.Fprintf(w, "%-9s %s: %s\n", r.Action, r.Path, r.Reason)
			continue
		}
		fmt.Fprintf(w, "%-9s %s\n", r.Action, r.Path)
	}
}

// checkContainerdConfig checks containerd's config against dir and, with
// fix, repairs it; it fails while containerd would not read dir.
func checkContainerdConfig(w io.Writer, path, dir string, fix bool) error {
	c, err := hoststoml.CheckContainerd(path, dir)
	if err != nil {
		return err
	}
	for _, warn := range c.Warnings {
		fmt.Fprintf(w, "warning   %s: %s\n", path, warn)
	}
	if len(c.Problems) == 0 {
		fmt.Fprintf(w, "ok        %s: containerd reads %s\n", path, dir)
		return nil
	}
	if !fix {
		return fmt.Errorf("containerd would not use berth: %s", strings.Join(c.Problems, "; "))
	}
	if _, err := hoststoml.FixContainerd(path, dir); err != nil {
		return err
	}
	fmt.Fprintf(w, "fixed     %s: config_path = %q (old file in %s.berth-backup); RESTART CONTAINERD for it to take effect\n", path, dir, path)
	return nil
}
