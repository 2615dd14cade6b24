package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseRegistryFlag(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Registry
		wantErr string
	}{
		{in: "docker.io=https://registry-1.docker.io", want: Registry{Name: "docker.io", Endpoints: []string{"https://registry-1.docker.io"}}},
		{in: "registry.k8s.io=https://a.test,https://b.test:8443", want: Registry{Name: "registry.k8s.io", Endpoints: []string{"https://a.test", "https://b.test:8443"}}},
		{in: "127.0.0.1:16001=http://127.0.0.1:16001", want: Registry{Name: "127.0.0.1:16001", Endpoints: []string{"http://127.0.0.1:16001"}}},
		{in: " quay.io = https://quay.io , ", want: Registry{Name: "quay.io", Endpoints: []string{"https://quay.io"}}},
		{in: "docker.io", want: Registry{Name: "docker.io", Endpoints: []string{"https://registry-1.docker.io"}}},
		{in: "quay.io", want: Registry{Name: "quay.io", Endpoints: []string{"https://quay.io"}}},
		{in: "127.0.0.1:5001", want: Registry{Name: "127.0.0.1:5001", Endpoints: []string{"https://127.0.0.1:5001"}}},
		{in: "docker.io/library", wantErr: "want NAME or NAME=URL"},
		{in: "=https://a.test", wantErr: "registry name: required"},
		{in: "Docker.IO=https://a.test", wantErr: "registry name"},
		{in: "docker.io=", wantErr: "no endpoint URL"},
		{in: "docker.io=registry-1.docker.io", wantErr: "want an http:// or https:// URL"},
		{in: "docker.io=https://u:secretpw@a.test", wantErr: "credentials in an endpoint URL"},
	}
	for _, tt := range tests {
		got, err := ParseRegistryFlag(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseRegistryFlag(%q): got %v, want error containing %q", tt.in, err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "secretpw") {
				t.Errorf("ParseRegistryFlag(%q): error %q shows a secret", tt.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseRegistryFlag(%q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseRegistryFlag(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestSetRegistry(t *testing.T) {
	t.Parallel()
	cfg := mustDefault(t)
	cfg.Registries[2].Username, cfg.Registries[2].Password = "u", "p"
	mirror, err := ParseRegistryFlag("quay.io=https://quay-mirror.test")
	if err != nil {
		t.Fatal(err)
	}
	local, err := ParseRegistryFlag("127.0.0.1:5000=http://127.0.0.1:5000")
	if err != nil {
		t.Fatal(err)
	}
	cfg.SetRegistry(mirror)
	cfg.SetRegistry(local)
	var got []string
	for _, r := range cfg.Registries {
		got = append(got, r.Name+"="+strings.Join(r.Endpoints, ",")+":"+r.Username)
	}
	want := []string{
		"docker.io=https://registry-1.docker.io:", "registry.k8s.io=https://registry.k8s.io:",
		"quay.io=https://quay-mirror.test:", "ghcr.io=https://ghcr.io:", "127.0.0.1:5000=http://127.0.0.1:5000:",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
}

func TestRegistryEnvKey(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"docker.io":      "DOCKER_IO",
		"127.0.0.1:5000": "127_0_0_1_5000",
		"my-reg.example": "MY_REG_EXAMPLE",
		"[::1]:5000":     "___1__5000",
	} {
		if got := RegistryEnvKey(in); got != want {
			t.Errorf("RegistryEnvKey(%q) = %q, want %q", in, got, want)
		}
	}
}
