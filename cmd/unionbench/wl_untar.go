package main

import "fmt"

// untar (workload 5): extract a tarball of source files into the mount,
// then sync.
type untar struct{ mountedWorkload }

func (*untar) name() string { return "untar" }

func (w *untar) metrics() []metric {
	return []metric{{key: "untar", short: "tar -x+sync", kind: duration, target: "<= 4",
		label: fmt.Sprintf("untar: `tar -xf` of %s files, then `sync`", fmtCount(w.h.fx.tarFiles))}}
}

func (w *untar) setup(b backend) error {
	if err := w.mountStack(b, stack{lowers: []string{w.h.fx.empty}, writable: true}); err != nil {
		return err
	}
	if err := dropCaches(1); err != nil {
		return err
	}
	return readFile(w.h.fx.tarball)
}

func (w *untar) run() (values, error) {
	d, _, err := shell(w.h.ctx, `tar -xf "$1" -C "$2" && sync`, w.h.fx.tarball, w.m.dir)
	if err != nil {
		return nil, err
	}
	return values{"untar": d.Seconds()}, nil
}
