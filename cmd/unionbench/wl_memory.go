package main

import "fmt"

// memory (workload 9): the peak resident set of the FUSE server after
// ls -lR of a big tree (the kernel backends have no server to measure).
type memory struct{ mountedWorkload }

func (*memory) name() string { return "memory" }

func (w *memory) metrics() []metric {
	n := fmtCount(w.h.fx.memTreeFiles)
	return []metric{
		{key: "memory/ls", short: "ls -lR", kind: duration,
			label: fmt.Sprintf("memory: `ls -lR` of a %s-file tree", n)},
		{key: "memory/rss", short: "peak RSS", kind: memBytes, absTarget: "<= 100 MiB",
			label: "memory: server peak RSS (VmHWM) after it"},
	}
}

func (w *memory) setup(b backend) error {
	if err := warmTree(w.h.fx.memTree); err != nil {
		return err
	}
	return w.mountStack(b, stack{lowers: []string{w.h.fx.memTree}})
}

func (w *memory) run() (values, error) {
	d, err := command(w.h.ctx, "", nil, "ls", "-lR", w.m.dir)
	if err != nil {
		return nil, err
	}
	v := values{"memory/ls": d.Seconds()}
	if w.m.pid == 0 {
		return v, nil
	}
	rss, err := peakRSS(w.m.pid)
	if err != nil {
		return v, err
	}
	v["memory/rss"] = rss
	return v, nil
}
