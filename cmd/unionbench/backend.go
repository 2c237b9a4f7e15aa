package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// A backend makes a stack of layers visible as one directory.
type backend interface {
	name() string
	// available says why the backend cannot run on this machine, or nil.
	available() error
	// mount makes s visible (usually at sc.mnt) and returns once it answers
	// stat. A non-nil *mounted, even with an error, must be unmounted.
	mount(ctx context.Context, s stack, sc scratch) (*mounted, error)
	// unmount undoes mount and returns once any server has exited.
	unmount(ctx context.Context, m *mounted) error
}

// stack is what a workload asks a backend to show: lower layers, topmost
// first, and whether writes go to a fresh upper layer.
type stack struct {
	lowers   []string
	writable bool
}

// scratch is one mount's own space under the scratch root: an empty
// mountpoint, upper and work dir.
type scratch struct {
	dir, mnt, upper, work string
}

// mounted is a live mount, or the directory that stands in for one.
type mounted struct {
	backend  backend
	dir      string    // where the workload operates
	pid      int       // the FUSE server, 0 if the kernel serves dir
	answered time.Time // when dir first answered stat
	aborted  bool      // server killed and mount detached after a timeout
}

const (
	mountTimeout   = 60 * time.Second
	unmountTimeout = 60 * time.Second
)

// relativeLowers rewrites lowers relative to their deepest common
// directory, which the mount command then runs in: mount options are
// limited to one page, and 128 absolute layer paths do not fit.
func relativeLowers(lowers []string) (dir string, rel []string, err error) {
	dir = filepath.Dir(lowers[0])
	for _, l := range lowers[1:] {
		for dir != "/" && !strings.HasPrefix(l, dir+"/") {
			dir = filepath.Dir(dir)
		}
	}
	for _, l := range lowers {
		r, err := filepath.Rel(dir, l)
		if err != nil {
			return "", nil, err
		}
		if strings.ContainsAny(r, ":,\\") {
			return "", nil, fmt.Errorf("layer path %q has a character mount options cannot carry", r)
		}
		rel = append(rel, r)
	}
	return dir, rel, nil
}

// fuseMounted completes the mount of a daemonized FUSE server at mnt: waits
// until it answers, then finds the server's pid.
func fuseMounted(ctx context.Context, b backend, mnt string) (*mounted, error) {
	m := &mounted{backend: b, dir: mnt}
	if err := waitAnswer(ctx, mnt, mountTimeout); err != nil {
		return m, err
	}
	m.answered = time.Now()
	pid, err := serverPID(mnt)
	if err != nil {
		return m, err
	}
	m.pid = pid
	return m, nil
}

// available checks that path names an executable file.
func executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

func haveDevFuse() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("no /dev/fuse: %w", err)
	}
	return nil
}
