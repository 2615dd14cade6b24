// Package chart tests the Helm chart in charts/berth: it renders the chart
// with the real helm binary, decodes every object strictly into its
// Kubernetes API type (an unknown field fails), and checks the berth config
// the chart renders with berth's own config package.
package chart

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

const (
	chartDir  = "../../charts/berth"
	namespace = "berth-system"
	release   = "t"
)

// helmBin returns the helm binary, or skips the test when it is missing
// outside CI. In CI (CI=true) a missing helm fails the test.
func helmBin(t *testing.T) string {
	t.Helper()
	tools := os.Getenv("BERTH_TOOLS")
	if tools == "" {
		abs, err := filepath.Abs("../../.tools")
		if err != nil {
			t.Fatal(err)
		}
		tools = abs
	}
	bin := filepath.Join(tools, "bin", "helm")
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("helm not found at %s (run test/tools.sh): %v", bin, err)
		}
		t.Skipf("helm not found at %s (run test/tools.sh): %v", bin, err)
	}
	return bin
}

// helm runs helm with args, bounded in time, and returns its stdout.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, helmBin(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("helm %s: %w\n%s%s", strings.Join(args, " "), err, errb.String(), out.String())
	}
	return out.String(), nil
}

// rendered holds every object of one `helm template`, decoded strictly.
type rendered struct {
	DaemonSet       *appsv1.DaemonSet
	Services        []*corev1.Service
	ConfigMaps      map[string]*corev1.ConfigMap
	Secrets         map[string]*corev1.Secret
	ServiceAccounts []*corev1.ServiceAccount
	ServiceMonitors []*serviceMonitor
	PrometheusRules []*prometheusRule
	NetworkPolicies []*networkingv1.NetworkPolicy
	// Helm hooks: the post-delete cleanup.
	HookDaemonSets []*appsv1.DaemonSet
	Jobs           []*batchv1.Job
	Roles          []*rbacv1.Role
	RoleBindings   []*rbacv1.RoleBinding
}

func renderChart(t *testing.T, args ...string) *rendered {
	t.Helper()
	out, err := helm(t, append([]string{"template", release, chartDir, "--namespace", namespace}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return decodeAll(t, out)
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

func decodeAll(t *testing.T, out string) *rendered {
	t.Helper()
	r := &rendered{ConfigMaps: map[string]*corev1.ConfigMap{}, Secrets: map[string]*corev1.Secret{}}
	for _, doc := range docSep.Split(out, -1) {
		if isEmptyDoc(doc) {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("read kind: %v\n%s", err, doc)
		}
		switch tm.APIVersion + " " + tm.Kind {
		case "apps/v1 DaemonSet":
			ds := strict[appsv1.DaemonSet](t, doc)
			if ds.Annotations["helm.sh/hook"] != "" {
				r.HookDaemonSets = append(r.HookDaemonSets, ds)
				continue
			}
			if r.DaemonSet != nil {
				t.Fatal("two DaemonSets rendered")
			}
			r.DaemonSet = ds
		case "batch/v1 Job":
			r.Jobs = append(r.Jobs, strict[batchv1.Job](t, doc))
		case "rbac.authorization.k8s.io/v1 Role":
			r.Roles = append(r.Roles, strict[rbacv1.Role](t, doc))
		case "rbac.authorization.k8s.io/v1 RoleBinding":
			r.RoleBindings = append(r.RoleBindings, strict[rbacv1.RoleBinding](t, doc))
		case "v1 Service":
			r.Services = append(r.Services, strict[corev1.Service](t, doc))
		case "v1 ConfigMap":
			cm := strict[corev1.ConfigMap](t, doc)
			r.ConfigMaps[cm.Name] = cm
		case "v1 Secret":
			s := strict[corev1.Secret](t, doc)
			r.Secrets[s.Name] = s
		case "v1 ServiceAccount":
			r.ServiceAccounts = append(r.ServiceAccounts, strict[corev1.ServiceAccount](t, doc))
		case "networking.k8s.io/v1 NetworkPolicy":
			r.NetworkPolicies = append(r.NetworkPolicies, strict[networkingv1.NetworkPolicy](t, doc))
		case "monitoring.coreos.com/v1 ServiceMonitor":
			r.ServiceMonitors = append(r.ServiceMonitors, strict[serviceMonitor](t, doc))
		case "monitoring.coreos.com/v1 PrometheusRule":
			r.PrometheusRules = append(r.PrometheusRules, strict[prometheusRule](t, doc))
		default:
			t.Fatalf("no strict check for %s %s: add it to decodeAll\n%s", tm.APIVersion, tm.Kind, doc)
		}
	}
	if r.DaemonSet == nil {
		t.Fatal("no DaemonSet rendered")
	}
	return r
}

func isEmptyDoc(doc string) bool {
	for _, line := range strings.Split(doc, "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// strict decodes doc into a T, failing on unknown or duplicate fields.
func strict[T any](t *testing.T, doc string) *T {
	t.Helper()
	v := new(T)
	if err := yaml.UnmarshalStrict([]byte(doc), v); err != nil {
		t.Fatalf("decode %T strictly: %v\n%s", v, err, doc)
	}
	return v
}

// serviceMonitor mirrors the fields of monitoring.coreos.com/v1
// ServiceMonitor that the chart uses; anything else it renders fails the
// strict decode.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel          string `json:"jobLabel"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port              string          `json:"port"`
			Path              string          `json:"path"`
			Scheme            string          `json:"scheme"`
			Interval          string          `json:"interval"`
			ScrapeTimeout     string          `json:"scrapeTimeout"`
			Relabelings       []relabelConfig `json:"relabelings,omitempty"`
			MetricRelabelings []relabelConfig `json:"metricRelabelings,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type relabelConfig struct {
	SourceLabels []string `json:"sourceLabels,omitempty"`
	Separator    string   `json:"separator,omitempty"`
	TargetLabel  string   `json:"targetLabel,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	Modulus      uint64   `json:"modulus,omitempty"`
	Replacement  string   `json:"replacement,omitempty"`
	Action       string   `json:"action,omitempty"`
}

func TestLint(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"-f", "testdata/all-on.yaml"}} {
		if out, err := helm(t, append([]string{"lint", "--strict", chartDir}, args...)...); err != nil {
			t.Errorf("lint %v: %v\n%s", args, err, out)
		}
	}
}

func TestRenderRefusesBadValues(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"percent emptyDir", []string{"--set", "cache.type=emptyDir", "--set", "cache.maxSize=80%"}, "cache.maxSize"},
		{"tls without secret", []string{"--set", "tls.enabled=true"}, "tls.secretName"},
		{"unknown cache type", []string{"--set", "cache.type=nfs"}, "cache.type"},
		{"containerd cannot reach berth", []string{"--set", "containerd.hostsToml.enabled=true", "--set", "http.hostPort.enabled=false"}, "containerd.hostsToml"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := helm(t, append([]string{"template", release, chartDir}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("helm template %v: %v, want an error naming %s", tt.args, err, tt.want)
			}
		})
	}
}
