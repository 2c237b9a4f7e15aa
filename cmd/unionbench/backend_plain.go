package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// plainDir is the baseline: the workload runs on an ordinary directory
// holding the stack's files, the lower itself when it is a single read-only
// layer, otherwise a merged copy (a fresh one for writes).
type plainDir struct {
	merged map[string]string // read-only stack → its merged copy
}

func newPlainDir() *plainDir { return &plainDir{merged: map[string]string{}} }

func (*plainDir) name() string     { return "plain" }
func (*plainDir) available() error { return nil }

func (p *plainDir) mount(ctx context.Context, s stack, sc scratch) (*mounted, error) {
	m := &mounted{backend: p}
	key := strings.Join(s.lowers, ":")
	switch {
	case !s.writable && len(s.lowers) == 1:
		m.dir = s.lowers[0]
	case !s.writable && p.merged[key] != "":
		m.dir = p.merged[key]
	default:
		if err := mergeCopy(ctx, s.lowers, sc.upper); err != nil {
			return nil, err
		}
		m.dir = sc.upper
		if !s.writable {
			p.merged[key] = sc.upper
		}
	}
	m.answered = time.Now()
	return m, nil
}

func (*plainDir) unmount(context.Context, *mounted) error { return nil }

// mergeCopy copies the layers into dst, bottom first, so that upper files
// replace lower ones (the fixtures hold no whiteouts).
func mergeCopy(ctx context.Context, lowers []string, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for i := len(lowers) - 1; i >= 0; i-- {
		if _, err := command(ctx, "", nil, "cp", "-a", lowers[i]+"/.", dst+"/"); err != nil {
			return fmt.Errorf("copy %s: %w", lowers[i], err)
		}
	}
	return nil
}
