//go:build bench

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// report is the suite's result: one row per figure, and what it ran on.
type report struct {
	Command string   `json:"command"`
	Berth   string   `json:"berth_revision"`
	Smoke   bool     `json:"smoke"`
	Rounds  int      `json:"rounds"`
	Machine machine  `json:"machine"`
	Start   string   `json:"start"`
	Seconds float64  `json:"seconds"`
	Rows    []*row   `json:"rows"`
	Missing []string `json:"missing,omitempty"` // figures asked for but not measured (the run failed first)
	t0      time.Time
	want    []string
}

// machine is what the figures were measured on.
type machine struct {
	Cores      int    `json:"cores"`
	CPU        string `json:"cpu"`
	Go         string `json:"go"`
	Kernel     string `json:"kernel"`
	LoadStart  string `json:"load_avg_start"`
	LoadEnd    string `json:"load_avg_end"`
	Containerd string `json:"containerd,omitempty"`
}

// row is one figure: berth's value, distribution's proxy's and the
// reference's (direct from the upstream, or nginx) in one unit, the ratio
// the target is about, and whether berth meets it.
type row struct {
	ID         string               `json:"id"`
	Figure     string               `json:"figure"`
	Label      string               `json:"label"` // short, for the chart
	Unit       string               `json:"unit"`
	Upstream   string               `json:"upstream,omitempty"` // what the upstream adds (containerd rows): loopback, or RTT and per-connection bandwidth
	Berth      float64              `json:"berth"`
	BerthNote  string               `json:"berth_note,omitempty"`
	Proxy      *float64             `json:"proxy"` // null: not measured for the proxy
	ProxyNote  string               `json:"proxy_note,omitempty"`
	RefName    string               `json:"reference_name,omitempty"`
	Reference  *float64             `json:"reference"`
	RefNote    string               `json:"reference_note,omitempty"`
	RatioOf    string               `json:"ratio_of"` // what Ratio divides
	Ratio      float64              `json:"ratio"`
	ProxyRatio *float64             `json:"proxy_ratio"` // the same ratio for the proxy
	Target     string               `json:"target"`
	TargetOp   string               `json:"target_op"` // "<=" or ">="
	TargetVal  float64              `json:"target_value"`
	Cond       string               `json:"condition,omitempty"` // a second part of the target (upstream GETs)
	CondOK     bool                 `json:"condition_met"`
	Pass       bool                 `json:"pass"`
	Samples    map[string][]float64 `json:"samples"`
	LoadAvg    string               `json:"load_avg"`
	// CPU is, per path ("direct", "berth", ...), the median CPU seconds of
	// each process on it during one timed GET, and the wall time (cold1).
	CPU map[string]cpuUse `json:"cpu,omitempty"`
}

func newReport(e *env, o *opts) *report {
	r := &report{Command: e.command, Berth: e.rev, Smoke: o.smoke, Rounds: o.rounds, t0: time.Now()}
	r.Start = r.t0.UTC().Format(time.RFC3339)
	if r.Command == "" {
		r.Command = strings.Join(os.Args, " ")
	}
	r.Machine = machine{Cores: runtime.NumCPU(), CPU: cpuModel(), Go: runtime.Version(), Kernel: kernel(), LoadStart: loadavg()}
	for _, f := range allFigures {
		if o.figures[f] {
			r.want = append(r.want, figureRows[f]...)
		}
	}
	r.Missing = append([]string(nil), r.want...)
	return r
}

// figureRows are the row ids each -figures name yields.
var figureRows = map[string][]string{
	"cold1":           {"cold1"},
	"cold32":          {"cold32", "rss32"},
	"hit":             {"hit"},
	"manifest":        {"manifest_tag", "manifest_digest"},
	"rss500":          {"rss500"},
	"containerd":      {"containerd"},
	"containerd2":     {"containerd2"},
	"containerd-wan":  {"containerd-wan"},
	"containerd2-wan": {"containerd2-wan"},
	"cluster":         {"cluster"},
}

// add records a row, judging it against its target.
func (r *report) add(w *row) {
	switch w.TargetOp {
	case "<=":
		w.Pass = w.Ratio <= w.TargetVal
	case ">=":
		w.Pass = w.Ratio >= w.TargetVal
	}
	if w.Cond == "" {
		w.CondOK = true
	}
	w.Pass = w.Pass && w.CondOK
	w.LoadAvg = loadavg()
	r.Rows = append(r.Rows, w)
	for i, id := range r.Missing {
		if id == w.ID {
			r.Missing = append(r.Missing[:i], r.Missing[i+1:]...)
			break
		}
	}
}

// seal fills in the end of the run (called before writing).
func (r *report) seal() {
	r.Seconds = math.Round(time.Since(r.t0).Seconds()*10) / 10
	r.Machine.LoadEnd = loadavg()
	order := map[string]int{}
	for i, id := range r.want {
		order[id] = i
	}
	sort.SliceStable(r.Rows, func(i, j int) bool { return order[r.Rows[i].ID] < order[r.Rows[j].ID] })
}

func (r *report) MarshalJSON() ([]byte, error) {
	r.seal()
	type plain report
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // "≤", "<=" as they are
	err := enc.Encode((*plain)(r))
	return bytes.TrimRight(b.Bytes(), "\n"), err
}

// busy reports whether the 1-minute load average at the start of the run
// exceeded the number of cores: others were using the machine. The load
// at the end is not asked: it is mostly the suite's own (the cluster row
// runs five nodes on the cores), so it would call every full run busy.
func (r *report) busy() bool {
	for _, l := range []string{r.Machine.LoadStart} {
		if v, err := strconv.ParseFloat(l, 64); err == nil && v > float64(r.Machine.Cores) {
			return true
		}
	}
	return false
}

// machineLine describes the machine and the run in one line.
func (r *report) machineLine() string {
	m := r.Machine
	s := fmt.Sprintf("%d cores (%s), %s, Linux %s, load average %s at start, %s at end", m.Cores, m.CPU, m.Go, m.Kernel, m.LoadStart, m.LoadEnd)
	if m.Containerd != "" {
		s += ", " + m.Containerd
	}
	return s
}

// markdown is the table as printed and as the README shows it.
func (r *report) markdown() string {
	r.seal()
	var b strings.Builder
	if r.Smoke {
		b.WriteString("> **Smoke run, not a measurement**: tiny blobs, one round; it shows that the suite works.\n")
	}
	if r.Smoke && r.busy() {
		b.WriteString(">\n")
	}
	if r.busy() {
		b.WriteString("> **Busy machine**: the load average exceeded the core count, so times and rates are noisy (upstream counts and peak RSS are not).\n")
	}
	if r.Smoke || r.busy() {
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "berth %s, %d round(s), %.0f s, started %s.\n\n", r.Berth, r.Rounds, r.Seconds, r.Start)
	fmt.Fprintf(&b, "Machine: %s.\n\nCommand: `%s`\n\n", r.machineLine(), r.Command)
	b.WriteString("| figure | berth | distribution proxy | reference | ratio | target | |\n|---|---|---|---|---|---|---|\n")
	for _, w := range r.Rows {
		pass := "pass"
		if !w.Pass {
			pass = "**FAIL**"
		}
		ref := "–"
		if w.Reference != nil {
			ref = w.RefName + " " + cell(w.Reference, w.Unit, w.RefNote)
		}
		ratio := fmt.Sprintf("%.2f", w.Ratio)
		if w.ProxyRatio != nil {
			ratio += fmt.Sprintf(" (proxy %.2f)", *w.ProxyRatio)
		}
		target := w.Target
		if w.Cond != "" {
			target += ", " + w.Cond
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", w.Figure, cell(&w.Berth, w.Unit, w.BerthNote),
			cell(w.Proxy, w.Unit, w.ProxyNote), ref, ratio, target, pass)
	}
	for _, id := range r.Missing {
		fmt.Fprintf(&b, "| %s | not measured (the run stopped before it) | | | | | **FAIL** |\n", id)
	}
	for _, w := range r.Rows {
		if len(w.CPU) > 0 {
			fmt.Fprintf(&b, "\nCPU seconds per GET of the %s row (medians; on 2 cores a GET takes at least total ÷ 2):\n\n%s",
				w.ID, strings.ReplaceAll(cpuSummary(w.CPU), "  ", "- "))
		}
	}
	return b.String()
}

func cell(v *float64, unit, note string) string {
	if v == nil {
		return "–"
	}
	s := fmtVal(*v, unit)
	if note != "" {
		s += ", " + note
	}
	return s
}

// fmtVal prints a value in its unit with sensible precision.
func fmtVal(v float64, unit string) string {
	switch unit {
	case "req/s":
		return fmt.Sprintf("%.0f req/s", v)
	case "MiB":
		return fmt.Sprintf("%.1f MiB", v)
	case "s":
		if v < 10 {
			return fmt.Sprintf("%.3f s", v)
		}
		return fmt.Sprintf("%.1f s", v)
	}
	return fmt.Sprintf("%.2f %s", v, unit)
}

// verifyReport checks that file is a well-formed result with a row, with
// finite numbers, for every figure asked for. It says nothing about the
// figures' values: a smoke run on a busy machine is not a measurement.
func verifyReport(file string, figures map[string]bool) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var r report
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if r.Machine.Cores < 1 || r.Machine.Go == "" || r.Command == "" {
		return fmt.Errorf("%s: no machine or command (%+v, %q)", file, r.Machine, r.Command)
	}
	if len(r.Missing) > 0 {
		return fmt.Errorf("%s: figures not measured: %v", file, r.Missing)
	}
	got := map[string]*row{}
	for _, w := range r.Rows {
		if got[w.ID] != nil {
			return fmt.Errorf("%s: row %s twice", file, w.ID)
		}
		got[w.ID] = w
		nums := []float64{w.Berth, w.Ratio, w.TargetVal}
		for _, p := range []*float64{w.Proxy, w.Reference, w.ProxyRatio} {
			if p != nil {
				nums = append(nums, *p)
			}
		}
		for _, x := range nums {
			if math.IsNaN(x) || math.IsInf(x, 0) || x < 0 {
				return fmt.Errorf("%s: row %s has the number %v", file, w.ID, x)
			}
		}
		if w.Figure == "" || w.Label == "" || w.Unit == "" || w.Target == "" || (w.TargetOp != "<=" && w.TargetOp != ">=") || len(w.Samples) == 0 {
			return fmt.Errorf("%s: row %s is incomplete: %+v", file, w.ID, w)
		}
	}
	for _, f := range allFigures {
		if !figures[f] {
			continue
		}
		for _, id := range figureRows[f] {
			if got[id] == nil {
				return fmt.Errorf("%s: no row %s", file, id)
			}
		}
	}
	return nil
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func ptr(v float64) *float64 { return &v }

// intoMarkdown replaces the lines between "<!-- bench:begin -->" and
// "<!-- bench:end -->" in file with the table, the chart (svg) and a link
// to the JSON, both paths made relative to file's directory.
func (r *report) intoMarkdown(file, svg, js string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	const begin, end = "<!-- bench:begin -->\n", "<!-- bench:end -->"
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %q line before a %q line", file, strings.TrimSpace(begin), end)
	}
	rel := func(p string) string {
		abs, err1 := filepath.Abs(p)
		dir, err2 := filepath.Abs(filepath.Dir(file))
		if err1 != nil || err2 != nil {
			return p
		}
		if r, err := filepath.Rel(dir, abs); err == nil {
			return filepath.ToSlash(r)
		}
		return p
	}
	block := r.markdown()
	if svg != "" {
		block += "\n![each figure's ratio against its target, berth and distribution's proxy](" + rel(svg) + ")\n"
	}
	if js != "" {
		block += "\nThe same run as JSON: [" + rel(js) + "](" + rel(js) + ").\n"
	}
	s = s[:i+len(begin)] + "\n" + block + "\n" + s[j:]
	return os.WriteFile(file, []byte(s), 0o644)
}
