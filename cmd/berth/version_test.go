package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
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

// prepare-dir reads and shows --mode in octal.
func TestPrepareDirModeIsOctal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	out, _, err := run(t, "prepare-dir", "--uid", strconv.Itoa(os.Getuid()), "--gid", strconv.Itoa(os.Getgid()), "--mode", "0705", dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o705 || !strings.Contains(out, " 0705)") {
		t.Errorf("mode %v, output %q; want 0705", fi.Mode().Perm(), out)
	}
	if _, _, err := run(t, "prepare-dir", "--mode", "750x", dir); err == nil {
		t.Error("--mode 750x accepted")
	}
	help, _, _ := run(t, "prepare-dir", "--help")
	if !strings.Contains(help, "(default 0750)") {
		t.Errorf("help does not show the default mode in octal:\n%s", help)
	}
}

// Durations read as Go writes them in text logs and as seconds in JSON.
func TestLogDurations(t *testing.T) {
	var text, js bytes.Buffer
	newLoggerTo(&text, config.Log{Level: "info", Format: "text"}).Info("fill", "duration", 1500*time.Millisecond)
	newLoggerTo(&js, config.Log{Level: "info", Format: "json"}).Info("fill", "duration", 1500*time.Millisecond)
	if !strings.Contains(text.String(), "duration=1.5s") {
		t.Errorf("text: %s", text.String())
	}
	var m map[string]any
	if err := json.Unmarshal(js.Bytes(), &m); err != nil || m["duration"] != 1.5 {
		t.Errorf("json: %s (%v), want duration 1.5", js.String(), err)
	}
}
