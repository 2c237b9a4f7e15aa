package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// statTree (workload 1): find and ls -lR of a real source tree, warm and
// cold.
type statTree struct{ mountedWorkload }

func (*statTree) name() string { return "stat-tree" }

func (w *statTree) metrics() []metric {
	n := fmtCount(w.h.fx.goSrcFiles)
	return []metric{
		{key: "stat/find-warm", short: "find warm", kind: duration, target: "<= 1.5",
			label: fmt.Sprintf("stat-tree: `find -type f | wc -l`, warm (%s files)", n)},
		{key: "stat/find-cold", short: "find cold", kind: duration, target: "<= 2.0",
			label: "stat-tree: `find -type f | wc -l`, cold"},
		{key: "stat/ls-warm", short: "ls -lR warm", kind: duration, target: "<= 1.5",
			label: "stat-tree: `ls -lR`, warm"},
		{key: "stat/ls-cold", short: "ls -lR cold", kind: duration, target: "<= 2.0",
			label: "stat-tree: `ls -lR`, cold"},
	}
}

func (w *statTree) setup(b backend) error {
	if err := warmTree(w.h.fx.goSrc); err != nil {
		return err
	}
	return w.mountStack(b, stack{lowers: []string{w.h.fx.goSrc}})
}

func (w *statTree) run() (values, error) {
	v := values{}
	// Each is run once untimed to warm the caches, timed warm, then timed
	// again after dropping every cache.
	for _, t := range []struct {
		warm, cold string
		do         func() (time.Duration, error)
	}{
		{"stat/find-warm", "stat/find-cold", w.find},
		{"stat/ls-warm", "stat/ls-cold", w.lsLR},
	} {
		if _, err := t.do(); err != nil {
			return v, err
		}
		d, err := t.do()
		if err != nil {
			return v, err
		}
		v[t.warm] = d.Seconds()
		if err := dropCaches(3); err != nil {
			return v, err
		}
		if d, err = t.do(); err != nil {
			return v, err
		}
		v[t.cold] = d.Seconds()
	}
	return v, nil
}

func (w *statTree) find() (time.Duration, error) {
	d, out, err := shell(w.h.ctx, `find "$1" -type f | wc -l`, w.m.dir)
	if err != nil {
		return d, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || n != w.h.fx.goSrcFiles {
		return d, fmt.Errorf("find counted %q files, want %d", strings.TrimSpace(out), w.h.fx.goSrcFiles)
	}
	return d, nil
}

func (w *statTree) lsLR() (time.Duration, error) {
	return command(w.h.ctx, "", nil, "ls", "-lR", w.m.dir)
}
