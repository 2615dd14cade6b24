package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func mustDefault(t *testing.T) *Config {
	t.Helper()
	cfg, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestDefault(t *testing.T) {
	t.Parallel()
	cfg := mustDefault(t)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("default does not validate: %v", err)
	}
	// What issue 3 promises of a bare `berth serve`.
	if cfg.Cache.Dir != "./berth-data" || cfg.DefaultRegistry != "docker.io" || cfg.TagTTL.D().Seconds() != 60 {
		t.Errorf("default: dir %q, defaultRegistry %q, tagTTL %s", cfg.Cache.Dir, cfg.DefaultRegistry, cfg.TagTTL)
	}
	var names []string
	for _, r := range cfg.Registries {
		names = append(names, r.Name)
	}
	if diff := cmp.Diff([]string{"docker.io", "registry.k8s.io", "quay.io", "ghcr.io"}, names); diff != "" {
		t.Errorf("default registries (-want +got):\n%s", diff)
	}
	if !bytes.Equal(DefaultYAML(), defaultYAML) {
		t.Error("DefaultYAML differs from the embedded file")
	}
	DefaultYAML()[0] = 'X' // the caller owns the copy
	if defaultYAML[0] == 'X' {
		t.Error("DefaultYAML returned the embedded slice itself")
	}
	parsed, err := Parse(DefaultYAML())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cfg, parsed); diff != "" {
		t.Errorf("Parse(DefaultYAML()) differs from Default() (-want +got):\n%s", diff)
	}
}

// leafPaths lists the YAML paths of v's scalar and list fields, with "[]"
// for slice indices; onlySet keeps those holding a non-zero value.
func leafPaths(v reflect.Value, path string, onlySet bool, out map[string]bool) {
	switch {
	case v.Kind() == reflect.Struct:
		for _, f := range reflect.VisibleFields(v.Type()) {
			if name := yamlName(f); name != "" {
				leafPaths(v.FieldByIndex(f.Index), join(path, name), onlySet, out)
			}
		}
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		if !onlySet {
			leafPaths(reflect.New(v.Type().Elem()).Elem(), path+"[]", false, out)
		}
		for i := 0; i < v.Len(); i++ {
			leafPaths(v.Index(i), path+"[]", onlySet, out)
		}
	case !onlySet || !v.IsZero():
		out[path] = true
	}
}

func TestFullRoundTrip(t *testing.T) {
	t.Parallel()
	cfg, err := Load(filepath.Join("testdata", "full.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("full.yaml does not validate: %v", err)
	}
	all, set := map[string]bool{}, map[string]bool{}
	leafPaths(reflect.ValueOf(*cfg), "", false, all)
	leafPaths(reflect.ValueOf(*cfg), "", true, set)
	def := map[string]bool{}
	leafPaths(reflect.ValueOf(*mustDefault(t)), "", true, def)
	for p := range all {
		if !set[p] {
			t.Errorf("testdata/full.yaml leaves %s unset: set every field", p)
		}
	}
	out, err := Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(out)
	if err != nil {
		t.Fatalf("parse marshalled config: %v\n%s", err, out)
	}
	if diff := cmp.Diff(cfg, again); diff != "" {
		t.Errorf("Parse(Marshal(full)) differs (-want +got):\n%s", diff)
	}
	// A field the file sets to its default value would not prove it is read.
	d := mustDefault(t)
	for _, c := range []struct {
		name      string
		got, dflt any
	}{
		{"listen.addr", cfg.Listen.Addr, d.Listen.Addr},
		{"listen.maxConns", cfg.Listen.MaxConns, d.Listen.MaxConns},
		{"listen.readHeaderTimeout", cfg.Listen.ReadHeaderTimeout, d.Listen.ReadHeaderTimeout},
		{"listen.idleTimeout", cfg.Listen.IdleTimeout, d.Listen.IdleTimeout},
		{"listen.writeTimeout", cfg.Listen.WriteTimeout, d.Listen.WriteTimeout},
		{"fetches", cfg.Fetches, d.Fetches},
		{"cache", cfg.Cache, d.Cache},
		{"tagTTL", cfg.TagTTL, d.TagTTL},
		{"fillTimeout", cfg.FillTimeout, d.FillTimeout},
		{"peers.timeout", cfg.Peers.Timeout, d.Peers.Timeout},
		{"peers.askNext", cfg.Peers.AskNext, d.Peers.AskNext},
		{"peers.fanout", cfg.Peers.Fanout, d.Peers.Fanout},
		{"peers.rejoinInterval", cfg.Peers.RejoinInterval, d.Peers.RejoinInterval},
		{"log", cfg.Log, d.Log},
		{"metrics", cfg.Metrics, d.Metrics},
		{"shutdownGrace", cfg.ShutdownGrace, d.ShutdownGrace},
	} {
		if cmp.Equal(c.got, c.dflt) {
			t.Errorf("full.yaml sets %s to its default %v", c.name, c.got)
		}
	}
}

func TestDefaultRoundTrip(t *testing.T) {
	t.Parallel()
	cfg := mustDefault(t)
	out, err := Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cfg, again, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Parse(Marshal(default)) differs (-want +got):\n%s", diff)
	}
	if bytes.Contains(out, []byte("timeouts")) {
		t.Errorf("zero per-registry timeouts are marshalled:\n%s", out)
	}
}

func TestParseKeepsDefaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want func(*Config) // edits the default into the expected result
	}{
		{"empty file", "", func(*Config) {}},
		{"only comments", "# nothing\n", func(*Config) {}},
		{"one nested scalar", "cache:\n  maxSize: 50GiB\n", func(c *Config) { c.Cache.MaxSize = "50GiB" }},
		{"null scalar keeps default", "listen:\n  addr:\n", func(*Config) {}},
		{"empty section keeps default", "peers: {}\n", func(*Config) {}},
		{
			"registries replace the list; default registry still named",
			"registries:\n  - name: docker.io\n    endpoints: [https://mirror.example.test]\n",
			func(c *Config) {
				c.Registries = []Registry{{Name: "docker.io", Endpoints: []string{"https://mirror.example.test"}}}
			},
		},
		{
			"registries replace the list; default registry dropped",
			"registries:\n  - name: 127.0.0.1:5000\n    endpoints: [http://127.0.0.1:5000]\n",
			func(c *Config) {
				c.Registries = []Registry{{Name: "127.0.0.1:5000", Endpoints: []string{"http://127.0.0.1:5000"}}}
				c.DefaultRegistry = ""
			},
		},
		{
			"registries and defaultRegistry both set",
			"defaultRegistry: 127.0.0.1:5000\nregistries:\n  - name: 127.0.0.1:5000\n    endpoints: [http://127.0.0.1:5000]\n",
			func(c *Config) {
				c.Registries = []Registry{{Name: "127.0.0.1:5000", Endpoints: []string{"http://127.0.0.1:5000"}}}
				c.DefaultRegistry = "127.0.0.1:5000"
			},
		},
		{"explicit empty default registry", "defaultRegistry: \"\"\n", func(c *Config) { c.DefaultRegistry = "" }},
		{
			"list replaced, other peer settings kept",
			"peers:\n  bind: 127.0.0.1:0\n  advertise: 127.0.0.1:5000\n  secretFile: key\n  join: [a.test, b.test:7946]\n",
			func(c *Config) {
				c.Peers.Bind, c.Peers.Advertise, c.Peers.SecretFile = "127.0.0.1:0", "127.0.0.1:5000", "key"
				c.Peers.Join = []string{"a.test", "b.test:7946"}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse([]byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			want := mustDefault(t)
			tt.want(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestParseMergeKey(t *testing.T) {
	t.Parallel()
	y := `registries:
  - &base
    name: a.test
    endpoints: [https://a.test]
    timeouts: {connect: 2s}
  - <<: *base
    name: b.test
    endpont: oops
`
	_, err := Parse([]byte(y))
	if err == nil || !strings.Contains(err.Error(), "line 8: registries[1].endpont: unknown field") {
		t.Fatalf("got %v, want the unknown field after a merge key named", err)
	}
	cfg, err := Parse([]byte(strings.Replace(y, "    endpont: oops\n", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Registries[1]; got.Name != "b.test" || got.Timeouts.Connect.D().Seconds() != 2 || got.Endpoints[0] != "https://a.test" {
		t.Errorf("merged registry: %+v", got)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want []string // substrings, each must appear
	}{
		{"unknown top-level field", "listen:\n  addr: :5000\nlsten: {}\n", []string{`line 3: lsten: unknown field (did you mean "listen"?)`}},
		{"unknown nested field", "cache:\n  dir: /x\n  maxsize: 1GiB\n", []string{`line 3: cache.maxsize: unknown field (did you mean "maxSize"?)`}},
		{"unknown field in a list item", "registries:\n  - name: a.test\n    endpoints: [https://a.test]\n  - name: b.test\n    user: x\n", []string{`line 5: registries[1].user: unknown field`}},
		{"far from any field", "zzzzzzzz: 1\n", []string{"line 1: zzzzzzzz: unknown field"}},
		{"bad duration", "tagTTL: 60\n", []string{`line 1: tagTTL: invalid duration "60"`}},
		{"bad nested duration", "registries:\n  - name: a.test\n    timeouts:\n      idleRead: soon\n", []string{`line 4: registries[0].timeouts.idleRead: invalid duration "soon"`}},
		{"wrong type", "peers:\n  askNext: two\n", []string{"line 2: peers.askNext: cannot unmarshal"}},
		{"list for a scalar", "cache:\n  dir: [a, b]\n", []string{"line 2: cache.dir: cannot unmarshal"}},
		{"duplicate key", "tagTTL: 1s\ntagTTL: 2s\n", []string{`"tagTTL" already defined`}},
		{"two documents", "tagTTL: 1s\n---\ntagTTL: 2s\n", []string{"line 2: a config file holds one YAML document"}},
		{"not yaml", "listen: [\n", []string{"line"}},
		{
			"every error at once",
			"lsten: {}\ncache:\n  highWatermark: high\ntagTTL: 9\nlog:\n  lvl: debug\n",
			[]string{"line 1: lsten: unknown field", "line 3: cache.highWatermark: cannot unmarshal", `line 4: tagTTL: invalid duration "9"`, "line 6: log.lvl: unknown field"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if n := strings.Count(err.Error(), "not found in type"); n > 0 {
				t.Errorf("decoder's type-named unknown field message leaked: %q", err)
			}
		})
	}
}

// TestParseErrorsNameTheirOwnField: each value is decoded alone, so an
// error names its own field even where several share a line (a flow
// mapping) or a value comes through an alias; nothing is read back out of
// the YAML library's message text.
func TestParseErrorsNameTheirOwnField(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"two fields on one line", "peers: {askNext: two, bind: ':7946'}\n", []string{"line 1: peers.askNext: cannot unmarshal !!str `two` into int"}},
		{"a list and a scalar on one line", "cache: {dir: [a, b], maxSize: 1GiB}\n", []string{"line 1: cache.dir: cannot unmarshal !!seq into string"}},
		{"through an alias", "x: &soon soon\ntagTTL: *soon\n", []string{"line 1: x: unknown field", `line 1: tagTTL: invalid duration "soon" (want a number with a unit: 500ms, 60s, 1h)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			if got := strings.Split(err.Error(), "\n"); !cmp.Equal(got, tt.want) {
				t.Errorf("errors %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "berth.yaml")
	if err := os.WriteFile(p, []byte("log:\n  format: json\n  levl: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "line 3: log.levl") {
		t.Errorf("Load: got %v, want the file and the field named", err)
	}
	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file: got %v, want os.ErrNotExist", err)
	}
}
