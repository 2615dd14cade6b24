package chart

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/hoststoml"
)

// containerd.hostsToml.prepend and authorizationSecret: the init container
// passes --prepend and --authorization-file from the Secret, mounted
// read-only; its rendered command, run for real on a node directory with an
// operator's own hosts.toml, puts berth first in it with the header, keeps
// the operator's host, and prints no secret.
func TestHostsTomlPrependAuthorization(t *testing.T) {
	t.Parallel()
	r := renderChart(t, "--set", "containerd.hostsToml.enabled=true", "--set", "containerd.hostsToml.prepend=true",
		"--set", "containerd.hostsToml.authorizationSecret=node-pull-token", "--set", "containerd.hostsToml.registries[0]=docker.io")
	checkAll(t, r)
	ds := r.DaemonSet.Spec.Template.Spec
	h := container(t, ds.InitContainers, "containerd-hosts-toml")
	_, opt := hostsTomlArgs(t, h)
	if !opt.Prepend || opt.Authorization == "" {
		t.Fatalf("init container args %q: want --prepend and --authorization-file", h.Args)
	}
	v := volume(t, ds.Volumes, "hosts-toml-authorization")
	if v.Secret == nil || v.Secret.SecretName != "node-pull-token" || len(v.Secret.Items) != 1 || v.Secret.Items[0].Key != "authorization" {
		t.Errorf("authorization volume %+v", v)
	}
	if r := renderChart(t, "--set", "containerd.hostsToml.enabled=true"); slices.ContainsFunc(container(t, r.DaemonSet.Spec.Template.Spec.InitContainers, "containerd-hosts-toml").Args,
		func(a string) bool { return a == "--prepend" || strings.HasPrefix(a, "--authorization-file") }) {
		t.Error("--prepend or --authorization-file rendered by default")
	}

	bin := buildBerth(t)
	dir, secretDir := t.TempDir(), t.TempDir()
	const token = "Bearer chart-test-token-5e1"
	if err := os.WriteFile(filepath.Join(secretDir, "authorization"), []byte(token), 0o400); err != nil {
		t.Fatal(err)
	}
	own := "server = \"https://registry-1.docker.io\"\n\n[host.\"https://mirror.corp.internal\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
	file := filepath.Join(dir, "docker.io", "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(own), 0o644); err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, a := range h.Args {
		a = strings.NewReplacer("--dir=/etc/containerd/certs.d", "--dir="+dir, "/etc/berth-hosts-toml", secretDir, "$(NODE_IP)", "10.0.0.7").Replace(a)
		if !strings.HasPrefix(a, "--containerd-config=") {
			args = append(args, a)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "prepended") || strings.Contains(string(out), "chart-test-token") {
		t.Fatalf("berth %q: %v\n%s", args, err, out)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	f, err := hoststoml.Parse(b)
	if err != nil || len(f.Hosts) != 2 || f.Hosts[0] != "http://10.0.0.7:5000" || f.Hosts[1] != "https://mirror.corp.internal" || !strings.Contains(string(b), token) {
		t.Errorf("prepended file: %+v %v\n%s", f, err, b)
	}
}
