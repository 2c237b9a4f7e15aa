package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// fuseOverlayfs is the fuse-overlayfs program (Debian package
// fuse-overlayfs), with its default options.
type fuseOverlayfs struct{}

func (fuseOverlayfs) name() string { return "fuse-overlayfs" }

func (fuseOverlayfs) available() error {
	for _, prog := range []string{"fuse-overlayfs", "fusermount3"} {
		if _, err := exec.LookPath(prog); err != nil {
			return fmt.Errorf("%s is not installed (apt-get install fuse-overlayfs fuse3)", prog)
		}
	}
	return haveDevFuse()
}

func (f fuseOverlayfs) mount(ctx context.Context, s stack, sc scratch) (*mounted, error) {
	dir, rel, err := relativeLowers(s.lowers)
	if err != nil {
		return nil, err
	}
	opts := []string{"lowerdir=" + strings.Join(rel, ":")}
	if s.writable {
		opts = append(opts, "upperdir="+sc.upper, "workdir="+sc.work)
	}
	// It daemonizes once the mount is live.
	if _, err := command(ctx, dir, nil, "fuse-overlayfs", "-o", strings.Join(opts, ","), sc.mnt); err != nil {
		return nil, err
	}
	return fuseMounted(ctx, f, sc.mnt)
}

func (fuseOverlayfs) unmount(ctx context.Context, m *mounted) error {
	if _, err := command(ctx, "", nil, "fusermount3", "-u", m.dir); err != nil {
		return err
	}
	return waitGone(m.pid, unmountTimeout)
}
