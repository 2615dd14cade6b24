package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/pkg/clientconf"
)

// clientConfigCmd is `berth client-config`: the mirror settings of the
// clients that do not read containerd's hosts.toml (berth hosts-toml does
// those), written, merged into an existing file, or checked.
func clientConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "client-config",
		Short: "Write or check the mirror settings of CRI-O/Podman, k3s/RKE2 and Docker",
		Long: `Write or check a client's own mirror file so its pulls go through berth first:

  registries-conf   CRI-O, Podman, skopeo, buildah: registries.conf (v2)
  k3s               k3s and RKE2: registries.yaml
  docker            Docker: daemon.json (registry-mirrors: Docker Hub only)

Each subcommand prints the file to stdout; with --file it merges berth into
that file instead (berth's entries first, every other entry and setting
kept, the old file kept as FILE.berth-backup) and with --check it only
checks FILE and fails, naming each problem, when a listed registry's pulls
would not reach berth.

--registry takes what berth serve --registry takes: NAME=URL[,URL...] (the
first URL is the registry itself, the client's fallback when berth fails)
or NAME alone (docker.io means https://registry-1.docker.io, any other NAME
https://NAME).`,
	}
	cmd.AddCommand(registriesConf.command(), k3sRegistries.command(), dockerDaemon.command())
	return cmd
}

// clientFlags are the flags every client-config subcommand takes.
type clientFlags struct {
	mirror     string
	registries []string
	file       string
	check      bool
}

func (f *clientFlags) add(cmd *cobra.Command, file string) {
	fl := cmd.Flags()
	fl.StringVar(&f.mirror, "mirror", "", "berth's URL as the client reaches it, e.g. http://127.0.0.1:5000")
	fl.StringArrayVar(&f.registries, "registry", nil, "registry to send through berth: NAME or NAME=URL[,URL...] as for serve; repeat for each")
	fl.StringVar(&f.file, "file", "", "merge berth into this file in place (e.g. "+file+") instead of printing a new one")
	fl.BoolVar(&f.check, "check", false, "check --file and change nothing: fail when a registry's pulls would not reach berth")
	_ = cmd.MarkFlagRequired("mirror")
}

// parse turns --registry values into clientconf registries.
func (f *clientFlags) parse() ([]clientconf.Registry, error) {
	if len(f.registries) == 0 {
		return nil, errors.New("no --registry given")
	}
	if f.check && f.file == "" {
		return nil, errors.New("--check needs --file")
	}
	hosts, err := parseRegistryFlags(f.registries)
	regs := make([]clientconf.Registry, len(hosts))
	for i, h := range hosts {
		regs[i] = clientconf.Registry{Name: h.Name, Server: h.Server}
	}
	return regs, err
}

// clientFile is one client's mirror file: its subcommand's text, and the
// functions that merge berth into it and check it.
type clientFile struct {
	use, short, long, example string
	file                      string // where the client reads it, for --file's help
	header                    string // the first line of a new file; "" for none
	registryUsage             string // --registry's help, when not clientFlags'
	defaults                  []string
	merge                     func(existing []byte, mirror string, regs []clientconf.Registry) ([]byte, error)
	check                     func(content []byte, mirror string, regs []clientconf.Registry) ([]string, error)
}

func (c *clientFile) command() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{Use: c.use, Short: c.short, Long: c.long, Example: c.example, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(f.registries) == 0 {
				f.registries = c.defaults
			}
			return f.run(cmd.OutOrStdout(), c)
		},
	}
	f.add(cmd, c.file)
	if c.registryUsage != "" {
		cmd.Flags().Lookup("registry").Usage = c.registryUsage
	}
	return cmd
}

// run does what the flags say with one client's file.
func (f *clientFlags) run(out io.Writer, c *clientFile) error {
	regs, err := f.parse()
	if err != nil {
		return err
	}
	var existing []byte
	if f.file != "" {
		existing, err = os.ReadFile(f.file)
		if err != nil && (f.check || !errors.Is(err, fs.ErrNotExist)) {
			return err
		}
	}
	if f.check {
		return f.checkFile(out, c, existing, regs)
	}
	data, err := c.merge(existing, f.mirror, regs)
	if err != nil {
		return err
	}
	if f.file == "" {
		fmt.Fprint(out, c.header)
		_, err := out.Write(data)
		return err
	}
	return f.writeFile(out, c, existing, data)
}

// checkFile fails, naming each problem, when --file would not send every
// registry through berth.
func (f *clientFlags) checkFile(out io.Writer, c *clientFile, content []byte, regs []clientconf.Registry) error {
	problems, err := c.check(content, f.mirror, regs)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s does not send every registry through berth:\n  %s", f.file, strings.Join(problems, "\n  "))
	}
	fmt.Fprintf(out, "ok        %s: %d registries go through %s first\n", f.file, len(regs), f.mirror)
	return nil
}

// writeFile writes the merged file in place of --file, unless nothing
// changed; a new file starts with the client's header.
func (f *clientFlags) writeFile(out io.Writer, c *clientFile, existing, data []byte) error {
	if string(data) == string(existing) {
		fmt.Fprintf(out, "unchanged %s\n", f.file)
		return nil
	}
	if len(existing) == 0 {
		data = append([]byte(c.header), data...)
	}
	if err := clientconf.WriteFile(f.file, data); err != nil {
		return err
	}
	fmt.Fprintf(out, "written   %s\n", f.file)
	return nil
}

var registriesConf = clientFile{
	use:   "registries-conf",
	short: "registries.conf (v2) for CRI-O, Podman, skopeo and buildah",
	long: `Print (or merge into --file) a containers-registries.conf v2 file that makes
berth the first [[registry.mirror]] of each --registry.

containers/image sends no ns parameter the way containerd does, so each
mirror location names the registry as its first path segment:
127.0.0.1:5000/docker.io. A registry with a port is written HOST_PORT
(127.0.0.1:5000/127.0.0.1_5001), since an image reference's path cannot
hold a ':' ("invalid reference format"); berth reads it back as HOST:PORT.
A plain HTTP berth gets insecure = true. The --file merge re-encodes the
file: entries and settings stay, comments do not (the old file is kept).
CRI-O reads the file at start (or on SIGHUP); Podman on every command.`,
	example: `  berth client-config registries-conf --mirror http://127.0.0.1:5000 \
    --registry docker.io --registry quay.io --file /etc/containers/registries.conf`,
	file:   "/etc/containers/registries.conf",
	header: "# Mirrors written by `berth client-config registries-conf`.\n",
	merge:  clientconf.RegistriesConf,
	check:  clientconf.CheckRegistriesConf,
}

var k3sRegistries = clientFile{
	use:   "k3s",
	short: "registries.yaml for k3s and RKE2",
	long: `Print (or merge into --file) a k3s/RKE2 registries.yaml whose mirrors list
berth first for each --registry ("_default" is k3s's "*", every registry
without a mirror of its own). k3s writes containerd hosts.toml files from
it, so requests reach berth with ns as from containerd; after berth, k3s
falls back to the registry's default endpoint (https://NAME), and a
registry whose --registry URL is something else (a plain HTTP one) gets
that URL listed after berth. The --file merge edits the YAML in place:
other mirrors' endpoints, rewrites, configs (credentials, TLS) and comments
stay. k3s reads the file at start: restart k3s (or rke2-server/agent).`,
	example: `  berth client-config k3s --mirror http://127.0.0.1:5000 \
    --registry docker.io --registry registry.k8s.io --file /etc/rancher/k3s/registries.yaml`,
	file:   "/etc/rancher/k3s/registries.yaml",
	header: "# Mirrors written by `berth client-config k3s`.\n",
	merge:  clientconf.K3sRegistries,
	check:  clientconf.CheckK3sRegistries,
}

var dockerDaemon = clientFile{
	use:   "docker",
	short: "daemon.json for Docker (Docker Hub only)",
	long: `Print (or merge into --file) Docker's daemon.json with berth first in
registry-mirrors and, for a plain HTTP berth, in insecure-registries.

Docker's registry-mirrors only ever mirrors Docker Hub: pulls from any other
registry (registry.k8s.io/..., quay.io/...) go to that registry directly,
whatever daemon.json says, so --registry may only be docker.io (the
default). Docker sends no ns; berth serves such requests from its default
registry (defaultRegistry, docker.io out of the box). The --file merge keeps
every other key. Docker reads the file at start: restart dockerd.`,
	example:       `  berth client-config docker --mirror http://127.0.0.1:5000 --file /etc/docker/daemon.json`,
	file:          "/etc/docker/daemon.json",
	registryUsage: "only docker.io: Docker's registry-mirrors mirrors Docker Hub alone (the default)",
	defaults:      []string{"docker.io"},
	merge:         clientconf.DockerDaemon,
	check:         clientconf.CheckDockerDaemon,
}
