//go:build bench

package main

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"html"
	"io"
	"os"
	"strings"
)

// svg draws the report as a bar chart: for every figure, berth's ratio
// (green when it meets the target, red when not) and the proxy's (grey)
// as bars on the figure's own scale, the target as a dashed line. Plain
// SVG, no scripts, fonts or other files.
func (r *report) svg() string {
	r.seal()
	const (
		width  = 980
		labelW = 390
		barX   = labelW + 10
		barW   = 440
		rowH   = 58
		top    = 102
	)
	height := top + rowH*len(r.Rows) + 46 + 16*len(r.Missing)
	var b strings.Builder
	esc := html.EscapeString
	const halo = `stroke="#ffffff" stroke-width="3" paint-order="stroke"` // text stays readable over the target line
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Verdana, sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", width, height)
	title := "berth vs distribution's proxy: each figure's ratio against its target"
	if r.Smoke {
		title = "SMOKE RUN (tiny blobs, one round): shows the suite works, not a measurement"
	} else if r.busy() {
		title += " (BUSY MACHINE: noisy)"
	}
	fmt.Fprintf(&b, `<text x="12" y="22" font-size="16" font-weight="bold">%s</text>`+"\n", esc(title))
	// The machine in two lines: one runs past 980 px.
	m := r.Machine
	line1 := fmt.Sprintf("berth %s, %d round(s): %d cores (%s), %s, Linux %s", r.Berth, r.Rounds, m.Cores, m.CPU, m.Go, m.Kernel)
	line2 := fmt.Sprintf("load average %s at start, %s at end", m.LoadStart, m.LoadEnd)
	if m.Containerd != "" {
		line2 += "; " + m.Containerd
	}
	fmt.Fprintf(&b, `<text x="12" y="42" fill="#444">%s</text>`+"\n", esc(line1))
	fmt.Fprintf(&b, `<text x="12" y="59" fill="#444">%s</text>`+"\n", esc(line2))
	fmt.Fprintf(&b, `<text x="12" y="77" fill="#444" font-family="DejaVu Sans Mono, monospace">%s</text>`+"\n", esc(r.Command))
	for i, w := range r.Rows {
		y := top + i*rowH
		if i%2 == 0 {
			fmt.Fprintf(&b, `<rect x="0" y="%d" width="%d" height="%d" fill="#f4f6f8"/>`+"\n", y-4, width, rowH)
		}
		fmt.Fprintf(&b, `<text x="12" y="%d" font-weight="bold">%s</text>`+"\n", y+14, esc(w.Label))
		sub := "ratio: " + w.RatioOf
		fmt.Fprintf(&b, `<text x="12" y="%d" fill="#555" font-size="11">%s</text>`+"\n", y+30, esc(sub))
		target := "target " + w.Target
		if w.Cond != "" {
			c := "met"
			if !w.CondOK {
				c = "NOT met"
			}
			target += ", " + w.Cond + " (" + c + ")"
		}
		fmt.Fprintf(&b, `<text x="12" y="%d" fill="#555" font-size="11">%s</text>`+"\n", y+45, esc(target))
		scale := max(w.Ratio, w.TargetVal)
		if w.ProxyRatio != nil {
			scale = max(scale, *w.ProxyRatio)
		}
		scale *= 1.15
		if scale <= 0 {
			scale = 1
		}
		px := func(v float64) float64 { return float64(barX) + v/scale*barW }
		tx := px(w.TargetVal)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#1a237e" stroke-width="2" stroke-dasharray="4 3"/>`+"\n", tx, y, tx, y+44)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#1a237e" font-size="10" text-anchor="middle">%s</text>`+"\n", tx, y+53, esc(w.Target))
		color, mark := "#2e7d32", "pass"
		if !w.Pass {
			color, mark = "#c62828", "FAIL"
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="16" fill="%s"/>`+"\n", barX, y+4, px(w.Ratio)-barX, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" %s>berth %s  %s</text>`+"\n", px(w.Ratio)+6, y+17, halo, fmtRatio(w.Ratio, w.Unit), mark)
		if w.ProxyRatio != nil {
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="16" fill="#9e9e9e"/>`+"\n", barX, y+24, px(*w.ProxyRatio)-barX)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#555" %s>proxy %s</text>`+"\n", px(*w.ProxyRatio)+6, y+37, halo, fmtRatio(*w.ProxyRatio, w.Unit))
		}
	}
	y := top + rowH*len(r.Rows) + 14
	fmt.Fprintf(&b, `<rect x="12" y="%d" width="14" height="10" fill="#2e7d32"/><text x="30" y="%d">berth meets the target</text>`+"\n", y, y+9)
	fmt.Fprintf(&b, `<rect x="200" y="%d" width="14" height="10" fill="#c62828"/><text x="218" y="%d">berth misses it</text>`+"\n", y, y+9)
	fmt.Fprintf(&b, `<rect x="350" y="%d" width="14" height="10" fill="#9e9e9e"/><text x="368" y="%d">distribution's registry in proxy mode</text>`+"\n", y, y+9)
	fmt.Fprintf(&b, `<line x1="630" y1="%d" x2="650" y2="%d" stroke="#1a237e" stroke-width="2" stroke-dasharray="4 3"/><text x="656" y="%d">target (each row on its own scale)</text>`+"\n", y+5, y+5, y+9)
	for _, id := range r.Missing {
		y += 16
		fmt.Fprintf(&b, `<text x="12" y="%d" fill="#c62828">%s: not measured (the run stopped before it)</text>`+"\n", y+9, esc(id))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func fmtRatio(v float64, unit string) string {
	if unit == "MiB" {
		return fmt.Sprintf("%.1f MiB", v)
	}
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// verifySVG checks that file is well-formed XML with an <svg> root and
// names every row of the JSON result report.
func verifySVG(file, report string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	d := xml.NewDecoder(strings.NewReader(string(b)))
	var text strings.Builder
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = t.Name.Local
			}
		case xml.CharData:
			text.Write(t)
			text.WriteByte('\n')
		}
	}
	if root != "svg" {
		return fmt.Errorf("%s: root element %q, want svg", file, root)
	}
	rb, err := os.ReadFile(report)
	if err != nil {
		return err
	}
	var r struct{ Rows []struct{ Label string } }
	if err := json.Unmarshal(rb, &r); err != nil {
		return err
	}
	for _, w := range r.Rows {
		if !strings.Contains(text.String(), w.Label) {
			return fmt.Errorf("%s: no row %q", file, w.Label)
		}
	}
	return nil
}
