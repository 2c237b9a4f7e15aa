package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// kernelOverlay is Linux overlayfs, mounted with mount(8).
type kernelOverlay struct{}

func (kernelOverlay) name() string { return "overlay" }

func (kernelOverlay) available() error {
	fss, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return err
	}
	if !bytes.Contains(fss, []byte("\toverlay\n")) {
		// It may be a module not loaded yet; mount(8) loads it.
		command(context.Background(), "", nil, "modprobe", "overlay")
		if fss, err = os.ReadFile("/proc/filesystems"); err != nil || !bytes.Contains(fss, []byte("\toverlay\n")) {
			return fmt.Errorf("the kernel has no overlay file system")
		}
	}
	return nil
}

func (k kernelOverlay) mount(ctx context.Context, s stack, sc scratch) (*mounted, error) {
	lowers := s.lowers
	if !s.writable && len(lowers) == 1 {
		// Without an upper, overlayfs wants at least two lowers.
		empty := filepath.Join(sc.dir, "empty-lower")
		if err := os.Mkdir(empty, 0o755); err != nil {
			return nil, err
		}
		lowers = append(lowers[:1:1], empty)
	}
	dir, rel, err := relativeLowers(lowers)
	if err != nil {
		return nil, err
	}
	opts := []string{"lowerdir=" + strings.Join(rel, ":")}
	if s.writable {
		opts = append(opts, "upperdir="+sc.upper, "workdir="+sc.work)
	}
	opts = append(opts, "redirect_dir=on", "index=on", "xino=on")
	if _, err := command(ctx, dir, nil, "mount", "-t", "overlay", "overlay", "-o", strings.Join(opts, ","), sc.mnt); err != nil {
		return nil, err
	}
	m := &mounted{backend: k, dir: sc.mnt}
	if err := waitAnswer(ctx, sc.mnt, mountTimeout); err != nil {
		return m, err
	}
	m.answered = time.Now()
	return m, nil
}

func (kernelOverlay) unmount(ctx context.Context, m *mounted) error {
	_, err := command(ctx, "", nil, "umount", m.dir)
	return err
}
