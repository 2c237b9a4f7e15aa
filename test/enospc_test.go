package test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCopyUpFullDisk fills the upper's filesystem during a copy-up: the
// writer gets ENOSPC, the lower file stays visible and intact, nothing is
// left half-written, and the union works again once there is space.
func TestCopyUpFullDisk(t *testing.T) {
	requireFUSE(t)
	requireRoot(t)
	small := t.TempDir()
	if err := unix.Mount("tmpfs", small, "tmpfs", 0, "size=8m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(small, unix.MNT_DETACH) })
	upper := filepath.Join(small, "upper")
	if err := os.Mkdir(upper, 0o755); err != nil {
		t.Fatal(err)
	}
	lower := t.TempDir()
	data := pattern(7, 16<<20)
	if err := os.WriteFile(filepath.Join(lower, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lower, "small"), []byte("small"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := checksumTree(t, lower)
	mnt := mountUnion(t, "-l", lower, "-u", upper)

	f, err := os.OpenFile(filepath.Join(mnt, "big"), os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		_, err = f.Write([]byte("x"))
		f.Close()
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append to a lower file larger than the upper's free space: got %v, want ENOSPC", err)
	}
	got, err := os.ReadFile(filepath.Join(mnt, "big"))
	if err != nil || sum(got) != sum(data) {
		t.Fatalf("after the failed copy-up the lower file reads %d bytes (err %v), want the intact %d", len(got), err, len(data))
	}
	if _, err := os.Stat(filepath.Join(upper, "big")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed copy-up left upper/big: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(upper, ".unionfs", "work")); len(ents) != 0 {
		t.Errorf("a failed copy-up left %d entries in the work dir", len(ents))
	}
	// Small writes still work.
	if err := os.WriteFile(filepath.Join(mnt, "small"), []byte("changed"), 0o644); err != nil {
		t.Fatalf("write a small file after ENOSPC: %v", err)
	}
	umountUnion(t, mnt)
	assertUnchanged(t, before, lower)
}
