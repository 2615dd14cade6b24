package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/berth-registry/berth/pkg/version"
)

func TestVersion(t *testing.T) {
	version.Version, version.Revision = "v1.2.3", "cafe"
	t.Cleanup(func() { version.Version, version.Revision = "", "" })
	want := version.Get()
	for _, args := range [][]string{{"--version"}, {"version"}} {
		var out bytes.Buffer
		root := rootCmd()
		root.SetArgs(args)
		root.SetOut(&out)
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
		if got := out.String(); got != want.String()+"\n" || want.Version != "v1.2.3" || want.Revision != "cafe" {
			t.Errorf("berth %v printed %q, want %q", args, got, want.String()+"\n")
		}
	}
	var out bytes.Buffer
	root := rootCmd()
	root.SetArgs([]string{"version", "--json"})
	root.SetOut(&out)
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	var got version.Info
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || got != want {
		t.Errorf("version --json: %s (%v), want %+v", out.Bytes(), err, want)
	}
}
