package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireRingMount stops the test unless this process can mount with FUSE
// over io_uring; in CI (root, the parameter turned on by .ci/run) it must.
func requireRingMount(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no mounts")
	}
	why := ""
	switch {
	case os.Geteuid() != 0:
		why = "not root"
	case !RingAvailable():
		why = "FUSE over io_uring is not available (Linux 6.14+, fuse.enable_uring=Y)"
	}
	if why == "" {
		return
	}
	if _, err := os.Stat("/sys/module/fuse/parameters/enable_uring"); err == nil && os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set: a failure, not a skip)", why)
	}
	t.Skip(why)
}

// readWithin reads a file of a mount this process serves, giving up after
// a while instead of hanging the test. It uses plain system calls: os.Open
// would add the file to the runtime's epoll set, and epoll asks a FUSE
// server (this process) to poll the file with the epoll instance locked,
// one of the ways a server that touches its own mount can wedge.
func readWithin(t *testing.T, p string) string {
	t.Helper()
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- result{nil, err}
			return
		}
		defer unix.Close(fd)
		b := make([]byte, 4096)
		n, err := unix.Read(fd, b)
		done <- result{b[:max(n, 0)], err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Errorf("read %s: %v", p, r.err)
		}
		return string(r.b)
	case <-time.After(5 * time.Second):
		t.Fatalf("read %s: no answer in 5 s", p)
	}
	return ""
}

// TestRingMountsInOneProcess: mounts served by one process each register
// their ring on their own connection, also when a later mount's /dev/fuse
// descriptor reuses the number of an unmounted one's (the ring once took
// the highest-numbered descriptor: another mount's).
func TestRingMountsInOneProcess(t *testing.T) {
	requireRingMount(t)
	base := t.TempDir()
	var mu sync.Mutex
	var mnts []string
	var conns []uint32
	// A hang here must fail the test, not the whole run: after a minute,
	// abort the mounts' connections, which ends every request.
	watchdog := time.AfterFunc(time.Minute, func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			os.WriteFile(fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", c), []byte("1"), 0)
		}
		for _, mnt := range mnts {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
		panic("TestRingMountsInOneProcess: no progress in a minute; mounts aborted")
	})
	defer watchdog.Stop()
	mount := func(name string) *Server {
		lower := filepath.Join(base, name+"-lower")
		mnt := filepath.Join(base, name+"-mnt")
		for _, d := range []string{lower, mnt} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(lower, "who"), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		mnts = append(mnts, mnt)
		mu.Unlock()
		s, err := Mount(Config{Mountpoint: mnt, Lowers: []string{lower}})
		if err != nil {
			t.Fatalf("mount %s: %v", name, err)
		}
		// The connection's number is the minor of the mount's device.
		var st unix.Stat_t
		if err := unix.Stat(mnt, &st); err == nil {
			mu.Lock()
			conns = append(conns, unix.Minor(st.Dev))
			mu.Unlock()
		}
		if got := s.Transport(); got != "io_uring" {
			t.Errorf("mount %s: transport %q", name, got)
		}
		t.Cleanup(func() {
			if s.Unmount() == nil {
				s.Wait()
				s.Close()
			}
		})
		return s
	}
	check := func(name string) {
		t.Helper()
		if got := readWithin(t, filepath.Join(base, name+"-mnt", "who")); got != name {
			t.Errorf("%s/who = %q, want %q", name, got, name)
		}
	}
	a := mount("A")
	mount("B")
	check("A")
	check("B")
	if err := a.Unmount(); err != nil {
		t.Fatal(err)
	}
	a.Wait()
	a.Close()
	mount("C") // its /dev/fuse descriptor takes A's number
	check("C")
	check("B")
}
