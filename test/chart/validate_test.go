package chart

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// `berth config validate` checks the chart's own rendered config file as the
// pod runs it: peers.bind and peers.advertise arrive by environment, so the
// file alone is not valid, and with the pod's environment it is. Bad
// environment values are all reported in one run, as serve would refuse them.
func TestConfigValidateWithThePodsEnvironment(t *testing.T) {
	t.Parallel()
	r := renderChart(t)
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(r.ConfigMaps[volume(t, r.DaemonSet.Spec.Template.Spec.Volumes, "config").ConfigMap.Name].Data["config.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := buildBerth(t)
	validate := func(env []string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"config", "validate", cfgPath}, args...)...)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...) // no BERTH_* from this process
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	// The pod's BERTH_* variables, with the downward API's values.
	ds := r.DaemonSet.Spec.Template.Spec
	var podEnv []string
	for _, kv := range environ(t, container(t, ds.Containers, "berth")) {
		if strings.HasPrefix(kv, "BERTH_") {
			podEnv = append(podEnv, kv)
		}
	}
	if len(podEnv) == 0 {
		t.Fatal("the pod sets no BERTH_* variable; this test needs peers.bind by env")
	}
	// The gossip key the pod has mounted from the chart's Secret, here in a
	// file of the test's own.
	keyFile := filepath.Join(t.TempDir(), "gossip-key")
	if err := os.WriteFile(keyFile, r.Secrets[r.DaemonSet.Name].Data["gossip-key"], 0o600); err != nil {
		t.Fatal(err)
	}
	podEnv = append(podEnv, "BERTH_PEERS_SECRET_FILE="+keyFile)

	if out, err := validate(nil); err == nil || !strings.Contains(out, "peers.") {
		t.Errorf("the file without the pod's environment: %v\n%s\nwant a peers error", err, out)
	}
	if out, err := validate(podEnv); err != nil || !strings.HasSuffix(out, ": ok\n") {
		t.Errorf("with the pod's environment %q: %v\n%s", podEnv, err, out)
	}
	bad := append(podEnv, "BERTH_TAG_TTL=soon", "BERTH_LOG_LEVEL=loud", "BERTH_REGISTRY_NOPE_IO_PASSWORD=hunter2", "BERTH_TAG_TTLL=1s")
	out, err := validate(bad)
	if err == nil {
		t.Fatalf("bad environment accepted:\n%s", out)
	}
	for _, want := range []string{"BERTH_TAG_TTL:", "log.level", "BERTH_REGISTRY_NOPE_IO_PASSWORD", "warning: environment variable BERTH_TAG_TTLL"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hunter2") {
		t.Errorf("report shows a secret:\n%s", out)
	}
	if out, err := validate(bad, "--no-env"); err == nil || strings.Contains(out, "BERTH_TAG_TTL:") {
		t.Errorf("--no-env read the environment: %v\n%s", err, out)
	}
}
