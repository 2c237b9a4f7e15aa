package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// unionfsBin is the unionfs binary under test.
type unionfsBin struct {
	path string
}

func (unionfsBin) name() string { return "unionfs" }

func (u unionfsBin) available() error {
	if err := executable(u.path); err != nil {
		return fmt.Errorf("%w (build it with make build, or pass -unionfs PATH)", err)
	}
	return haveDevFuse()
}

func (u unionfsBin) mount(ctx context.Context, s stack, sc scratch) (*mounted, error) {
	logFile := filepath.Join(sc.dir, "unionfs.log")
	args := []string{u.path, "mount", "--log-file", logFile, "-l", strings.Join(s.lowers, ":")}
	if s.writable {
		args = append(args, "-u", sc.upper, "-w", sc.work)
	}
	// It returns once the mount is live and the server runs in the background.
	if _, err := command(ctx, "", nil, append(args, sc.mnt)...); err != nil {
		return nil, withLog(err, logFile)
	}
	m, err := fuseMounted(ctx, u, sc.mnt)
	return m, withLog(err, logFile)
}

func (u unionfsBin) unmount(ctx context.Context, m *mounted) error {
	// unionfs umount waits for the server to exit; waitGone reaps it.
	if _, err := command(ctx, "", nil, u.path, "umount", m.dir); err != nil {
		return err
	}
	return waitGone(m.pid, unmountTimeout)
}

// withLog adds the last line of the server's log to err.
func withLog(err error, logFile string) error {
	if err == nil {
		return nil
	}
	data, rerr := os.ReadFile(logFile)
	if rerr != nil {
		return err
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if last := lines[len(lines)-1]; last != "" {
		return fmt.Errorf("%w (server log: %s)", err, last)
	}
	return err
}
