package chart

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// values.schema.json makes helm refuse bad values before anything renders,
// naming the value.
func TestSchemaRefusesBadValues(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ set, path string }{
		{"log.level=loud", "/log/level"},
		{"log.format=xml", "/log/format"},
		{"http.port=70000", "/http/port"},
		{"peers.port=0", "/peers/port"},
		{"cache.maxSize=lots", "/cache/maxSize"},
		{"cache.highWatermark=2", "/cache/highWatermark"},
		{"cache.type=nfs", "/cache/type"},
		{"containerd.hostsToml.dialTimeout=soon", "/containerd/hostsToml/dialTimeout"},
		{"image.digest=sha256:nope", "/image/digest"},
		{"registries[0].endpoints[0]=registry-1.docker.io", "/registries/0/endpoints/0"},
		{"registries[0].access=public", "/registries/0/access"},
		{"admin.port=0", "/admin/port"},
		{"peers.stripeSize=wide", "/peers/stripeSize"},
	} {
		out, err := helm(t, "template", release, chartDir, "--namespace", namespace, "--set", c.set)
		if err == nil || !strings.Contains(err.Error(), c.path) {
			t.Errorf("--set %s: err %v, want a schema error at %s\n%.300s", c.set, err, c.path, out)
		}
	}
	for _, good := range []string{"cache.maxSize=80%", "cache.maxSize=50GiB", "cache.maxSize=1.5TB", "containerd.hostsToml.dialTimeout=1m30s", "log.level=debug", "peers.stripeSize=off", "peers.stripeSize=8MiB"} {
		if _, err := helm(t, "template", release, chartDir, "--namespace", namespace, "--set", good); err != nil {
			t.Errorf("--set %s refused: %v", good, err)
		}
	}
	if _, err := helm(t, "lint", "--strict", chartDir); err != nil {
		t.Errorf("helm lint --strict: %v", err)
	}
}

func TestChartOptions(t *testing.T) {
	t.Parallel()
	r := renderChart(t)
	if got := r.DaemonSet.Spec.Template.Spec.PriorityClassName; got != "system-node-critical" {
		t.Errorf("priorityClassName %q, want system-node-critical by default", got)
	}
	r = renderChart(t, "--set", "containerd.hostsToml.enabled=true",
		"--set", "extraVolumes[0].name=helpers", "--set", "extraVolumes[0].hostPath.path=/opt/helpers",
		"--set", "extraVolumeMounts[0].name=helpers", "--set", "extraVolumeMounts[0].mountPath=/helpers",
		"--set", "extraEnv[0].name=PATH", "--set", "extraEnv[0].value=/usr/local/bin:/helpers",
		"--set", "nodeSelector.pool=edge", "--set", "tolerations[0].key=dedicated", "--set", "tolerations[0].operator=Exists")
	checkAll(t, r)
	ds := r.DaemonSet.Spec.Template.Spec
	berth := container(t, ds.Containers, "berth")
	if v := volume(t, ds.Volumes, "helpers"); v.HostPath == nil || v.HostPath.Path != "/opt/helpers" {
		t.Errorf("extraVolumes: %+v", v)
	}
	if m := mountedAt(t, berth, "/helpers/x"); m.Name != "helpers" {
		t.Errorf("extraVolumeMounts: %+v", m)
	}
	if !slices.ContainsFunc(berth.Env, func(e corev1.EnvVar) bool { return e.Name == "PATH" && e.Value == "/usr/local/bin:/helpers" }) {
		t.Errorf("extraEnv not set: %+v", berth.Env)
	}
	if ds.NodeSelector["pool"] != "edge" || len(ds.Tolerations) != 1 || ds.Tolerations[0].Key != "dedicated" {
		t.Errorf("nodeSelector %v tolerations %+v", ds.NodeSelector, ds.Tolerations)
	}
	h := container(t, ds.InitContainers, "containerd-hosts-toml")
	if !slices.Contains(h.Args, "--containerd-config=/host/containerd-config/config.toml") || slices.Contains(h.Args, "--fix-containerd-config") {
		t.Errorf("hosts-toml args %q: want the containerd config checked, not fixed, by default", h.Args)
	}
	if v := volume(t, ds.Volumes, "containerd-config"); v.HostPath == nil || v.HostPath.Path != "/etc/containerd" {
		t.Errorf("containerd-config volume %+v", v)
	}
	hostsTomlArgs(t, h) // the containerd config mount is read-only

	r = renderChart(t, "--set", "containerd.hostsToml.enabled=true", "--set", "containerd.config.fix=true", "--set", "containerd.config.path=/etc/k0s/containerd.toml")
	h = container(t, r.DaemonSet.Spec.Template.Spec.InitContainers, "containerd-hosts-toml")
	if !slices.Contains(h.Args, "--fix-containerd-config") || !slices.Contains(h.Args, "--containerd-config=/host/containerd-config/containerd.toml") {
		t.Errorf("fix: args %q", h.Args)
	}
	hostsTomlArgs(t, h) // now mounted read-write
	r = renderChart(t, "--set", "containerd.hostsToml.enabled=true", "--set", "containerd.config.check=false")
	h = container(t, r.DaemonSet.Spec.Template.Spec.InitContainers, "containerd-hosts-toml")
	if slices.ContainsFunc(h.Args, func(a string) bool { return strings.HasPrefix(a, "--containerd-config") }) {
		t.Errorf("check off: args %q", h.Args)
	}
}
