package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// copyUp (workload 4): append one byte to the big lower file, which copies
// it up, then sync.
type copyUp struct{ mountedWorkload }

func (*copyUp) name() string { return "copyup" }

func (w *copyUp) metrics() []metric {
	return []metric{{key: "copyup", short: "append+sync", kind: duration, target: "<= 1.0, copy fsynced",
		label: fmt.Sprintf("copyup: `printf x >> big` (%s lower file), then `sync`", fmtSize(w.h.fx.bigSize))}}
}

func (w *copyUp) setup(b backend) error {
	if err := w.mountStack(b, stack{lowers: []string{w.h.fx.bigDir}, writable: true}); err != nil {
		return err
	}
	// Every backend starts clean, with the lower file (its input) cached.
	if err := dropCaches(1); err != nil {
		return err
	}
	return readFile(w.h.fx.bigDir + "/big")
}

func (w *copyUp) run() (values, error) {
	d, _, err := shell(w.h.ctx, `printf x >> "$1" && sync`, w.path("big"))
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(w.path("big"), &st); err != nil {
		return nil, err
	}
	if st.Size != w.h.fx.bigSize+1 {
		return nil, fmt.Errorf("size after append is %d, want %d", st.Size, w.h.fx.bigSize+1)
	}
	return values{"copyup": d.Seconds()}, nil
}
