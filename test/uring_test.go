package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The whole suite runs on whichever transport the machine offers; `make
// test` runs this package a second time with UNIONFS_TEST_NOIOURING=1
// where io_uring is enabled, so that /dev/fuse is covered too. These tests
// check the choice itself and what only the ring can get wrong.

const enableURing = "/sys/module/fuse/parameters/enable_uring"

// requireRing stops the test unless FUSE over io_uring is enabled. CI
// enables it (.ci/run) on a kernel that has it: there, a kernel parameter
// left off is a failure.
func requireRing(t *testing.T) {
	t.Helper()
	requireFUSE(t)
	b, err := os.ReadFile(enableURing)
	if err != nil {
		t.Skipf("kernel without FUSE over io_uring (%v)", err)
	}
	if os.Getenv(noRingEnv) != "" {
		t.Skipf("%s is set", noRingEnv)
	}
	if strings.TrimSpace(string(b)) != "Y" {
		skipOrFail(t, "FUSE over io_uring is off: as root, echo Y > %s", enableURing)
	}
}

func mountTransport(t *testing.T, mnt string) string {
	t.Helper()
	out, _, exit := runUnionfs(t, "inspect", mnt)
	var rec struct{ FUSETransport string }
	if exit != 0 || json.Unmarshal([]byte(out), &rec) != nil {
		t.Fatalf("inspect %s: exit %d\n%s", mnt, exit, out)
	}
	return rec.FUSETransport
}

// TestRingTransportChosen: a mount uses io_uring where the kernel offers
// it, and /dev/fuse with -o noio_uring; both serve the same union.
func TestRingTransportChosen(t *testing.T) {
	t.Parallel()
	requireRing(t)
	lower := t.TempDir()
	if err := os.WriteFile(filepath.Join(lower, "f"), []byte("lower\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		opts []string
		want string
	}{
		{nil, "io_uring"},
		{[]string{"-o", "noio_uring"}, "/dev/fuse"},
	} {
		upper := t.TempDir()
		mnt := mountUnion(t, append(c.opts, "-l", lower, "-u", upper)...)
		if got := mountTransport(t, mnt); got != c.want {
			t.Errorf("mount %v: transport %q, want %q", c.opts, got, c.want)
		}
		// A copy-up (offloaded to a goroutine on the ring), a create and
		// a read back (answered on the queue thread).
		if err := appendFile(filepath.Join(mnt, "f"), "union\n"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mnt, "new"), []byte("new\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := readString(filepath.Join(mnt, "f")); err != nil || got != "lower\nunion\n" {
			t.Errorf("mount %v: f = %q, %v", c.opts, got, err)
		}
		if got, err := readString(filepath.Join(lower, "f")); err != nil || got != "lower\n" {
			t.Errorf("mount %v: the lower f changed: %q, %v", c.opts, got, err)
		}
		umountUnion(t, mnt)
		if got, err := readString(filepath.Join(upper, "new")); err != nil || got != "new\n" {
			t.Errorf("mount %v: upper/new = %q, %v", c.opts, got, err)
		}
	}
}

// TestRingCopyUpDoesNotHoldUpItsCPU: the kernel sends a request to the
// ring queue of the CPU its caller runs on. A copy-up of a big lower file
// must not make every other request from that CPU wait for it: lookups
// from a thread on the same CPU are answered while it runs.
func TestRingCopyUpDoesNotHoldUpItsCPU(t *testing.T) {
	requireRing(t)
	var mine unix.CPUSet
	if err := unix.SchedGetaffinity(0, &mine); err != nil {
		t.Fatal(err)
	}
	cpu := -1
	for i := 0; i < 1024 && cpu < 0; i++ {
		if mine.IsSet(i) {
			cpu = i
		}
	}
	lower := t.TempDir()
	big := filepath.Join(lower, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	for range 256 { // real data: a sparse file copies in no time
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	mnt := mountUnion(t, "-l", lower, "-u", t.TempDir())

	// Both threads run on one CPU, so both go to its queue.
	pin := func() {
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			t.Error(err)
		}
	}
	var copyDone atomic.Bool
	copyErr := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		pin()
		close(started)
		f, err := os.OpenFile(filepath.Join(mnt, "big"), os.O_WRONLY|os.O_APPEND, 0)
		copyDone.Store(true)
		if err == nil {
			_, err = f.WriteString("x")
			f.Close()
		}
		copyErr <- err
	}()
	answered := make(chan []time.Time, 1)
	go func() {
		pin()
		defer runtime.UnlockOSThread()
		<-started
		var times []time.Time
		var st unix.Stat_t
		for i := 0; !copyDone.Load(); i++ {
			// Names that do not exist: every one is a new LOOKUP.
			unix.Lstat(filepath.Join(mnt, "missing-"+strconv.Itoa(i)), &st)
			times = append(times, time.Now())
		}
		answered <- times
	}()
	start := time.Now()
	if err := <-copyErr; err != nil {
		t.Fatalf("append to big: %v", err)
	}
	took := time.Since(start)
	times := <-answered
	// Half of 10 ms is room for a hundred lookups or more; a 256 MiB copy
	// that is fsynced takes far longer on any disk but for a reflink.
	if took < 10*time.Millisecond {
		t.Skipf("the copy-up took %v (a reflink?): too short to tell", took)
	}
	// Lookups queued behind the copy-up would all be answered after it;
	// count those answered in the middle half of it.
	middle := 0
	for _, at := range times {
		if d := at.Sub(start); d > took/4 && d < took*3/4 {
			middle++
		}
	}
	if middle < 10 {
		t.Errorf("lookups from the copy-up's CPU waited for it: %d of %d answered in the middle half of a %v copy-up",
			middle, len(times), took)
	}
	t.Logf("%d lookups answered in the middle half of a %v copy-up", middle, took)
	if got, err := os.Stat(filepath.Join(mnt, "big")); err != nil || got.Size() != 256<<20+1 {
		t.Errorf("big after the append: %v, %v", got, err)
	}
}
