package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/pkg/clientconf"
	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/hoststoml"
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
	cmd.AddCommand(registriesConfCmd(), k3sCmd(), dockerCmd())
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
	var regs []clientconf.Registry
	var errs []error
	for _, v := range f.registries {
		if v == hoststoml.Default {
			regs = append(regs, clientconf.Registry{Name: v})
			continue
		}
		r, err := config.ParseRegistryFlag(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("--registry %s: %w", v, err))
			continue
		}
		regs = append(regs, clientconf.Registry{Name: r.Name, Server: r.Endpoints[0]})
	}
	return regs, errors.Join(errs...)
}

// run does what the flags say with one client's merge and check.
func (f *clientFlags) run(cmd *cobra.Command, header string,
	merge func(existing []byte, mirror string, regs []clientconf.Registry) ([]byte, error),
	check func(content []byte, mirror string, regs []clientconf.Registry) ([]string, error)) error {
	regs, err := f.parse()
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	var existing []byte
	if f.file != "" {
		existing, err = os.ReadFile(f.file)
		if err != nil && (f.check || !errors.Is(err, fs.ErrNotExist)) {
			return err
		}
	}
	if f.check {
		problems, err := check(existing, f.mirror, regs)
		if err != nil {
			return err
		}
		if len(problems) > 0 {
			return fmt.Errorf("%s does not send every registry through berth:\n  %s", f.file, strings.Join(problems, "\n  "))
		}
		fmt.Fprintf(out, "ok        %s: %d registries go through %s first\n", f.file, len(regs), f.mirror)
		return nil
	}
	data, err := merge(existing, f.mirror, regs)
	if err != nil {
		return err
	}
	if f.file == "" {
		if header != "" {
			fmt.Fprint(out, header)
		}
		_, err := out.Write(data)
		return err
	}
	if string(data) == string(existing) {
		fmt.Fprintf(out, "unchanged %s\n", f.file)
		return nil
	}
	if len(existing) == 0 && header != "" {
		data = append([]byte(header), data...)
	}
	if err := clientconf.WriteFile(f.file, data); err != nil {
		return err
	}
	fmt.Fprintf(out, "written   %s\n", f.file)
	return nil
}

func registriesConfCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "registries-conf",
		Short: "registries.conf (v2) for CRI-O, Podman, skopeo and buildah",
		Long: `Print (or merge into --file) a containers-registries.conf v2 file that makes
berth the first [[registry.mirror]] of each --registry.

containers/image sends no ns parameter the way containerd does, so each
mirror location names the registry as its first path segment:
127.0.0.1:5000/docker.io. A registry with a port is written HOST_PORT
(127.0.0.1:5000/127.0.0.1_5001), since an image reference's path cannot
hold a ':' ("invalid reference format"); berth reads it back as HOST:PORT.
A plain HTTP berth gets insecure = true. The --file merge re-encodes the
file: entries and settings stay, comments do not (the old file is kept).
CRI-O reads the file at start (or on SIGHUP); Podman on every command.`,
		Example: `  berth client-config registries-conf --mirror http://127.0.0.1:5000 \
    --registry docker.io --registry quay.io --file /etc/containers/registries.conf`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd, "# Mirrors written by `berth client-config registries-conf`.\n", clientconf.RegistriesConf, clientconf.CheckRegistriesConf)
		},
	}
	f.add(cmd, "/etc/containers/registries.conf")
	return cmd
}

func k3sCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "k3s",
		Short: "registries.yaml for k3s and RKE2",
		Long: `Print (or merge into --file) a k3s/RKE2 registries.yaml whose mirrors list
berth first for each --registry ("_default" is k3s's "*", every registry
without a mirror of its own). k3s writes containerd hosts.toml files from
it, so requests reach berth with ns as from containerd; after berth, k3s
falls back to the registry's default endpoint (https://NAME), and a
registry whose --registry URL is something else (a plain HTTP one) gets
that URL listed after berth. The --file merge edits the YAML in place:
other mirrors' endpoints, rewrites, configs (credentials, TLS) and comments
stay. k3s reads the file at start: restart k3s (or rke2-server/agent).`,
		Example: `  berth client-config k3s --mirror http://127.0.0.1:5000 \
    --registry docker.io --registry registry.k8s.io --file /etc/rancher/k3s/registries.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd, "# Mirrors written by `berth client-config k3s`.\n", clientconf.K3sRegistries, clientconf.CheckK3sRegistries)
		},
	}
	f.add(cmd, "/etc/rancher/k3s/registries.yaml")
	return cmd
}

func dockerCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "docker",
		Short: "daemon.json for Docker (Docker Hub only)",
		Long: `Print (or merge into --file) Docker's daemon.json with berth first in
registry-mirrors and, for a plain HTTP berth, in insecure-registries.

Docker's registry-mirrors only ever mirrors Docker Hub: pulls from any other
registry (registry.k8s.io/..., quay.io/...) go to that registry directly,
whatever daemon.json says, so --registry may only be docker.io (the
default). Docker sends no ns; berth serves such requests from its default
registry (defaultRegistry, docker.io out of the box). The --file merge keeps
every other key. Docker reads the file at start: restart dockerd.`,
		Example: `  berth client-config docker --mirror http://127.0.0.1:5000 --file /etc/docker/daemon.json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(f.registries) == 0 {
				f.registries = []string{"docker.io"}
			}
			return f.run(cmd, "", clientconf.DockerDaemon, clientconf.CheckDockerDaemon)
		},
	}
	f.add(cmd, "/etc/docker/daemon.json")
	cmd.Flags().Lookup("registry").Usage = "only docker.io: Docker's registry-mirrors mirrors Docker Hub alone (the default)"
	return cmd
}
