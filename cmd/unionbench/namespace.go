package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// envNamespace marks the copy of unionbench that runs in the private mount
// namespace.
const envNamespace = "_UNIONBENCH_PRIVATE_NS"

func inPrivateNamespace() bool { return os.Getenv(envNamespace) != "" }

// reexecInPrivateNamespace runs this program again in a new mount namespace
// and returns its exit status. The mounts of the benchmark live and die
// there; the host's mount table never sees them.
func reexecInPrivateNamespace() int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "unionbench: find own executable: %v\n", err)
		return 1
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envNamespace+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	// The child cleans up on SIGINT/SIGTERM; this process only waits for it.
	// (Catching, not ignoring: an ignored signal would stay ignored in the child.)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "unionbench: start in a private mount namespace: %v\n", err)
		return 1
	}
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	signal.Stop(sigs)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return exit.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "unionbench: %v\n", err)
		return 1
	}
}

// settleNamespace makes every mount in this namespace private, so that
// nothing mounted here propagates back to the host (os/exec already did this
// for CLONE_NEWNS; doing it again costs nothing and states the intent), and
// makes this process the reaper of the FUSE servers its mount commands
// leave behind, so that it can wait for them and no zombie outlives it.
func settleNamespace() error {
	if err := unix.Mount("none", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private in the new mount namespace: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become the subreaper of the FUSE servers: %w", err)
	}
	return nil
}

// reapOrphans collects any exited server that nobody waited for.
func reapOrphans() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
