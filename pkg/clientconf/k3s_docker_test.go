package clientconf

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

// k3sFile is registries.yaml as k3s and RKE2 document it (mirrors with
// endpoint and rewrite, configs with auth and tls), decoded strictly: a
// key berth misspelt or invented fails the test.
type k3sFile struct {
	Mirrors map[string]struct {
		Endpoint []string          `yaml:"endpoint"`
		Rewrite  map[string]string `yaml:"rewrite"`
	} `yaml:"mirrors"`
	Configs map[string]struct {
		Auth *struct {
			Username string `yaml:"username"`
			Password string `yaml:"password"`
		} `yaml:"auth"`
		TLS *struct {
			InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
		} `yaml:"tls"`
	} `yaml:"configs"`
}

func decodeK3s(t *testing.T, b []byte) k3sFile {
	t.Helper()
	var f k3sFile
	d := yaml.NewDecoder(bytes.NewReader(b))
	d.KnownFields(true)
	if err := d.Decode(&f); err != nil {
		t.Fatalf("decode:\n%s\n%v", b, err)
	}
	return f
}

func TestK3sRegistries(t *testing.T) {
	t.Parallel()
	regs := []Registry{
		{Name: "docker.io", Server: "https://registry-1.docker.io"},
		{Name: "registry.k8s.io", Server: "https://registry.k8s.io"},
		{Name: "10.0.0.9:5001", Server: "http://10.0.0.9:5001"},
		{Name: "_default"},
	}
	b, err := K3sRegistries(nil, "http://127.0.0.1:5000", regs)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(b, []byte("\n")) {
		t.Errorf("no final newline: %q", b)
	}
	f := decodeK3s(t, b)
	got := map[string][]string{}
	for n, m := range f.Mirrors {
		got[n] = m.Endpoint
	}
	want := map[string][]string{
		"docker.io":       {"http://127.0.0.1:5000"},
		"registry.k8s.io": {"http://127.0.0.1:5000"},
		// k3s falls back to https://NAME by itself; a plain HTTP registry
		// needs its server listed after berth.
		"10.0.0.9:5001": {"http://127.0.0.1:5000", "http://10.0.0.9:5001"},
		"*":             {"http://127.0.0.1:5000"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("(-want +got):\n%s\n%s", diff, b)
	}
	if p, err := CheckK3sRegistries(b, "http://127.0.0.1:5000", regs); err != nil || len(p) > 0 {
		t.Errorf("check of berth's own output: %q %v", p, err)
	}
}

func TestK3sRegistriesMerge(t *testing.T) {
	t.Parallel()
	existing := `# cluster registries, managed by the platform team
mirrors:
  docker.io:
    endpoint:
      - "https://mirror.corp.internal" # the corp mirror
    rewrite:
      "^library/(.*)": "hub/library/$1"
  quay.io:
    endpoint: ["https://quay-mirror.corp.internal"]
configs:
  "mirror.corp.internal":
    auth:
      username: puller
      password: s3cret
`
	regs := []Registry{{Name: "docker.io", Server: "https://registry-1.docker.io"}, {Name: "ghcr.io", Server: "https://ghcr.io"}}
	b, err := K3sRegistries([]byte(existing), "http://127.0.0.1:5000", regs)
	if err != nil {
		t.Fatal(err)
	}
	f := decodeK3s(t, b)
	if got := f.Mirrors["docker.io"].Endpoint; !cmp.Equal(got, []string{"http://127.0.0.1:5000", "https://mirror.corp.internal"}) {
		t.Errorf("docker.io endpoints %q:\n%s", got, b)
	}
	if f.Mirrors["docker.io"].Rewrite["^library/(.*)"] != "hub/library/$1" {
		t.Errorf("rewrite lost:\n%s", b)
	}
	if got := f.Mirrors["quay.io"].Endpoint; !cmp.Equal(got, []string{"https://quay-mirror.corp.internal"}) {
		t.Errorf("quay.io changed: %q", got)
	}
	if got := f.Mirrors["ghcr.io"].Endpoint; !cmp.Equal(got, []string{"http://127.0.0.1:5000"}) {
		t.Errorf("ghcr.io %q", got)
	}
	if a := f.Configs["mirror.corp.internal"].Auth; a == nil || a.Password != "s3cret" {
		t.Errorf("configs lost:\n%s", b)
	}
	if !strings.Contains(string(b), "# cluster registries, managed by the platform team") || !strings.Contains(string(b), "# the corp mirror") {
		t.Errorf("comment lost:\n%s", b)
	}
	again, err := K3sRegistries(b, "http://127.0.0.1:5000", regs)
	if err != nil || string(again) != string(b) {
		t.Errorf("second merge changed the file (%v):\n%s\n---\n%s", err, b, again)
	}
	if p, _ := CheckK3sRegistries([]byte(existing), "http://127.0.0.1:5000", regs); len(p) != 2 {
		t.Errorf("check before merge: %q, want 2 problems", p)
	}
	for name, bad := range map[string]string{"not yaml": "mirrors: [", "mirrors a list": "mirrors: [a]\n", "endpoint a map": "mirrors:\n  docker.io:\n    endpoint: {a: b}\n"} {
		if out, err := K3sRegistries([]byte(bad), "http://127.0.0.1:5000", regs); err == nil {
			t.Errorf("%s accepted:\n%s", name, out)
		}
	}
}

// dockerDaemon is the part of Docker's daemon.json berth writes.
type dockerDaemon struct {
	Mirrors  []string `json:"registry-mirrors"`
	Insecure []string `json:"insecure-registries"`
	LogLevel string   `json:"log-level"`
	Storage  string   `json:"storage-driver"`
}

func TestDockerDaemon(t *testing.T) {
	t.Parallel()
	hub := []Registry{{Name: "docker.io", Server: "https://registry-1.docker.io"}}
	existing := `{"log-level": "warn", "storage-driver": "overlay2", "registry-mirrors": ["https://mirror.gcr.io"], "insecure-registries": ["10.0.0.9:5001"]}`
	b, err := DockerDaemon([]byte(existing), "http://127.0.0.1:5000", hub)
	if err != nil {
		t.Fatal(err)
	}
	var d dockerDaemon
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%v:\n%s", err, b)
	}
	want := dockerDaemon{Mirrors: []string{"http://127.0.0.1:5000", "https://mirror.gcr.io"}, Insecure: []string{"10.0.0.9:5001", "127.0.0.1:5000"},
		LogLevel: "warn", Storage: "overlay2"}
	if diff := cmp.Diff(want, d); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if again, err := DockerDaemon(b, "http://127.0.0.1:5000", hub); err != nil || string(again) != string(b) {
		t.Errorf("second merge changed the file (%v):\n%s", err, again)
	}
	if p, err := CheckDockerDaemon(b, "http://127.0.0.1:5000", hub); err != nil || len(p) > 0 {
		t.Errorf("check after merge: %q %v", p, err)
	}
	if p, _ := CheckDockerDaemon([]byte(existing), "http://127.0.0.1:5000", hub); len(p) != 2 {
		t.Errorf("check before merge: %q, want 2 problems", p)
	}
	// A fresh file for an https berth: no insecure-registries.
	b, err = DockerDaemon(nil, "https://berth.local:5443", hub)
	if err != nil || strings.Contains(string(b), "insecure") || !strings.Contains(string(b), `"https://berth.local:5443"`) {
		t.Errorf("https berth: %v\n%s", err, b)
	}
	// Anything but Docker Hub is refused, saying why.
	_, err = DockerDaemon(nil, "http://127.0.0.1:5000", []Registry{{Name: "quay.io", Server: "https://quay.io"}})
	if err == nil || !strings.Contains(err.Error(), "only mirrors Docker Hub") {
		t.Errorf("quay.io: %v", err)
	}
	if _, err := DockerDaemon([]byte(`{"registry-mirrors": "http://x"}`), "http://127.0.0.1:5000", hub); err == nil {
		t.Error("a registry-mirrors string accepted")
	}
}
