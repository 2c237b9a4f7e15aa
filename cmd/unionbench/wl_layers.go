package main

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// layersN (workload 2): right after mounting N layers, lstat every file
// of the bottom layer in one process, do it again, then ls -R: the cost of
// lookups through a deep stack.
type layersN struct {
	mountedWorkload
	n   int
	top int // the largest N, for the growth row and the target
}

func (w *layersN) name() string { return fmt.Sprintf("layers-%d", w.n) }

func (w *layersN) key(what string) string { return fmt.Sprintf("layers-%d/%s", w.n, what) }

func (w *layersN) metrics() []metric {
	target := ""
	if w.n == 128 {
		target = "<= 1.0"
	}
	files := fmtCount(len(w.h.fx.bottomFiles))
	return []metric{
		{key: w.key("first"), short: "first lstat pass", kind: duration, target: target,
			label: fmt.Sprintf("layers-%d: first lstat pass (%s files)", w.n, files)},
		{key: w.key("second"), short: "second", kind: duration,
			label: fmt.Sprintf("layers-%d: second lstat pass", w.n)},
		{key: w.key("ls"), short: "ls -R", kind: duration,
			label: fmt.Sprintf("layers-%d: `ls -R`", w.n)},
	}
}

// growthMetric is the row derived from the first passes of the smallest
// and largest N.
func growthMetric(lo, hi int) metric {
	m := metric{key: "layers/growth", kind: factor,
		label: fmt.Sprintf("layers: growth of the first pass, N=%d / N=%d", hi, lo)}
	if lo == 1 && hi == 128 {
		m.absTarget = "<= 1.5x"
	}
	return m
}

// stackOf is the top n layers of the fixture, topmost first.
func (w *layersN) stackOf() stack {
	layers := w.h.fx.layers[:w.n]
	s := stack{}
	for i := len(layers) - 1; i >= 0; i-- {
		s.lowers = append(s.lowers, layers[i])
	}
	return s
}

func (w *layersN) setup(b backend) error {
	s := w.stackOf()
	if err := warmTree(s.lowers...); err != nil {
		return err
	}
	return w.mountStack(b, s)
}

func (w *layersN) run() (values, error) {
	v := values{}
	for _, what := range []string{"first", "second"} {
		d, err := w.lstatAll()
		if err != nil {
			return v, fmt.Errorf("%s pass: %w", what, err)
		}
		v[w.key(what)] = d.Seconds()
	}
	d, err := command(w.h.ctx, "", nil, "ls", "-R", w.m.dir)
	if err != nil {
		return v, err
	}
	v[w.key("ls")] = d.Seconds()
	return v, nil
}

func (w *layersN) lstatAll() (time.Duration, error) {
	paths := make([]string, len(w.h.fx.bottomFiles))
	for i, rel := range w.h.fx.bottomFiles {
		paths[i] = w.path(rel)
	}
	var st unix.Stat_t
	start := time.Now()
	for i, p := range paths {
		if err := unix.Lstat(p, &st); err != nil {
			return 0, fmt.Errorf("lstat %s: %w", w.h.fx.bottomFiles[i], err)
		}
		if i%1024 == 0 && w.h.ctx.Err() != nil {
			return 0, w.h.ctx.Err()
		}
	}
	return time.Since(start), nil
}
