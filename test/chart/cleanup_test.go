package chart

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// The post-delete hook: with containerd.hostsToml on, `helm uninstall` runs a
// DaemonSet whose init container removes berth's hosts.toml on every node
// the berth DaemonSet ran on, and a Job that waits for it; the hook objects
// are deleted once it succeeded. The two commands are run for real: the
// berth init container's, then the cleanup's, against one directory, with
// the real berth binary.
func TestPostDeleteHookRemovesHostsToml(t *testing.T) {
	t.Parallel()
	if r := renderChart(t); len(r.HookDaemonSets)+len(r.Jobs)+len(r.Roles) != 0 {
		t.Error("cleanup hook rendered without containerd.hostsToml.enabled")
	}
	if r := renderChart(t, "--set", "containerd.hostsToml.enabled=true", "--set", "containerd.hostsToml.cleanup.enabled=false"); len(r.HookDaemonSets)+len(r.Jobs) != 0 {
		t.Error("cleanup hook rendered with cleanup.enabled=false")
	}
	r := renderChart(t, "--set", "containerd.hostsToml.enabled=true", "--set", "containerd.hostsToml.dir=/etc/containerd/certs.d",
		"--set", "tolerations[0].key=dedicated", "--set", "tolerations[0].operator=Exists", "--set", "nodeSelector.pool=gpu")
	if len(r.HookDaemonSets) != 1 || len(r.Jobs) != 1 || len(r.Roles) != 1 || len(r.RoleBindings) != 1 {
		t.Fatalf("hooks: %d DaemonSets, %d Jobs, %d Roles, %d RoleBindings; want one each", len(r.HookDaemonSets), len(r.Jobs), len(r.Roles), len(r.RoleBindings))
	}
	ds, job, role, rb := r.HookDaemonSets[0], r.Jobs[0], r.Roles[0], r.RoleBindings[0]
	weight := map[string]int{}
	for kind, m := range map[string]map[string]string{"DaemonSet": ds.Annotations, "Job": job.Annotations, "Role": role.Annotations, "RoleBinding": rb.Annotations} {
		if m["helm.sh/hook"] != "post-delete" || !strings.Contains(m["helm.sh/hook-delete-policy"], "hook-succeeded") || !strings.Contains(m["helm.sh/hook-delete-policy"], "before-hook-creation") {
			t.Errorf("%s hook annotations %v", kind, m)
		}
		w, err := strconv.Atoi(m["helm.sh/hook-weight"])
		if err != nil {
			t.Errorf("%s hook weight: %v", kind, err)
		}
		weight[kind] = w
	}
	// RBAC first, then the DaemonSet, then the Job that waits for it.
	if !(weight["Role"] < weight["DaemonSet"] && weight["RoleBinding"] < weight["DaemonSet"] && weight["DaemonSet"] < weight["Job"]) {
		t.Errorf("hook weights %v", weight)
	}

	main, spec := r.DaemonSet.Spec.Template.Spec, ds.Spec.Template.Spec
	// It runs wherever berth ran.
	if !equalJSON(t, spec.Tolerations, main.Tolerations) || !equalJSON(t, spec.NodeSelector, main.NodeSelector) || spec.PriorityClassName != main.PriorityClassName {
		t.Errorf("cleanup pods placed unlike berth's: tolerations %v nodeSelector %v", spec.Tolerations, spec.NodeSelector)
	}
	// Its pods are not berth's: the berth Service and DaemonSet never select them.
	sel, err := metav1LabelSelector(r.DaemonSet)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("berth's selector %v matches the cleanup pods %v", sel, ds.Spec.Template.Labels)
	}
	if !labels.SelectorFromSet(ds.Spec.Selector.MatchLabels).Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Error("cleanup DaemonSet's selector does not match its own pods")
	}
	rm := container(t, spec.InitContainers, "remove-hosts-toml")
	write := container(t, main.InitContainers, "containerd-hosts-toml")
	if m := mountedAt(t, rm, "/etc/containerd/certs.d/docker.io/hosts.toml"); volume(t, spec.Volumes, m.Name).HostPath.Path != "/etc/containerd/certs.d" || m.ReadOnly {
		t.Errorf("cleanup mounts %+v", m)
	}
	if sc := rm.SecurityContext; sc == nil || *sc.RunAsUser != 0 || len(sc.Capabilities.Add) != 0 || *sc.AllowPrivilegeEscalation {
		t.Errorf("cleanup init container security context %+v", sc)
	}
	if len(spec.Containers) != 1 || spec.Containers[0].Image == "" {
		t.Errorf("cleanup containers %+v", spec.Containers)
	}

	// The Job waits for that DaemonSet with the Role's rights only.
	js := job.Spec.Template.Spec
	wait := container(t, js.Containers, "wait")
	if got := strings.Join(append(slices.Clone(wait.Command), wait.Args...), " "); !strings.Contains(got, "kubectl rollout status daemonset/"+ds.Name+" --namespace="+namespace) {
		t.Errorf("wait job runs %q", got)
	}
	if js.ServiceAccountName != rb.Subjects[0].Name || rb.RoleRef.Name != role.Name || len(role.Rules) != 1 ||
		!slices.Equal(role.Rules[0].ResourceNames, []string{ds.Name}) || slices.ContainsFunc(role.Rules[0].Verbs, func(v string) bool { return v != "get" && v != "list" && v != "watch" }) {
		t.Errorf("wait job RBAC: sa %q binding %+v role %+v", js.ServiceAccountName, rb, role.Rules)
	}
	if job.Spec.ActiveDeadlineSeconds == nil || *job.Spec.ActiveDeadlineSeconds <= 300 {
		t.Errorf("wait job deadline %v, want beyond kubectl's 300s", job.Spec.ActiveDeadlineSeconds)
	}

	// Run both commands for real against one directory.
	bin := buildBerth(t)
	dir := t.TempDir()
	onNode := func(c *corev1.Container) string {
		t.Helper()
		args := slices.Clone(c.Args)
		for i, a := range args {
			args[i] = strings.NewReplacer("--dir=/etc/containerd/certs.d", "--dir="+dir, "$(NODE_IP)", "10.0.0.7").Replace(a)
			if strings.HasPrefix(a, "--containerd-config=") {
				args[i] = "" // no containerd config here
			}
		}
		args = slices.DeleteFunc(args, func(a string) bool { return a == "" })
		if c.Command[0] != "/usr/local/bin/berth" {
			t.Fatalf("%s runs %v", c.Name, c.Command)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: berth %v: %v\n%s", c.Name, args, err, out.String())
		}
		return out.String()
	}
	onNode(write)
	written, _ := filepath.Glob(filepath.Join(dir, "*", "hosts.toml"))
	if len(written) != 4 { // the four default registries
		t.Fatalf("berth's init container wrote %v", written)
	}
	own := filepath.Join(dir, "registry.example", "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(own), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(own, []byte("server = \"https://registry.example\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := onNode(rm)
	left, _ := filepath.Glob(filepath.Join(dir, "*", "hosts.toml"))
	if !slices.Equal(left, []string{own}) {
		t.Errorf("after the cleanup hook: %v left, want only the operator's %s\n%s", left, own, out)
	}
}

func metav1LabelSelector(ds *appsv1.DaemonSet) (labels.Selector, error) {
	return labels.ValidatedSelectorFromSet(ds.Spec.Selector.MatchLabels)
}

// equalJSON reports whether a and b encode to the same JSON.
func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(ja, jb)
}
