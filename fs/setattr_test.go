package fs

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// TestSetattrAt checks setattrAt by name and through a descriptor, with
// fchmodat2(2) and through the fallback for kernels before 6.6: the mode,
// times and size land on the file, and a symlink named as the last
// component is never followed.
func TestSetattrAt(t *testing.T) {
	defer noFchmodat2.Store(noFchmodat2.Load())
	for _, fallback := range []bool{false, true} {
		noFchmodat2.Store(fallback)
		dir := t.TempDir()
		f := filepath.Join(dir, "f")
		if err := os.WriteFile(f, []byte("0123456789"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("f", filepath.Join(dir, "link")); err != nil {
			t.Fatal(err)
		}
		dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(dfd)

		in := &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{
			Valid: fuse.FATTR_MODE | fuse.FATTR_MTIME | fuse.FATTR_SIZE,
			Mode:  0o600, Mtime: 1_000_000, Size: 4,
		}}
		var st unix.Stat_t
		if err := setattrAt(dfd, "f", false, in, &st); err != nil {
			t.Fatalf("fallback %v: setattrAt by name: %v", fallback, err)
		}
		if st.Mode&0o7777 != 0o600 || st.Mtim.Sec != 1_000_000 || st.Size != 4 {
			t.Errorf("fallback %v: by name: mode %o mtime %d size %d, want 600 1000000 4", fallback, st.Mode&0o7777, st.Mtim.Sec, st.Size)
		}

		fd, err := unix.Open(f, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		in.Mode, in.Mtime, in.Size = 0o640, 2_000_000, 2
		if err := setattrAt(fd, "", false, in, &st); err != nil {
			t.Fatalf("fallback %v: setattrAt on a descriptor: %v", fallback, err)
		}
		var got unix.Stat_t
		if err := unix.Stat(f, &got); err != nil {
			t.Fatal(err)
		}
		if got.Mode&0o7777 != 0o640 || got.Mtim.Sec != 2_000_000 || got.Size != 2 || st.Ino != got.Ino {
			t.Errorf("fallback %v: by descriptor: mode %o mtime %d size %d, want 640 2000000 2", fallback, got.Mode&0o7777, got.Mtim.Sec, got.Size)
		}

		// A mode change of a symlink's name must not reach its target.
		in.Valid, in.Mode = fuse.FATTR_MODE, 0o777
		if err := setattrAt(dfd, "link", false, in, &st); err == nil || !errors.Is(err, unix.EOPNOTSUPP) {
			t.Errorf("fallback %v: chmod of a symlink: %v, want EOPNOTSUPP", fallback, err)
		}
		if err := unix.Stat(f, &got); err != nil {
			t.Fatal(err)
		}
		if got.Mode&0o7777 != 0o640 {
			t.Errorf("fallback %v: chmod of a symlink reached its target: mode %o", fallback, got.Mode&0o7777)
		}
	}
}

// TestFchmodAtSeccompEPERM runs fchmodAt on a thread whose seccomp filter
// answers EPERM for fchmodat2, as container profiles older than the call
// do: the mode must still change (through /proc), and fchmodat2 be turned
// off for later calls.
func TestFchmodAtSeccompEPERM(t *testing.T) {
	defer noFchmodat2.Store(noFchmodat2.Load())
	noFchmodat2.Store(false)
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	done := make(chan error, 1)
	go func() {
		// The filter stays on this thread, which dies with the goroutine:
		// it is never unlocked.
		runtime.LockOSThread()
		prog := []unix.SockFilter{
			{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
			{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.SYS_FCHMODAT2},
			{Code: unix.BPF_RET | unix.BPF_K, K: 0x00050000 | uint32(unix.EPERM)}, // SECCOMP_RET_ERRNO
			{Code: unix.BPF_RET | unix.BPF_K, K: 0x7fff0000},                      // SECCOMP_RET_ALLOW
		}
		fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			done <- err
			return
		}
		if _, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, 1 /* SECCOMP_SET_MODE_FILTER */, 0, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
			done <- errno
			return
		}
		done <- fchmodAt(dfd, "f", 0o600, unix.AT_SYMLINK_NOFOLLOW)
	}()
	if err := <-done; err != nil {
		t.Fatalf("fchmodAt under a filter refusing fchmodat2: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(f, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o600 {
		t.Errorf("mode %o, want 600", st.Mode&0o7777)
	}
	if !noFchmodat2.Load() {
		t.Errorf("fchmodat2 still in use after the filter refused it")
	}
}
