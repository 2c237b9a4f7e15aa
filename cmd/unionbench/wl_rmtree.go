package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// rmTree (workload 6): rm -rf of a subtree that exists only in the lower
// layer: every entry becomes a whiteout.
type rmTree struct{ mountedWorkload }

func (*rmTree) name() string { return "rm-tree" }

func (w *rmTree) metrics() []metric {
	return []metric{{key: "rm-tree", short: "rm -rf", kind: duration, target: "<= 3",
		label: fmt.Sprintf("rm-tree: `rm -rf` of a lower-only tree of %s files", fmtCount(w.h.fx.rmTreeFiles))}}
}

func (w *rmTree) setup(b backend) error {
	if err := w.mountStack(b, stack{lowers: []string{w.h.fx.rmTreeDir}, writable: true}); err != nil {
		return err
	}
	if err := dropCaches(1); err != nil {
		return err
	}
	return warmTree(w.h.fx.rmTreeDir)
}

func (w *rmTree) run() (values, error) {
	d, err := command(w.h.ctx, "", nil, "rm", "-rf", w.path("tree"))
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(w.path("tree")); !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("tree still there after rm -rf (lstat: %v)", err)
	}
	return values{"rm-tree": d.Seconds()}, nil
}
