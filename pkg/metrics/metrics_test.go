package metrics

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// count is the number of series c has.
func count(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 100)
	go func() { c.Collect(ch); close(ch) }()
	n := 0
	for range ch {
		n++
	}
	return n
}

// value is a counter's value.
func value(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

func TestRequestLabelsBounded(t *testing.T) {
	t.Parallel()
	m := New(prometheus.NewRegistry(), 10)
	for i := range 2000 {
		m.Request("blob", fmt.Sprintf("M%dX", i), 200)
		m.Request("blob", "GET", 100+i) // includes codes net/http has no name for
	}
	if n := count(m.Requests); n > 100 {
		t.Fatalf("%d request series after 4000 odd requests, want a bounded few", n)
	}
	if got := value(m.Requests.WithLabelValues("blob", "other", "200")); got != 2000 {
		t.Errorf("unknown methods counted %v times as other, want 2000", got)
	}
	if got := value(m.Requests.WithLabelValues("blob", "GET", "other")); got < 1000 {
		t.Errorf("nameless status codes counted %v times as other, want most of 2000", got)
	}
}

func TestTopReposAreTheMostPulled(t *testing.T) {
	t.Parallel()
	m := New(prometheus.NewRegistry(), 3)
	pull := func(repo string, n int) {
		for range n {
			m.Pull("r.example", repo)
		}
	}
	pull("junk/0", 1) // first come: takes a free series
	pull("busy/a", 5)
	pull("busy/b", 3)
	for i := range 20000 { // a flood of names pulled once each
		pull(fmt.Sprintf("junk/%d", i+1), 1)
	}
	pull("busy/c", 2) // more pulls than junk/0's one: takes its series
	got := map[string]float64{}
	for _, repo := range []string{"busy/a", "busy/b", "busy/c", "junk/0", "other"} {
		got[repo] = value(m.Pulls.WithLabelValues("r.example", repo))
	}
	want := map[string]float64{"busy/a": 5, "busy/b": 3, "busy/c": 1, "junk/0": 0, "other": 20001}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("pulls of %s: %v, want %v", k, got[k], v)
		}
	}
	if n := count(m.Pulls); n > 4+1 { // 3 series, other, and junk/0 recreated at 0 above
		t.Errorf("%d pull series, want at most 3 plus other", n)
	}
	if n := len(m.top.counts); n > m.top.capacity {
		t.Errorf("top-N table holds %d names, capacity %d", n, m.top.capacity)
	}
	if !strings.Contains(fmt.Sprint(m.top.series), "busy/c") {
		t.Errorf("series holders %v lack busy/c", m.top.series)
	}
}

func TestTopReposZero(t *testing.T) {
	t.Parallel()
	m := New(nil, 0)
	m.Pull("r", "a")
	if got := value(m.Pulls.WithLabelValues("r", "other")); got != 1 {
		t.Errorf("topRepos 0: other = %v, want 1", got)
	}
}

// A repository that loses its series and wins it back counts on the new
// series: the resolved series (curried) forgets the one the vec deleted.
func TestPullSeriesWonBackCountsAgain(t *testing.T) {
	t.Parallel()
	m := New(prometheus.NewRegistry(), 1)
	m.Pull("r", "a") // a: 1, the series
	m.Pull("r", "b")
	m.Pull("r", "b") // b: 2 > 1, takes a's series
	m.Pull("r", "a") // a: 2, other
	m.Pull("r", "a") // a: 3 > 2, takes it back
	for repo, want := range map[string]float64{"a": 1, "b": 0, "other": 2} {
		if got := value(m.Pulls.WithLabelValues("r", repo)); got != want {
			t.Errorf("pulls of %s: %v, want %v", repo, got, want)
		}
	}
}

// Counting through the resolved series adds to the vec's own series, one
// per combination, whatever the order and concurrency.
func TestCurriedCountsOnTheVec(t *testing.T) {
	t.Parallel()
	m := New(prometheus.NewRegistry(), 10)
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 1000 {
				m.Request("manifest", "GET", 200+i%2*4) // 200 and 204
				m.Hit("manifest", "r")
				m.Served("local", 10)
				m.RequestDone("manifest", 0)
			}
		}()
	}
	for range 4 {
		<-done
	}
	for _, c := range []struct {
		c    prometheus.Counter
		want float64
	}{
		{m.Requests.WithLabelValues("manifest", "GET", "200"), 2000},
		{m.Requests.WithLabelValues("manifest", "GET", "204"), 2000},
		{m.CacheHits.WithLabelValues("manifest", "r"), 4000},
		{m.BytesServed.WithLabelValues("local"), 40000},
	} {
		if got := value(c.c); got != c.want {
			t.Errorf("%s: %v, want %v", c.c.Desc(), got, c.want)
		}
	}
	if n := count(m.Requests); n != 2 {
		t.Errorf("%d request series, want 2", n)
	}
}
