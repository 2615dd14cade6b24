package chart

import (
	"strings"
	"testing"
)

// The gossip key under `helm template`, where no Secret can be looked up:
// with existingSecret or gossipKey two renders are byte for byte the same
// (GitOps sees no change), and the pod reads the key from that Secret; with
// generateKey=false and neither, the render fails and says what to set;
// with the defaults each render makes a new key, which is why.
func TestGossipKeyStableUnderTemplate(t *testing.T) {
	t.Parallel()
	render := func(args ...string) (string, error) {
		return helm(t, append([]string{"template", release, chartDir, "--namespace", namespace}, args...)...)
	}
	for _, args := range [][]string{
		{"--set", "peers.existingSecret=berth-gossip", "--set", "peers.generateKey=false"},
		{"--set", "peers.gossipKey=a-test-key-of-32-bytes-for-gossip"},
	} {
		a, err := render(args...)
		if err != nil {
			t.Fatal(err)
		}
		b, err := render(args...)
		if err != nil {
			t.Fatal(err)
		}
		if a != b {
			t.Errorf("%v: two renders differ", args)
		}
	}
	r := renderChart(t, "--set", "peers.existingSecret=berth-gossip", "--set", "peers.existingSecretKey=key", "--set", "peers.generateKey=false")
	if s, ok := r.Secrets[r.DaemonSet.Name]; ok && len(s.Data["gossip-key"]) != 0 {
		t.Error("the chart's Secret holds a gossip key while existingSecret is set")
	}
	sec := volume(t, r.DaemonSet.Spec.Template.Spec.Volumes, "secrets")
	found := false
	for _, src := range sec.Projected.Sources {
		if src.Secret != nil && src.Secret.Name == "berth-gossip" && len(src.Secret.Items) == 1 && src.Secret.Items[0].Key == "key" && src.Secret.Items[0].Path == "gossip-key" {
			found = true
		}
	}
	if !found {
		t.Errorf("the pod does not mount berth-gossip's key as gossip-key: %+v", sec)
	}

	out, err := render("--set", "peers.generateKey=false")
	if err == nil || !strings.Contains(err.Error(), "peers.existingSecret") || !strings.Contains(err.Error(), "create secret generic") {
		t.Errorf("generateKey=false without a key: %v\n%s", err, out)
	}
	if _, err := render("--set", "peers.generateKey=false", "--set", "peers.enabled=false"); err != nil {
		t.Errorf("generateKey=false without peers: %v", err)
	}
	a, b := renderChart(t), renderChart(t)
	if ka, kb := a.Secrets[a.DaemonSet.Name].Data["gossip-key"], b.Secrets[b.DaemonSet.Name].Data["gossip-key"]; string(ka) == string(kb) {
		t.Error("two renders without a cluster made the same random key")
	}
}
