package main

import (
	"fmt"
	"time"
)

// mountTime (workload 7): from the start of the mount command until the
// mountpoint answers stat, N layers and an empty upper; then the unmount,
// until the server has exited.
type mountTime struct {
	h  *harness
	sc scratch
	s  stack
	b  backend
	m  *mounted
}

func (*mountTime) name() string { return "mount-time" }

func (w *mountTime) metrics() []metric {
	return []metric{
		{key: "mount", short: "mount", kind: duration, target: "<= 1.5",
			label: fmt.Sprintf("mount-time: mount %d layers until `stat` answers", w.h.sz.mountLayers)},
		{key: "unmount", short: "unmount", kind: duration,
			label: fmt.Sprintf("mount-time: unmount %d layers until the server exits", w.h.sz.mountLayers)},
	}
}

func (w *mountTime) setup(b backend) error {
	if _, ok := b.(*plainDir); ok {
		return errNotApplicable
	}
	w.b = b
	layers := w.h.fx.layers[:w.h.sz.mountLayers]
	w.s = stack{writable: true}
	for i := len(layers) - 1; i >= 0; i-- {
		w.s.lowers = append(w.s.lowers, layers[i])
	}
	if err := warmTree(w.s.lowers...); err != nil {
		return err
	}
	var err error
	w.sc, err = w.h.newScratch()
	return err
}

func (w *mountTime) run() (values, error) {
	start := time.Now()
	m, err := w.h.mountIn(w.b, w.s, w.sc)
	w.m = m
	if err != nil {
		return nil, err
	}
	v := values{"mount": m.answered.Sub(start).Seconds()}
	start = time.Now()
	w.m = nil
	if err := w.h.unmount(m); err != nil {
		w.m = m
		return v, err
	}
	v["unmount"] = time.Since(start).Seconds()
	return v, nil
}

func (w *mountTime) teardown() error {
	if w.m == nil {
		return nil
	}
	m := w.m
	w.m = nil
	return w.h.unmount(m)
}
