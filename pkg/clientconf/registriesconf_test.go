package clientconf

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/pelletier/go-toml/v2"
)

// v2 is the part of containers-registries.conf(5) v2 the tests look at,
// decoded strictly: a key berth misspelt fails the test.
type v2 struct {
	UnqualifiedSearchRegistries []string `toml:"unqualified-search-registries"`
	ShortNameMode               string   `toml:"short-name-mode"`
	Registry                    []struct {
		Prefix             string `toml:"prefix"`
		Location           string `toml:"location"`
		Insecure           bool   `toml:"insecure"`
		Blocked            bool   `toml:"blocked"`
		MirrorByDigestOnly bool   `toml:"mirror-by-digest-only"`
		Mirror             []struct {
			Location string `toml:"location"`
			Insecure bool   `toml:"insecure"`
		} `toml:"mirror"`
	} `toml:"registry"`
	Aliases map[string]string `toml:"aliases"`
}

func decodeV2(t *testing.T, b []byte) v2 {
	t.Helper()
	var c v2
	d := toml.NewDecoder(strings.NewReader(string(b)))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		t.Fatalf("decode:\n%s\n%v", b, err)
	}
	return c
}

func TestRegistriesConfFresh(t *testing.T) {
	t.Parallel()
	regs := []Registry{
		{Name: "docker.io", Server: "https://registry-1.docker.io"},
		{Name: "127.0.0.1:5001", Server: "http://127.0.0.1:5001"},
		{Name: "registry.local:443", Server: "https://registry.local"},
	}
	b, err := RegistriesConf(nil, "http://10.0.0.5:5000", regs)
	if err != nil {
		t.Fatal(err)
	}
	c := decodeV2(t, b)
	type mir struct {
		Loc      string
		Insecure bool
	}
	type entry struct {
		Prefix, Location string
		Insecure         bool
		Mirrors          []mir
	}
	var got []entry
	for _, r := range c.Registry {
		e := entry{Prefix: r.Prefix, Location: r.Location, Insecure: r.Insecure}
		for _, m := range r.Mirror {
			e.Mirrors = append(e.Mirrors, mir{m.Location, m.Insecure})
		}
		got = append(got, e)
	}
	want := []entry{
		{"docker.io", "registry-1.docker.io", false, []mir{{"10.0.0.5:5000/docker.io", true}}},
		{"127.0.0.1:5001", "127.0.0.1:5001", true, []mir{{"10.0.0.5:5000/127.0.0.1_5001", true}}},
		{"registry.local:443", "registry.local", false, []mir{{"10.0.0.5:5000/registry.local_443", true}}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("(-want +got):\n%s\n%s", diff, b)
	}
	if p, err := CheckRegistriesConf(b, "http://10.0.0.5:5000", regs); err != nil || len(p) > 0 {
		t.Errorf("check of berth's own output: %q %v", p, err)
	}
	// An https berth: no insecure on its mirror.
	b, err = RegistriesConf(nil, "https://berth.local:5443", regs[:1])
	if err != nil {
		t.Fatal(err)
	}
	if m := decodeV2(t, b).Registry[0].Mirror[0]; m.Location != "berth.local:5443/docker.io" || m.Insecure {
		t.Errorf("https mirror: %+v", m)
	}
}

// An operator's file keeps everything: other registries, its own mirrors
// (after berth), top-level settings. Running again changes nothing.
func TestRegistriesConfMerge(t *testing.T) {
	t.Parallel()
	existing := `# operator's file
unqualified-search-registries = ["docker.io"]
short-name-mode = "enforcing"

[aliases]
  "alpine" = "docker.io/library/alpine"

[[registry]]
prefix = "docker.io"
location = "registry-1.docker.io"
[[registry.mirror]]
location = "mirror.corp:5000"

[[registry]]
location = "quay.io"
blocked = true
`
	regs := []Registry{{Name: "docker.io", Server: "https://registry-1.docker.io"}, {Name: "ghcr.io", Server: "https://ghcr.io"}}
	b, err := RegistriesConf([]byte(existing), "http://127.0.0.1:5000", regs)
	if err != nil {
		t.Fatal(err)
	}
	c := decodeV2(t, b)
	if c.ShortNameMode != "enforcing" || len(c.UnqualifiedSearchRegistries) != 1 || c.Aliases["alpine"] != "docker.io/library/alpine" {
		t.Errorf("top-level settings lost:\n%s", b)
	}
	if len(c.Registry) != 3 {
		t.Fatalf("%d registries, want 3:\n%s", len(c.Registry), b)
	}
	hub := c.Registry[0]
	if hub.Location != "registry-1.docker.io" || len(hub.Mirror) != 2 || hub.Mirror[0].Location != "127.0.0.1:5000/docker.io" ||
		!hub.Mirror[0].Insecure || hub.Mirror[1].Location != "mirror.corp:5000" {
		t.Errorf("docker.io: %+v", hub)
	}
	if q := c.Registry[1]; q.Location != "quay.io" || !q.Blocked || len(q.Mirror) != 0 {
		t.Errorf("quay.io changed: %+v", q)
	}
	if g := c.Registry[2]; g.Prefix != "ghcr.io" || g.Location != "ghcr.io" || len(g.Mirror) != 1 {
		t.Errorf("ghcr.io: %+v", g)
	}
	again, err := RegistriesConf(b, "http://127.0.0.1:5000", regs)
	if err != nil || string(again) != string(b) {
		t.Errorf("second merge changed the file (%v):\n%s\n---\n%s", err, b, again)
	}
	if p, err := CheckRegistriesConf(b, "http://127.0.0.1:5000", regs); err != nil || len(p) > 0 {
		t.Errorf("check after merge: %q %v", p, err)
	}
	if p, _ := CheckRegistriesConf([]byte(existing), "http://127.0.0.1:5000", regs); len(p) != 2 {
		t.Errorf("check before merge: %q, want 2 problems", p)
	}
}

func TestCheckRegistriesConf(t *testing.T) {
	t.Parallel()
	regs := []Registry{{Name: "127.0.0.1:5001", Server: "http://127.0.0.1:5001"}}
	for _, c := range []struct{ name, conf, want string }{
		{"port in path", "[[registry]]\nprefix = \"127.0.0.1:5001\"\nlocation = \"127.0.0.1:5001\"\n[[registry.mirror]]\nlocation = \"127.0.0.1:5000/127.0.0.1:5001\"\ninsecure = true\n", `"127.0.0.1:5000/127.0.0.1_5001"`},
		{"no insecure", "[[registry]]\nprefix = \"127.0.0.1:5001\"\nlocation = \"127.0.0.1:5001\"\n[[registry.mirror]]\nlocation = \"127.0.0.1:5000/127.0.0.1_5001\"\n", "insecure"},
		{"digest only", "[[registry]]\nprefix = \"127.0.0.1:5001\"\nlocation = \"x\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"127.0.0.1:5000/127.0.0.1_5001\"\ninsecure = true\n", "by tag"},
		{"missing", "", "no [[registry]]"},
		{"v1", "[registries.search]\nregistries = []\n", "v1"},
	} {
		p, err := CheckRegistriesConf([]byte(c.conf), "http://127.0.0.1:5000", regs)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if len(p) == 0 || !strings.Contains(strings.Join(p, "\n"), c.want) {
			t.Errorf("%s: problems %q, want one with %q", c.name, p, c.want)
		}
	}
}

func TestRegistriesConfRefuses(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		existing, mirror string
		regs             []Registry
	}{
		"v1 file":      {"[registries.search]\nregistries = ['docker.io']\n", "http://127.0.0.1:5000", []Registry{{"docker.io", "https://registry-1.docker.io"}}},
		"bad toml":     {"[[registry]\n", "http://127.0.0.1:5000", nil},
		"mirror path":  {"", "http://127.0.0.1:5000/x", []Registry{{"docker.io", "https://registry-1.docker.io"}}},
		"ipv6 name":    {"", "http://127.0.0.1:5000", []Registry{{"[::1]:5001", "http://[::1]:5001"}}},
		"listed twice": {"", "http://127.0.0.1:5000", []Registry{{"a.io", "https://a.io"}, {"a.io", "https://a.io"}}},
	} {
		if b, err := RegistriesConf([]byte(c.existing), c.mirror, c.regs); err == nil {
			t.Errorf("%s: accepted:\n%s", name, b)
		}
	}
}
