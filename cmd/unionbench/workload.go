package main

import (
	"errors"
	"fmt"
)

// A workload is one numbered item of the benchmark. For every backend and
// repetition the harness calls setup, run (timed, under a watchdog) and
// teardown; run returns a value per metric.
type workload interface {
	name() string
	// metrics lists the rows this workload reports, in order.
	metrics() []metric
	// setup prepares a run on b; errNotApplicable leaves b's cells empty.
	setup(b backend) error
	run() (values, error)
	// teardown undoes setup, also after a failed setup or run.
	teardown() error
}

// values are a run's results by metric key.
type values map[string]float64

// errNotApplicable marks a workload that has no meaning on a backend
// (mount time of a plain directory).
var errNotApplicable = errors.New("not applicable")

// mountedWorkload is the common part of the workloads that run on one
// mount: setup mounts, teardown unmounts.
type mountedWorkload struct {
	h *harness
	m *mounted
}

func (w *mountedWorkload) mountStack(b backend, s stack) error {
	m, err := w.h.mount(b, s)
	w.m = m
	return err
}

func (w *mountedWorkload) teardown() error {
	if w.m == nil {
		return nil
	}
	m := w.m
	w.m = nil
	return w.h.unmount(m)
}

// path names rel inside the mount.
func (w *mountedWorkload) path(rel string) string { return w.m.dir + "/" + rel }

// allWorkloads lists the workloads in the order (the order of the
// report's rows).
func allWorkloads(h *harness) []workload {
	ws := []workload{&statTree{mountedWorkload: mountedWorkload{h: h}}}
	for _, n := range h.sz.layerCounts {
		ws = append(ws, &layersN{mountedWorkload: mountedWorkload{h: h}, n: n, top: maxInt(h.sz.layerCounts)})
	}
	return append(ws,
		&seqRead{mountedWorkload{h: h}},
		&copyUp{mountedWorkload{h: h}},
		&untar{mountedWorkload{h: h}},
		&rmTree{mountedWorkload{h: h}},
		&mountTime{h: h},
		&smallWrite{mountedWorkload{h: h}},
		&memory{mountedWorkload{h: h}},
	)
}

// runOrder is the order the workloads run in: rm-tree, the only one that
// deletes many files (on the plain directory), goes last, because on ext4
// mass deletions slow the creates that follow them.
func runOrder(ws []workload) []workload {
	var order, last []workload
	for _, w := range ws {
		if _, ok := w.(*rmTree); ok {
			last = append(last, w)
			continue
		}
		order = append(order, w)
	}
	return append(order, last...)
}

func maxInt(xs []int) int {
	m := xs[0]
	for _, x := range xs[1:] {
		m = max(m, x)
	}
	return m
}

func fmtCount(n int) string {
	if n >= 10000 && n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}
