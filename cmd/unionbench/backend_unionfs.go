package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// unionfsBin is the unionfs binary under test. The run turns FUSE over
// io_uring on where the kernel has it (see enableRing); noRing measures
// the same binary on /dev/fuse (-o noio_uring) beside it.
type unionfsBin struct {
	path   string
	noRing bool
}

func (u unionfsBin) name() string {
	if u.noRing {
		return "unionfs-devfuse"
	}
	return "unionfs"
}

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
	if u.noRing {
		args = append(args, "-o", "noio_uring")
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

const enableURing = "/sys/module/fuse/parameters/enable_uring"

// enableRing turns FUSE over io_uring on for the run, where the kernel has
// it (Linux 6.14+), and returns what puts the setting back and a line for
// the report.
func enableRing() (restore func(), note string) {
	old, err := os.ReadFile(enableURing)
	if err != nil {
		return func() {}, "no FUSE over io_uring in this kernel: requests over /dev/fuse"
	}
	was := strings.TrimSpace(string(old))
	if err := os.WriteFile(enableURing, []byte("Y"), 0); err != nil {
		return func() {}, fmt.Sprintf("cannot turn on FUSE over io_uring (%v): requests over /dev/fuse", err)
	}
	note = "requests over FUSE over io_uring (`fuse.enable_uring`, " + was + " before the run, Y during it)"
	return func() { os.WriteFile(enableURing, []byte(was), 0) }, note
}
