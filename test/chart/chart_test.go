package chart

import (
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/hoststoml"
)

// Values the pod's downward API would give, for expanding $(VAR).
var downward = map[string]string{"status.podIP": "10.244.1.7", "status.hostIP": "192.168.0.11", "spec.nodeName": "node-a"}

func TestDefaultValues(t *testing.T) {
	t.Parallel()
	r := renderChart(t)
	cfg := checkAll(t, r)
	ds := r.DaemonSet.Spec.Template.Spec
	berth := container(t, ds.Containers, "berth")
	if p := port(t, berth, "http"); p.HostPort != 5000 || p.ContainerPort != 5000 {
		t.Errorf("http port %+v, want hostPort 5000", p)
	}
	if ds.HostNetwork {
		t.Error("hostNetwork on by default")
	}
	if vol := volume(t, ds.Volumes, "cache"); vol.HostPath == nil || vol.HostPath.Path != "/var/lib/berth" {
		t.Errorf("cache volume %+v, want hostPath /var/lib/berth", vol.VolumeSource)
	}
	if cfg.Cache.MaxSize != "20GiB" {
		t.Errorf("cache.maxSize %q, want the default 20GiB", cfg.Cache.MaxSize)
	}
	// The prepare-cache init container must hand the cache to the user berth runs as.
	prep := container(t, ds.InitContainers, "prepare-cache")
	uid := strconv.FormatInt(*ds.SecurityContext.RunAsUser, 10)
	if !slices.Contains(prep.Args, "--uid="+uid) || !slices.Contains(prep.Args, "/var/lib/berth") {
		t.Errorf("prepare-cache args %q do not chown /var/lib/berth to %s", prep.Args, uid)
	}
	if slices.ContainsFunc(ds.InitContainers, func(c corev1.Container) bool { return c.Name == "containerd-hosts-toml" }) {
		t.Error("hosts.toml init container is on by default; it must be opt-in")
	}
	key := r.Secrets[r.DaemonSet.Name].Data["gossip-key"]
	if len(key) < 32 {
		t.Errorf("generated gossip key is %d bytes, want >= 32", len(key))
	}
	if len(r.ServiceMonitors) != 0 || len(r.NetworkPolicies) != 0 {
		t.Error("ServiceMonitor or NetworkPolicy rendered by default")
	}
	// The admin listener: on the pod, never on the node.
	if p := port(t, berth, "admin"); p.ContainerPort != 5001 || p.HostPort != 0 || cfg.Admin.Addr != ":5001" {
		t.Errorf("admin port %+v, admin.addr %q: want 5001 on the pod only", p, cfg.Admin.Addr)
	}
	if cfg.Auth.ClientAuth() {
		t.Errorf("client auth configured by default: %+v", cfg.Auth)
	}
}

func TestAllOn(t *testing.T) {
	t.Parallel()
	r := renderChart(t, "-f", "testdata/all-on.yaml")
	cfg := checkAll(t, r)
	ds := r.DaemonSet.Spec.Template.Spec
	if !ds.HostNetwork || ds.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork %v dnsPolicy %q, want true and ClusterFirstWithHostNet", ds.HostNetwork, ds.DNSPolicy)
	}
	berth := container(t, ds.Containers, "berth")
	if p := port(t, berth, "https"); p.ContainerPort != 5443 {
		t.Errorf("https port %+v", p)
	}
	if cfg.Listen.TLS.Addr != ":5443" || cfg.Listen.Addr != ":5001" {
		t.Errorf("listen %+v", cfg.Listen)
	}
	if got := r.Secrets["mirror"].Data["gossip-key"]; string(got) != "not-a-real-key-only-for-tests" {
		t.Errorf("gossip key %q, want the given one", got)
	}
	if got := r.Secrets["mirror"].Data["registry-docker.io-password"]; string(got) != "hunter2" {
		t.Errorf("docker.io password %q", got)
	}
	if cfg.TagTTL.D().String() != "5m0s" || cfg.Peers.RejoinInterval.D().String() != "15s" {
		t.Errorf("config overrides not merged: tagTTL %s rejoinInterval %s", cfg.TagTTL, cfg.Peers.RejoinInterval)
	}
	if len(r.ServiceMonitors) != 1 || r.ServiceMonitors[0].Namespace != "monitoring" {
		t.Fatalf("ServiceMonitors %+v", r.ServiceMonitors)
	}
	// Prometheus scrapes the admin port, which only adminFrom may reach.
	if ep := r.ServiceMonitors[0].Spec.Endpoints; len(ep) != 1 || ep[0].Port != "admin" || ep[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v, want /metrics on port admin", ep)
	}
	if p := port(t, berth, "admin"); p.ContainerPort != 5002 || p.HostPort != 0 || cfg.Admin.Addr != ":5002" {
		t.Errorf("admin port %+v, admin.addr %q", p, cfg.Admin.Addr)
	}
	if !slices.ContainsFunc(r.Services[0].Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "admin" && p.Port == 5002 }) {
		t.Errorf("the Service has no admin port: %+v", r.Services[0].Spec.Ports)
	}
	if len(r.NetworkPolicies) != 1 {
		t.Fatalf("NetworkPolicies %d, want 1", len(r.NetworkPolicies))
	}
	for _, rule := range r.NetworkPolicies[0].Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port.String() == "admin" && (len(rule.From) != 1 || rule.From[0].NamespaceSelector == nil) {
				t.Errorf("admin port open to %+v, want only adminFrom", rule.From)
			}
		}
	}
	// Client auth: the files are in the Secret, mounted where the config says.
	if cfg.Auth.Htpasswd == "" || cfg.Auth.Tokens == "" || cfg.Auth.Realm != "site-mirror" || len(cfg.Auth.Groups["builders"]) != 2 {
		t.Errorf("auth %+v", cfg.Auth)
	}
	for _, f := range []string{cfg.Auth.Htpasswd, cfg.Auth.Tokens} {
		mountedAt(t, berth, f)
	}
	if got := string(r.Secrets["mirror"].Data["auth-htpasswd"]); !strings.HasPrefix(got, "alice:$2y$") {
		t.Errorf("htpasswd in the Secret: %q", got)
	}
	if _, ok := r.ConfigMaps["mirror-dashboard"].Data["berth.json"]; !ok {
		t.Error("dashboard ConfigMap lacks berth.json")
	}

	h := container(t, ds.InitContainers, "containerd-hosts-toml")
	hosts, opt := hostsTomlArgs(t, h)
	names := make([]string, len(hosts))
	for i, x := range hosts {
		names[i] = x.Name
	}
	if want := []string{"docker.io", "quay.io", "ghcr.io", "_default"}; !slices.Equal(names, want) {
		t.Errorf("hosts-toml registries %q, want %q", names, want)
	}
	if opt.Mirror != "http://127.0.0.1:5001" || opt.DialTimeout.String() != "500ms" {
		t.Errorf("hosts-toml mirror %q dial %s, want http://127.0.0.1:5001 and 500ms", opt.Mirror, opt.DialTimeout)
	}
	if hosts[1].Server != "https://quay.io" {
		t.Errorf("quay.io server %q, want its first endpoint", hosts[1].Server)
	}
}

func TestHostsTomlWithHostPort(t *testing.T) {
	t.Parallel()
	r := renderChart(t, "--set", "containerd.hostsToml.enabled=true", "--set", "http.hostPort.port=30500")
	checkAll(t, r)
	h := container(t, r.DaemonSet.Spec.Template.Spec.InitContainers, "containerd-hosts-toml")
	hosts, opt := hostsTomlArgs(t, h)
	if opt.Mirror != "http://192.168.0.11:30500" {
		t.Errorf("mirror %q, want the node IP and the hostPort", opt.Mirror)
	}
	if len(hosts) != 4 || hosts[0].Name != "docker.io" || hosts[0].Server != "https://registry-1.docker.io" {
		t.Errorf("hosts %+v, want every configured registry", hosts)
	}
	if !slices.Contains(h.Args, "--prune") {
		t.Error("prune is on by default but not passed")
	}
}

// checkAll runs the checks every rendering must pass and returns the berth
// config the pod would run with.
func checkAll(t *testing.T, r *rendered) *config.Config {
	t.Helper()
	ds := r.DaemonSet.Spec.Template.Spec
	berth := container(t, ds.Containers, "berth")
	checkSecurity(t, r)
	checkProbes(t, berth)
	checkVolumes(t, r)
	if want := []string{"serve", "--config", "/etc/berth/config.yaml"}; !slices.Equal(berth.Args, want) {
		t.Errorf("berth args %q, want %q", berth.Args, want)
	}
	mountedAt(t, berth, "/etc/berth/config.yaml")
	cfg := podConfig(t, r, berth)
	checkConfigWiring(t, r, berth, cfg)
	return cfg
}

func checkSecurity(t *testing.T, r *rendered) {
	t.Helper()
	ds := r.DaemonSet.Spec.Template.Spec
	psc := ds.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod securityContext %+v, want runAsNonRoot and a non-zero runAsUser", psc)
	}
	berth := container(t, ds.Containers, "berth")
	sc := berth.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("berth securityContext %+v, want read-only root, no escalation, all capabilities dropped", sc)
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		t.Error("berth container runs as root")
	}
	for _, c := range ds.InitContainers {
		sc := c.SecurityContext
		if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("init container %s securityContext %+v: want all capabilities dropped, read-only root", c.Name, sc)
		}
		if len(sc.Capabilities.Add) > 1 || (len(sc.Capabilities.Add) == 1 && sc.Capabilities.Add[0] != "CHOWN") {
			t.Errorf("init container %s adds %v; at most CHOWN is needed", c.Name, sc.Capabilities.Add)
		}
	}
	if ds.AutomountServiceAccountToken == nil || *ds.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token; berth calls no Kubernetes API")
	}
}

func checkProbes(t *testing.T, c *corev1.Container) {
	t.Helper()
	for name, want := range map[string]struct {
		p    *corev1.Probe
		path string
	}{"liveness": {c.LivenessProbe, "/healthz"}, "readiness": {c.ReadinessProbe, "/readyz"}, "startup": {c.StartupProbe, "/healthz"}} {
		if want.p == nil || want.p.HTTPGet == nil {
			t.Errorf("%s probe missing or not HTTP", name)
			continue
		}
		if want.p.HTTPGet.Path != want.path || want.p.HTTPGet.Port.String() != "http" {
			t.Errorf("%s probe %s on %s, want %s on the http port", name, want.p.HTTPGet.Path, want.p.HTTPGet.Port.String(), want.path)
		}
	}
	port(t, c, "http")
}

// checkVolumes checks every mount names a volume, and every ConfigMap and
// Secret key a volume projects exists in the rendered objects (Secrets
// not rendered by the chart must be named by the values: existingSecret).
func checkVolumes(t *testing.T, r *rendered) {
	t.Helper()
	ds := r.DaemonSet.Spec.Template.Spec
	for _, c := range append(slices.Clone(ds.InitContainers), ds.Containers...) {
		for _, m := range c.VolumeMounts {
			volume(t, ds.Volumes, m.Name)
		}
	}
	for _, v := range ds.Volumes {
		if v.ConfigMap != nil {
			if cm, ok := r.ConfigMaps[v.ConfigMap.Name]; !ok || cm.Data["config.yaml"] == "" {
				t.Errorf("volume %s: ConfigMap %s not rendered or without config.yaml", v.Name, v.ConfigMap.Name)
			}
		}
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			s, ok := r.Secrets[src.Secret.Name]
			for _, it := range src.Secret.Items {
				if ok && s.Data[it.Key] == nil {
					t.Errorf("volume %s: Secret %s has no key %s", v.Name, s.Name, it.Key)
				}
			}
		}
	}
}

// podConfig parses the rendered config file, applies the berth container's
// BERTH_* environment as the pod would see it, and validates the result
// with berth's own config package.
func podConfig(t *testing.T, r *rendered, berth *corev1.Container) *config.Config {
	t.Helper()
	cm := r.ConfigMaps[volume(t, r.DaemonSet.Spec.Template.Spec.Volumes, "config").ConfigMap.Name]
	cfg, err := config.Parse([]byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatalf("rendered config.yaml does not parse: %v\n%s", err, cm.Data["config.yaml"])
	}
	env := environ(t, berth)
	if unknown := config.UnknownEnv(env); len(unknown) > 0 {
		t.Errorf("the pod sets BERTH_* variables berth does not read: %q", unknown)
	}
	// Resolve reads the gossip key the pod mounts: give it the key the chart
	// rendered (or, for an existing Secret, a key of the test's own) in a
	// file here, then put back the path the pod reads.
	podKeyPath := cfg.Peers.SecretFile
	key := r.Secrets[r.DaemonSet.Name].Data["gossip-key"]
	if len(key) == 0 {
		key = []byte("a-test-key-of-32-bytes-for-gossip")
	}
	keyFile := filepath.Join(t.TempDir(), "gossip-key")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "BERTH_PEERS_SECRET_FILE="); ok {
			podKeyPath = v
		}
	}
	resolveEnv := env
	if podKeyPath != "" {
		resolveEnv = append(slices.Clip(env), "BERTH_PEERS_SECRET_FILE="+keyFile)
	}
	if err := config.Resolve(cfg, resolveEnv, nil); err != nil {
		t.Fatalf("the config the pod runs with is invalid: %v\n%s", err, cm.Data["config.yaml"])
	}
	if cfg.Peers.SecretFile == keyFile {
		cfg.Peers.SecretFile = podKeyPath
	}
	return cfg
}

// environ expands the container's env as the kubelet does: downward API
// fields, then $(VAR) references to earlier variables.
func environ(t *testing.T, c *corev1.Container) []string {
	t.Helper()
	vars := map[string]string{}
	var env []string
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			switch {
			case e.ValueFrom.FieldRef != nil:
				var ok bool
				if v, ok = downward[e.ValueFrom.FieldRef.FieldPath]; !ok {
					t.Fatalf("env %s: unexpected field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
				}
			case e.ValueFrom.ResourceFieldRef != nil:
				v = "536870912"
			default:
				t.Fatalf("env %s: unexpected valueFrom", e.Name)
			}
		}
		v = ref.ReplaceAllStringFunc(v, func(m string) string {
			name := ref.FindStringSubmatch(m)[1]
			if x, ok := vars[name]; ok {
				return x
			}
			t.Errorf("env %s refers to $(%s), not defined before it", e.Name, name)
			return m
		})
		vars[e.Name] = v
		env = append(env, e.Name+"="+v)
	}
	return env
}

// checkConfigWiring checks the config against the pod: files it names are
// mounted, the cache dir is the cache volume, ports and peers match.
func checkConfigWiring(t *testing.T, r *rendered, berth *corev1.Container, cfg *config.Config) {
	t.Helper()
	ds := r.DaemonSet.Spec.Template.Spec
	cacheMount := mountedAt(t, berth, cfg.Cache.Dir)
	if cacheMount.Name != "cache" || cacheMount.ReadOnly {
		t.Errorf("cache.dir %s is on volume %s (read-only %v), want the writable cache volume", cfg.Cache.Dir, cacheMount.Name, cacheMount.ReadOnly)
	}
	if ed := volume(t, ds.Volumes, "cache").EmptyDir; ed != nil {
		quota, err := config.ParseSize(cfg.Cache.MaxSize)
		if err != nil {
			t.Fatal(err)
		}
		if ed.SizeLimit == nil || ed.SizeLimit.Cmp(*resource.NewQuantity(quota, resource.BinarySI)) != 0 {
			t.Errorf("emptyDir sizeLimit %v, want cache.maxSize %s (%d bytes)", ed.SizeLimit, cfg.Cache.MaxSize, quota)
		}
	}
	files := []string{cfg.Peers.SecretFile, cfg.Listen.TLS.CertFile, cfg.Listen.TLS.KeyFile}
	for _, reg := range cfg.Registries {
		files = append(files, reg.PasswordFile)
	}
	for _, f := range files {
		if f != "" {
			checkFileMounted(t, r, berth, f)
		}
	}
	_, httpPort, _ := net.SplitHostPort(cfg.Listen.Addr)
	if strconv.Itoa(int(port(t, berth, "http").ContainerPort)) != httpPort {
		t.Errorf("listen.addr %s does not match the http containerPort", cfg.Listen.Addr)
	}
	if cfg.Peers.Bind == "" {
		return
	}
	if want := downward["status.podIP"] + ":" + httpPort; cfg.Peers.Advertise != want {
		t.Errorf("peers.advertise %q, want %q", cfg.Peers.Advertise, want)
	}
	gossip := strconv.Itoa(int(port(t, berth, "gossip-udp").ContainerPort))
	if want := downward["status.podIP"] + ":" + gossip; cfg.Peers.Bind != want {
		t.Errorf("peers.bind %q, want %q", cfg.Peers.Bind, want)
	}
	checkJoin(t, r, cfg.Peers.Join, gossip)
}

func checkJoin(t *testing.T, r *rendered, join []string, gossip string) {
	t.Helper()
	if len(join) != 1 {
		t.Fatalf("peers.join %q, want the headless Service", join)
	}
	host, p, err := net.SplitHostPort(join[0])
	if err != nil || p != gossip {
		t.Errorf("peers.join %q: want port %s", join[0], gossip)
	}
	for _, s := range r.Services {
		if !strings.HasPrefix(host, s.Name+"."+namespace+".svc.") {
			continue
		}
		if s.Spec.ClusterIP != corev1.ClusterIPNone || !s.Spec.PublishNotReadyAddresses {
			t.Errorf("Service %s: want headless with publishNotReadyAddresses (pods join before they are ready)", s.Name)
		}
		for k, v := range s.Spec.Selector {
			if r.DaemonSet.Spec.Template.Labels[k] != v {
				t.Errorf("Service %s selects %s=%s, which the pods lack", s.Name, k, v)
			}
		}
		return
	}
	t.Errorf("peers.join %s names no rendered Service", join[0])
}

// checkFileMounted checks a file the config names will exist in the pod:
// under a mount, and for projected/secret volumes, as one of its paths.
func checkFileMounted(t *testing.T, r *rendered, c *corev1.Container, file string) {
	t.Helper()
	m := mountedAt(t, c, file)
	rel := strings.TrimPrefix(strings.TrimPrefix(file, m.MountPath), "/")
	v := volume(t, r.DaemonSet.Spec.Template.Spec.Volumes, m.Name)
	var paths []string
	switch {
	case v.Projected != nil:
		for _, s := range v.Projected.Sources {
			for _, it := range s.Secret.Items {
				paths = append(paths, it.Path)
			}
		}
	case v.Secret != nil && v.Secret.SecretName != "":
		paths = []string{"tls.crt", "tls.key"} // a kubernetes.io/tls Secret's keys
	default:
		t.Errorf("%s is on volume %s, which holds no such file", file, m.Name)
		return
	}
	if !slices.Contains(paths, rel) {
		t.Errorf("%s: volume %s projects %q, not %s", file, m.Name, paths, rel)
	}
}

// hostsTomlArgs reads the init container's `berth hosts-toml` flags and
// renders each file with pkg/hoststoml, as the container will.
func hostsTomlArgs(t *testing.T, c *corev1.Container) ([]hoststoml.Host, hoststoml.Options) {
	t.Helper()
	if len(c.Args) == 0 || c.Args[0] != "hosts-toml" {
		t.Fatalf("init container %s args %q, want hosts-toml", c.Name, c.Args)
	}
	env := map[string]string{}
	for _, kv := range environ(t, c) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	var hosts []hoststoml.Host
	var opt hoststoml.Options
	for _, a := range c.Args[1:] {
		a = os.Expand(strings.NewReplacer("$(", "${", ")", "}").Replace(a), func(k string) string { return env[k] })
		flag, val, _ := strings.Cut(a, "=")
		switch flag {
		case "--mirror":
			opt.Mirror = hoststoml.UnbracketIPv4(val)
		case "--containerd-config":
			if m := mountedAt(t, c, val); m.ReadOnly == slices.Contains(c.Args, "--fix-containerd-config") {
				t.Errorf("containerd config %s mounted read-only %v, want read-write only to fix it", val, m.ReadOnly)
			}
		case "--fix-containerd-config":
		case "--dial-timeout":
			d, err := config.ParseDuration(val)
			if err != nil {
				t.Fatal(err)
			}
			opt.DialTimeout = d.D()
		case "--registry":
			name, server, ok := strings.Cut(val, "=")
			if !ok {
				server = hoststoml.KnownServer(name)
			}
			hosts = append(hosts, hoststoml.Host{Name: name, Server: server})
		case "--dir":
			if mountedAt(t, c, path.Join(val, "x")).MountPath != val {
				t.Errorf("--dir %s is not the mounted host directory", val)
			}
		case "--prune":
		case "--prepend":
			opt.Prepend = true
		case "--authorization-file":
			if m := mountedAt(t, c, val); !m.ReadOnly {
				t.Errorf("authorization file %s mounted read-write", val)
			}
			opt.Authorization = "Bearer from-the-secret"
		default:
			t.Errorf("hosts-toml: unexpected argument %q", a)
		}
	}
	for _, h := range hosts {
		if _, err := hoststoml.Render(h, opt); err != nil {
			t.Errorf("hosts-toml would fail: %v", err)
		}
	}
	return hosts, opt
}
