package fs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

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
