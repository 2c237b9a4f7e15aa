package main

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// kind says what a metric measures and so how it is shown and compared.
type kind int

const (
	duration   kind = iota // seconds; lower is better
	throughput             // MiB/s; higher is better
	memBytes               // bytes; lower is better
	factor                 // a plain ratio
)

// metric is one row of the report.
type metric struct {
	key   string // unique
	label string // the row's text
	short string // for progress lines
	kind  kind
	// The targets, for the full sizes: of unionfs / overlay, or of
	// unionfs's own value.
	target, absTarget string
}

func (m metric) format(x float64) string {
	switch m.kind {
	case duration:
		return fmtDuration(x)
	case throughput:
		return fmt.Sprintf("%.0f MiB/s", x)
	case memBytes:
		return fmt.Sprintf("%.1f MiB", x/(1<<20))
	default:
		return fmt.Sprintf("%.2fx", x)
	}
}

func fmtDuration(sec float64) string {
	switch {
	case sec < 1e-3:
		return fmt.Sprintf("%.0f µs", sec*1e6)
	case sec < 0.1:
		return fmt.Sprintf("%.1f ms", sec*1e3)
	case sec < 1:
		return fmt.Sprintf("%.0f ms", sec*1e3)
	default:
		return fmt.Sprintf("%.2f s", sec)
	}
}

// cell is what one backend gave for one metric over the repetitions.
type cell struct {
	samples []float64
	fails   int
	err     string // the first error
	na      bool
}

func (c *cell) median() (float64, bool) { return median(c.samples) }

func median(xs []float64) (float64, bool) {
	if len(xs) == 0 {
		return 0, false
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2], true
	}
	return (s[n/2-1] + s[n/2]) / 2, true
}

// results collects cells by metric and backend.
type results struct {
	backends []string
	rows     []metric
	cells    map[string]map[string]*cell
}

func newResults(backends []string, ws []workload) *results {
	r := &results{backends: backends, cells: map[string]map[string]*cell{}}
	for _, w := range ws {
		r.addRows(w.metrics()...)
	}
	return r
}

func (r *results) addRows(ms ...metric) {
	for _, m := range ms {
		r.addCells(m)
		r.rows = append(r.rows, m)
	}
}

// insertRowAfter adds m after the row with key after.
func (r *results) insertRowAfter(after string, m metric) {
	r.addCells(m)
	i := slices.IndexFunc(r.rows, func(x metric) bool { return x.key == after })
	r.rows = slices.Insert(r.rows, i+1, m)
}

func (r *results) addCells(m metric) {
	r.cells[m.key] = map[string]*cell{}
	for _, b := range r.backends {
		r.cells[m.key][b] = &cell{}
	}
}

func (r *results) cell(key, backend string) *cell { return r.cells[key][backend] }

// record files one run's values; a metric the run did not produce gets the
// run's error, or stays empty.
func (r *results) record(ms []metric, backend string, v values, err error) {
	for _, m := range ms {
		c := r.cell(m.key, backend)
		if x, ok := v[m.key]; ok && !math.IsNaN(x) {
			c.samples = append(c.samples, x)
			continue
		}
		switch {
		case err == nil || errors.Is(err, errNotApplicable):
			c.na = true
		default:
			c.fails++
			if c.err == "" {
				c.err = err.Error()
			}
		}
	}
}

// show renders a cell of the medians table.
func (r *results) show(m metric, backend string) string {
	c := r.cell(m.key, backend)
	if c.err != "" {
		msg := c.err
		if len(msg) > 120 {
			msg = msg[:117] + "..."
		}
		msg = cellText(msg)
		if len(c.samples) > 0 {
			return fmt.Sprintf("error in %d of %d runs: %s", c.fails, c.fails+len(c.samples), msg)
		}
		return "error: " + msg
	}
	if x, ok := c.median(); ok {
		return m.format(x)
	}
	return "—"
}

// ratio is a's median over b's for metric m.
func (r *results) ratio(m metric, a, b string) (float64, bool) {
	ca, cb := r.cells[m.key][a], r.cells[m.key][b]
	if ca == nil || cb == nil || ca.err != "" || cb.err != "" {
		return 0, false
	}
	x, ok1 := ca.median()
	y, ok2 := cb.median()
	if !ok1 || !ok2 || y == 0 {
		return 0, false
	}
	return x / y, true
}
