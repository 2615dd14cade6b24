package chart

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// prometheusRule mirrors monitoring.coreos.com/v1 PrometheusRule as the
// chart renders it; anything else fails the strict decode.
type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// The alert rules the chart ships: off by default; when on, each has a
// duration, a severity, a summary, balanced brackets, and queries only
// series berth exports (or its process collector's start time).
func TestPrometheusRules(t *testing.T) {
	t.Parallel()
	if r := renderChart(t); len(r.PrometheusRules) != 0 {
		t.Fatal("PrometheusRule rendered by default")
	}
	r := renderChart(t, "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.namespace=monitoring", "--set", "prometheusRule.labels.release=prom")
	if len(r.PrometheusRules) != 1 {
		t.Fatalf("PrometheusRules %d, want 1", len(r.PrometheusRules))
	}
	pr := r.PrometheusRules[0]
	if pr.Namespace != "monitoring" || pr.Labels["release"] != "prom" {
		t.Errorf("namespace %q labels %v", pr.Namespace, pr.Labels)
	}
	exported := berthMetrics(t)
	exported["process_start_time_seconds"] = true
	name := regexp.MustCompile(`\b(berth_[a-z_]+|process_[a-z_]+)\b`)
	var alerts []string
	for _, g := range pr.Spec.Groups {
		for _, rule := range g.Rules {
			alerts = append(alerts, rule.Alert)
			if _, err := time.ParseDuration(rule.For); err != nil {
				t.Errorf("%s: for %q: %v", rule.Alert, rule.For, err)
			}
			if rule.Labels["severity"] == "" || rule.Annotations["summary"] == "" || rule.Annotations["description"] == "" {
				t.Errorf("%s: labels %v annotations %v, want a severity, summary and description", rule.Alert, rule.Labels, rule.Annotations)
			}
			for _, pair := range []string{"()", "{}", "[]"} {
				if strings.Count(rule.Expr, pair[:1]) != strings.Count(rule.Expr, pair[1:]) {
					t.Errorf("%s: unbalanced %s in %s", rule.Alert, pair, rule.Expr)
				}
			}
			if !strings.Contains(rule.Expr, `job="berth"`) {
				t.Errorf("%s: %s does not select berth's job", rule.Alert, rule.Expr)
			}
			for _, n := range name.FindAllString(rule.Expr, -1) {
				if !exported[n] {
					t.Errorf("%s queries %s, which berth does not export", rule.Alert, n)
				}
			}
		}
	}
	want := []string{"BerthFillsFailing", "BerthNotMirroring", "BerthPeersLost", "BerthStoreNearQuota", "BerthUpstreamFailing"}
	slices.Sort(alerts)
	if !slices.Equal(alerts, want) {
		t.Errorf("alerts %q, want %q", alerts, want)
	}
}
