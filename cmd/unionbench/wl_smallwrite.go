package main

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// smallWrite (workload 8): in one process, create, write 4 KiB, fsync and
// close many new files.
type smallWrite struct{ mountedWorkload }

func (*smallWrite) name() string { return "smallwrite" }

func (w *smallWrite) metrics() []metric {
	return []metric{{key: "smallwrite", short: "create+write+fsync", kind: duration, target: "<= 1.2",
		label: fmt.Sprintf("smallwrite: %s x (create, write 4 KiB, fsync, close)", fmtCount(w.h.sz.smallWrites))}}
}

func (w *smallWrite) setup(b backend) error {
	if err := w.mountStack(b, stack{lowers: []string{w.h.fx.empty}, writable: true}); err != nil {
		return err
	}
	if err := unix.Mkdir(w.path("smallwrite"), 0o755); err != nil {
		return fmt.Errorf("mkdir: %w", err)
	}
	return dropCaches(1)
}

func (w *smallWrite) run() (values, error) {
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(i)
	}
	paths := make([]string, w.h.sz.smallWrites)
	for i := range paths {
		paths[i] = w.path(fmt.Sprintf("smallwrite/f%05d", i))
	}
	start := time.Now()
	for _, p := range paths {
		if err := writeSynced(p, buf); err != nil {
			return nil, err
		}
		if w.h.ctx.Err() != nil {
			return nil, w.h.ctx.Err()
		}
	}
	return values{"smallwrite": time.Since(start).Seconds()}, nil
}

func writeSynced(path string, data []byte) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	n, err := unix.Write(fd, data)
	if err == nil && n != len(data) {
		err = fmt.Errorf("short write: %d of %d bytes", n, len(data))
	}
	if err == nil {
		err = unix.Fsync(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
