package test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// asNobody runs the unionfs binary as uid/gid 65534 with a private copy
// of the binary the user can reach.
func asNobody(t *testing.T, dir string, args ...string) (string, int) {
	t.Helper()
	bin := filepath.Join(dir, "unionfs")
	if _, err := os.Stat(bin); err != nil {
		data, err := os.ReadFile(requireBinary(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_RUNTIME_DIR="+filepath.Join(dir, "run"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return out.String(), code
}

// TestRootlessMount mounts, writes and unmounts as an unprivileged user
// through fusermount3, as podman does rootless.
func TestRootlessMount(t *testing.T) {
	requireRoot(t) // to become another user, and to open /dev/fuse to it
	requireFUSE(t)
	if _, err := exec.LookPath("fusermount3"); err != nil {
		skipOrFail(t, "fusermount3 is not installed (apt-get install fuse3)")
	}
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"l/d", "u", "m", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "l/d/f"), []byte("low\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"l", "l/d", "l/d/f", "u", "m", "run"} {
		if err := os.Chown(filepath.Join(dir, d), 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}

	before := checksumTree(t, filepath.Join(dir, "l"))
	var st unix.Stat_t
	if err := unix.Stat("/dev/fuse", &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o006 != 0o006 {
		// A /dev/fuse closed to others gets a clear error.
		out, code := asNobody(t, dir, "mount", "-l", "l", "-u", "u", "m")
		if code == 0 || !strings.Contains(out, "/dev/fuse") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("mount with /dev/fuse closed to the user: exit %d, output %q; want one line about /dev/fuse", code, out)
		}
		// Debian's default is 0666: open it for the rest of the test.
		if err := os.Chmod("/dev/fuse", 0o666); err != nil {
			t.Fatal(err)
		}
		orig := os.FileMode(st.Mode & 0o777)
		t.Cleanup(func() { os.Chmod("/dev/fuse", orig) })
	}

	if out, code := asNobody(t, dir, "mount", "-l", "l", "-u", "u", "m"); code != 0 {
		t.Fatalf("rootless mount: exit %d: %s", code, out)
	}
	mnt := filepath.Join(dir, "m")
	t.Cleanup(func() {
		if _, ok := mountedFS(t, mnt); ok {
			forceUnmount(mnt)
		}
	})
	if fstype, ok := mountedFS(t, mnt); !ok || fstype != "fuse.unionfs" {
		t.Fatalf("after a rootless mount %s is %q, mounted %v", mnt, fstype, ok)
	}
	// Without allow_other only the mounting user may use the mount.
	sh := exec.Command("sh", "-c", "echo new > m/d/new && echo more >> m/d/f && rm m/d/f && ls m/d && cat m/d/new")
	sh.Dir = dir
	sh.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := sh.CombinedOutput()
	if err != nil || string(out) != "new\nnew\n" {
		t.Errorf("work in the rootless mount: %v, output %q; want \"new\\nnew\\n\"", err, out)
	}
	if out, code := asNobody(t, dir, "umount", "m"); code != 0 {
		t.Fatalf("rootless umount: exit %d: %s", code, out)
	}
	if _, ok := mountedFS(t, mnt); ok {
		t.Fatalf("%s still mounted after a rootless umount", mnt)
	}
	if err := unix.Lstat(filepath.Join(dir, "u/d/new"), &st); err != nil || st.Uid != 65534 {
		t.Errorf("upper d/new: uid %d, %v; want the user's file", st.Uid, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "u/d/f")); !os.IsNotExist(err) {
		t.Errorf("upper d/f after rm: %v; want it gone (the deletion is a record)", err)
	}
	assertUnchanged(t, before, filepath.Join(dir, "l"))
}
