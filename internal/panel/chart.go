package panel

import (
	"fmt"
	"html/template"
	"math"
	"strings"
)

// Charts are inline SVG drawn here, on the server: no script, no library,
// nothing fetched, and they scale to the width of a phone (the viewBox is
// stretched, the strokes are not: vector-effect keeps them thin). Only
// numbers this function formats go into the markup.

const chartW, chartH = 300, 60

// line is one polyline of a chart, styled by class.
type line struct {
	Class  string
	Values []float64 // oldest first; NaN leaves a gap
}

// chart draws lines on one scale, from 0 to the largest value, over the
// last Points steps (the newest at the right edge). label names it for
// screen readers.
func chart(label string, lines ...line) template.HTML {
	top := 0.0
	for _, l := range lines {
		for _, v := range l.Values {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				top = max(top, v)
			}
		}
	}
	if top == 0 {
		top = 1
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" preserveAspectRatio="none" role="img" aria-label="%s">`,
		chartW, chartH, template.HTMLEscapeString(label))
	for _, l := range lines {
		fmt.Fprintf(&b, `<path class="%s" vector-effect="non-scaling-stroke" d="`, template.HTMLEscapeString(l.Class))
		pen := false
		off := Points - len(l.Values)
		for i, v := range l.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				pen = false
				continue
			}
			x := float64(chartW) * float64(off+i) / float64(Points-1)
			y := float64(chartH) - float64(chartH-2)*v/top - 1
			cmd := "L"
			if !pen {
				cmd = "M"
			}
			fmt.Fprintf(&b, "%s%.1f %.1f ", cmd, x, y)
			pen = true
		}
		b.WriteString(`"/>`)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}
