package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// dropCaches writes back dirty data, then drops clean caches: 1 the page
// cache, 3 also dentries and inodes.
func dropCaches(level int) error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte(strconv.Itoa(level)), 0); err != nil {
		return fmt.Errorf("drop caches: %w", err)
	}
	return nil
}

// command runs argv in dir ("" for the current one) with stdout going to
// stdout (nil: /dev/null), and returns how long it ran. It runs in its own
// process group, killed as a whole when ctx ends, so that a terminal's ^C
// reaches unionbench, which then cleans up.
func command(ctx context.Context, dir string, stdout io.Writer, argv ...string) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout = stdout
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:] // the last line says most
		}
		if msg != "" {
			return d, fmt.Errorf("%s: %w: %s", argv[0], err, msg)
		}
		return d, fmt.Errorf("%s: %w", argv[0], err)
	}
	return d, nil
}

// shell runs a sh script with args as $1, $2, ... and returns its output.
func shell(ctx context.Context, script string, args ...string) (time.Duration, string, error) {
	var out bytes.Buffer
	d, err := command(ctx, "", &out, append([]string{"sh", "-c", script, "sh"}, args...)...)
	return d, out.String(), err
}

// warmTree reads every directory and inode of the trees at dirs, so that a
// workload starts with them in the cache whatever ran before it.
func warmTree(dirs ...string) error {
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			_, err = d.Info()
			return err
		})
		if err != nil {
			return fmt.Errorf("warm %s: %w", dir, err)
		}
	}
	return nil
}

// readFile reads path once, to bring it into the page cache.
func readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

// waitAnswer waits until dir is a mountpoint that answers stat: its
// device differs from its parent's.
func waitAnswer(ctx context.Context, dir string, timeout time.Duration) error {
	var parent unix.Stat_t
	if err := unix.Stat(filepath.Dir(dir), &parent); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		var st unix.Stat_t
		err := unix.Stat(dir, &st)
		if err == nil && st.Dev != parent.Dev {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err == nil {
				err = errors.New("still not mounted")
			}
			return fmt.Errorf("%s does not answer after %v: %w", dir, timeout, err)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// serverPID finds the FUSE server of the mount at mnt: the process with mnt
// as one of its arguments.
func serverPID(mnt string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	self := os.Getpid()
	found := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, arg := range strings.Split(string(cmdline), "\x00") {
			if arg == mnt {
				if found != 0 {
					return 0, fmt.Errorf("processes %d and %d both name %s", found, pid, mnt)
				}
				found = pid
				break
			}
		}
	}
	if found == 0 {
		return 0, fmt.Errorf("no process serves %s", mnt)
	}
	return found, nil
}

// waitGone waits until process pid has exited, reaping it if it is a child
// (this process is the subreaper of the daemonized servers).
func waitGone(pid int, timeout time.Duration) error {
	if pid <= 0 {
		return nil // no server was found: nothing to wait for (and wait4(0) would mean any child)
	}
	deadline := time.Now().Add(timeout)
	for delay := 50 * time.Microsecond; ; delay = min(2*delay, 5*time.Millisecond) {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		switch {
		case got == pid:
			return nil
		case errors.Is(err, unix.ECHILD):
			// Not ours to reap: done once it is gone or a zombie.
			if kerr := unix.Kill(pid, 0); errors.Is(kerr, unix.ESRCH) || isZombie(pid) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server (pid %d) still running %v after unmount", pid, timeout)
		}
		time.Sleep(delay)
	}
}

func isZombie(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(data, ')')
	return i > 0 && i+2 < len(data) && data[i+2] == 'Z'
}

// peakRSS reads VmHWM, the peak resident set size, of process pid in bytes.
func peakRSS(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmHWM of %d: %w", pid, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// mountsUnder lists the mountpoints in this namespace at or below dir,
// deepest first.
func mountsUnder(dir string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var mnts []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mnts = append(mnts, mp)
		}
	}
	for i, j := 0, len(mnts)-1; i < j; i, j = i+1, j-1 {
		mnts[i], mnts[j] = mnts[j], mnts[i]
	}
	return mnts, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a space, ...) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
