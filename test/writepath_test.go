package test

// Direct tests of the writable upper that the oracle cannot express:
// persistence across remounts, the on-disk form of the upper, the reserved
// state directory, locking of the upper, bad state databases, open-file
// semantics, limits, metadata kept by copy-up, special files, locks and the
// less common data calls. ext4 (a plain temp dir) is the reference where
// kernel overlayfs falls short of what unionfs promises.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ---------------------------------------------------------------------------
// Helpers

// wpLower builds tr in a fresh lower directory and checks, once the test's
// mounts are gone, that the directory is byte-for-byte unchanged.
func wpLower(t *testing.T, tr tree) string {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, tr)
	sums := checksumTree(t, dir)
	// Registered before any mount of the test, so it runs after the unmount.
	t.Cleanup(func() { assertUnchanged(t, sums, dir) })
	return dir
}

// wpRemount unmounts mnt and mounts it again with the same arguments.
func wpRemount(t *testing.T, mnt string, args ...string) {
	t.Helper()
	umountUnion(t, mnt)
	mountUnionAt(t, mnt, args...)
}

func wpLstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return st
}

// wpWantErrno checks that err is the errno want (0 for success).
func wpWantErrno(t *testing.T, what string, err error, want unix.Errno) {
	t.Helper()
	if want == 0 {
		if err != nil {
			t.Errorf("%s: %v, want success", what, err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

func wpReadFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

func wpWriteFile(t *testing.T, p string, flags int, content string) {
	t.Helper()
	if err := owWriteFile(p, flags, content); err != nil {
		t.Fatalf("write %s: %v", p, err)
	}
}

// wpUpperRegularFiles lists the regular files in upper outside the state
// directory, relative to upper.
func wpUpperRegularFiles(t *testing.T, upper string) []string {
	t.Helper()
	var files []string
	err := walk(upper, newWalkConfig([]walkOption{skipStateDir()}), func(rel, _ string, st *unix.Stat_t) error {
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// wpDirEntries lists every path under dir (recursively), or nil if dir
// does not exist.
func wpDirEntries(t *testing.T, dir string) []string {
	t.Helper()
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var out []string
	err := walk(dir, walkConfig{}, func(rel, _ string, _ *unix.Stat_t) error {
		if rel != "." {
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ---------------------------------------------------------------------------
// Persistence

func TestWritePathPersistence(t *testing.T) {
	t.Parallel()
	lower := wpLower(t, tree{
		"del/file":       file("deleted"),
		"del/kept":       file("kept"),
		"deldir/a/b":     file("b"),
		"deldir/c":       file("c"),
		"opq/old1":       file("old"),
		"opq/sub/old2":   file("old"),
		"mv/sub/deep":    file("deep"),
		"mv/top":         file("top"),
		"hl/a":           fileMode("shared", 0o640),
		"hl/b":           hardlink("hl/a"),
		"single":         file("single"),
		"cu":             fileMode("copy me", 0o640),
		"untouched/file": file("never copied up"),
	})
	upper := t.TempDir()
	args := []string{"-l", lower, "-u", upper}
	mnt := mountUnion(t, args...)
	p := func(rel string) string { return filepath.Join(mnt, rel) }

	inoCu := wpLstat(t, p("cu")).Ino
	inoUntouched := wpLstat(t, p("untouched/file")).Ino

	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	must("unlink del/file", unix.Unlink(p("del/file")))
	must("rm -r deldir", os.RemoveAll(p("deldir")))
	must("rm -r opq", os.RemoveAll(p("opq")))
	must("mkdir opq", unix.Mkdir(p("opq"), 0o755))
	wpWriteFile(t, p("opq/new"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, "new")
	must("rename mv mv2", unix.Rename(p("mv"), p("mv2")))
	must("append mv2/sub/deep", appendFile(p("mv2/sub/deep"), "+"))
	must("mkdir mv", unix.Mkdir(p("mv"), 0o755)) // the old name, reused: must be empty
	wpWriteFile(t, p("hl/a"), os.O_WRONLY|os.O_TRUNC, "written through a")
	must("link single single2", unix.Link(p("single"), p("single2")))
	wpWriteFile(t, p("n"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, "new file")
	must("link n n2", unix.Link(p("n"), p("n2")))
	must("append cu", appendFile(p("cu"), " and more"))

	// sameFile checks that a and b are one inode with nlink links and the
	// given content.
	sameFile := func(t *testing.T, a, b string, nlink uint64, content string) {
		t.Helper()
		sa, sb := wpLstat(t, p(a)), wpLstat(t, p(b))
		if sa.Ino != sb.Ino {
			t.Errorf("%s and %s: st_ino %d and %d, want one inode", a, b, sa.Ino, sb.Ino)
		}
		if uint64(sa.Nlink) != nlink || uint64(sb.Nlink) != nlink {
			t.Errorf("%s and %s: st_nlink %d and %d, want %d", a, b, sa.Nlink, sb.Nlink, nlink)
		}
		for _, n := range []string{a, b} {
			if got := wpReadFile(t, p(n)); got != content {
				t.Errorf("%s: content %q, want %q", n, got, content)
			}
		}
	}
	gone := func(t *testing.T, rel string) {
		t.Helper()
		var st unix.Stat_t
		wpWantErrno(t, "lstat "+rel, unix.Lstat(p(rel), &st), unix.ENOENT)
	}
	listIs := func(t *testing.T, rel, want string) {
		t.Helper()
		if got, err := listDir(p(rel)); err != nil || got != want {
			t.Errorf("readdir %s = %q, %v; want %q", rel, got, err, want)
		}
	}
	verify := func(t *testing.T) {
		t.Helper()
		gone(t, "del/file")
		listIs(t, "del", "kept")
		gone(t, "deldir")
		listIs(t, "opq", "new")
		gone(t, "opq/old1")
		gone(t, "opq/sub")
		listIs(t, "mv", "")
		listIs(t, "mv2", "sub,top")
		if got := wpReadFile(t, p("mv2/sub/deep")); got != "deep+" {
			t.Errorf("mv2/sub/deep = %q, want %q", got, "deep+")
		}
		sameFile(t, "hl/a", "hl/b", 2, "written through a")
		sameFile(t, "single", "single2", 2, "single")
		sameFile(t, "n", "n2", 2, "new file")
		if got := wpReadFile(t, p("cu")); got != "copy me and more" {
			t.Errorf("cu = %q", got)
		}
		if ino := wpLstat(t, p("cu")).Ino; ino != inoCu {
			t.Errorf("cu: st_ino %d, want %d as before its copy-up", ino, inoCu)
		}
		if ino := wpLstat(t, p("untouched/file")).Ino; ino != inoUntouched {
			t.Errorf("untouched/file: st_ino %d, want %d as at the first mount", ino, inoUntouched)
		}
	}
	t.Run("before remount", verify)
	before, beforeLinks := snapshot(t, mnt), hardlinkGroups(t, mnt)

	wpRemount(t, mnt, args...)
	t.Run("after remount", verify)
	assertSameTree(t, before, snapshot(t, mnt))
	if b, a := fmt.Sprint(beforeLinks), fmt.Sprint(hardlinkGroups(t, mnt)); b != a {
		t.Errorf("hard link groups before remount %s, after %s", b, a)
	}

	// The links are still one file after the remount: write through the
	// other name.
	wpWriteFile(t, p("hl/b"), os.O_WRONLY|os.O_TRUNC, "written through b")
	wpWriteFile(t, p("single2"), os.O_WRONLY|os.O_APPEND, "+2")
	sameFile(t, "hl/a", "hl/b", 2, "written through b")
	sameFile(t, "single", "single2", 2, "single+2")
	must("unlink hl/a", unix.Unlink(p("hl/a")))
	if st := wpLstat(t, p("hl/b")); st.Nlink != 1 {
		t.Errorf("hl/b: st_nlink %d after unlinking hl/a, want 1", st.Nlink)
	}
	wpRemount(t, mnt, args...)
	gone(t, "hl/a")
	if st := wpLstat(t, p("hl/b")); st.Nlink != 1 {
		t.Errorf("hl/b: st_nlink %d after a second remount, want 1", st.Nlink)
	}
	sameFile(t, "single", "single2", 2, "single+2")
}

// ---------------------------------------------------------------------------
// The upper's on-disk form

// wpDeletionWorkload deletes, renames and replaces lower entries of
// wpDeletionLower in every way that needs a whiteout or an opaque dir.
func wpDeletionWorkload(t *testing.T, mnt string) {
	t.Helper()
	p := func(rel string) string { return filepath.Join(mnt, rel) }
	for _, step := range []struct {
		what string
		fn   func() error
	}{
		{"unlink f", func() error { return unix.Unlink(p("f")) }},
		{"unlink d/a", func() error { return unix.Unlink(p("d/a")) }},
		{"unlink d/l", func() error { return unix.Unlink(p("d/l")) }},
		{"rm -r tree", func() error { return os.RemoveAll(p("tree")) }},
		{"rm -r opq", func() error { return os.RemoveAll(p("opq")) }},
		{"mkdir opq", func() error { return unix.Mkdir(p("opq"), 0o755) }},
		{"rename mv mv2", func() error { return unix.Rename(p("mv"), p("mv2")) }},
		{"rename d/b d/b2", func() error { return unix.Rename(p("d/b"), p("d/b2")) }},
		{"rename x over y", func() error { return unix.Rename(p("x"), p("y")) }},
		{"exchange e1 e2", func() error {
			return unix.Renameat2(unix.AT_FDCWD, p("e1"), unix.AT_FDCWD, p("e2"), unix.RENAME_EXCHANGE)
		}},
		{"unlink multi", func() error { return unix.Unlink(p("multi")) }},
		{"rm -r both", func() error { return os.RemoveAll(p("both")) }},
	} {
		if err := step.fn(); err != nil {
			t.Fatalf("%s: %v", step.what, err)
		}
	}
}

func wpDeletionLowers() []tree {
	return []tree{
		{
			"f":           file("f"),
			"d/a":         file("a"),
			"d/b":         file("b"),
			"d/l":         symlink("a"),
			"tree/x/y/z":  file("z"),
			"opq/old":     file("old"),
			"mv/in":       file("in"),
			"x":           file("x"),
			"y":           file("y"),
			"e1/":         dir(0o755),
			"e2":          file("e2"),
			"multi":       file("top"),
			"both/top":    file("top"),
			"keep/intact": file("intact"),
		},
		{
			"multi":       file("bottom"),
			"both/bottom": file("bottom"),
			"opq/old2":    file("old2"),
		},
	}
}

func TestWritePathNoWhiteoutFilesInUpper(t *testing.T) {
	t.Parallel()
	trees := wpDeletionLowers()
	lowers := []string{wpLower(t, trees[0]), wpLower(t, trees[1])}
	upper, work := t.TempDir(), t.TempDir()
	mnt := mountUnion(t, "-l", strings.Join(lowers, ":"), "-u", upper, "-w", work)
	wpDeletionWorkload(t, mnt)
	umountUnion(t, mnt)

	for _, root := range []string{upper, work} {
		err := walk(root, walkConfig{}, func(rel, full string, st *unix.Stat_t) error {
			if strings.HasPrefix(filepath.Base(rel), ".wh.") {
				t.Errorf("%s holds whiteout marker %s: whiteouts belong in the state database", root, rel)
			}
			if typ := st.Mode & unix.S_IFMT; typ == unix.S_IFCHR || typ == unix.S_IFBLK {
				t.Errorf("%s holds device node %s (rdev %d:%d): whiteouts belong in the state database",
					root, rel, unix.Major(st.Rdev), unix.Minor(st.Rdev))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(upper, stateDirName, "state.db")); err != nil {
		t.Errorf("upper has no state database: %v", err)
	}
}

// ---------------------------------------------------------------------------
// The reserved state directory

func TestWritePathStateDirHidden(t *testing.T) {
	t.Parallel()
	lower := wpLower(t, tree{
		"a/file": file("a"),
		// A lower that was once an upper carries its own state dir (a
		// database there is read as the lower's whiteouts: see
		// TestWritePathUpperAsLower).
		stateDirName + "/junk": file("junk"),
	})
	upper := t.TempDir()
	args := []string{"-l", lower, "-u", upper}
	mnt := mountUnion(t, args...)
	p := func(rel string) string { return filepath.Join(mnt, rel) }
	state := filepath.Join(upper, stateDirName)
	stateBefore, err := listDir(state)
	if err != nil {
		t.Fatalf("the mount did not create %s: %v", state, err)
	}

	// Give the root an upper copy, so both the merged and the copied-up
	// root are listed.
	wpWriteFile(t, p("new"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, "new")
	checkHidden := func(t *testing.T) {
		t.Helper()
		names, err := listDir(mnt)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(strings.Split(names, ","), stateDirName) {
			t.Errorf("readdir of the mount root lists %s: %s", stateDirName, names)
		}
		for _, rel := range []string{stateDirName, stateDirName + "/state.db", stateDirName + "/junk", stateDirName + "/work"} {
			var st unix.Stat_t
			wpWantErrno(t, "lstat "+rel, unix.Lstat(p(rel), &st), unix.ENOENT)
		}
	}
	checkHidden(t)

	// No way of making the name through the mount may succeed.
	creators := []struct {
		what string
		fn   func() error
	}{
		{"create", func() error {
			return owWriteFile(p(stateDirName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, "x")
		}},
		{"mkdir", func() error { return unix.Mkdir(p(stateDirName), 0o755) }},
		{"symlink", func() error { return unix.Symlink("new", p(stateDirName)) }},
		{"mkfifo", func() error { return unix.Mkfifo(p(stateDirName), 0o644) }},
		{"link", func() error { return unix.Link(p("new"), p(stateDirName)) }},
		{"rename file", func() error { return unix.Rename(p("new"), p(stateDirName)) }},
		{"rename dir", func() error { return unix.Rename(p("a"), p(stateDirName)) }},
		{"create inside", func() error {
			return owWriteFile(p(stateDirName+"/state.db"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, "x")
		}},
		{"rename away", func() error { return unix.Rename(p(stateDirName), p("stolen")) }},
	}
	for _, c := range creators {
		if err := c.fn(); err == nil {
			t.Errorf("%s %s through the mount succeeded, want an error", c.what, stateDirName)
		}
		checkHidden(t)
	}
	if got := wpReadFile(t, p("new")); got != "new" {
		t.Errorf("new = %q after the attempts", got)
	}
	if got, err := listDir(p("a")); err != nil || got != "file" {
		t.Errorf("readdir a = %q, %v", got, err)
	}
	// Only the root's name is reserved.
	wpWriteFile(t, p("a/"+stateDirName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, "allowed below the root")

	// The attempts left nothing in the state dir, and the database still
	// opens: the remount would fail on a truncated one.
	if after, err := listDir(state); err != nil || after != stateBefore {
		t.Errorf("%s changed through the mount: before %q, after %q (%v)", state, stateBefore, after, err)
	}
	wpRemount(t, mnt, args...)
	checkHidden(t)
	if got := wpReadFile(t, p("a/"+stateDirName)); got != "allowed below the root" {
		t.Errorf("a/%s = %q", stateDirName, got)
	}
}

// ---------------------------------------------------------------------------
// An upper reused as a lower

func TestWritePathUpperAsLower(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		workdir bool
	}{
		{"default workdir", false},
		{"separate workdir", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			trees := wpDeletionLowers()
			lowers := []string{wpLower(t, trees[0]), wpLower(t, trees[1])}
			upper1 := t.TempDir()
			args := []string{"-l", strings.Join(lowers, ":"), "-u", upper1}
			if tc.workdir {
				args = append(args, "-w", t.TempDir())
			}
			mnt1 := mountUnion(t, args...)
			wpDeletionWorkload(t, mnt1)
			wpWriteFile(t, filepath.Join(mnt1, "opq/new"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, "new in opq")
			wpWriteFile(t, filepath.Join(mnt1, "keep/intact"), os.O_WRONLY|os.O_APPEND, " and changed")
			want, wantLinks := snapshot(t, mnt1), hardlinkGroups(t, mnt1)
			umountUnion(t, mnt1)

			// The old upper is now the top lower; its deletions must hold
			// without its old work dir and with a fresh upper.
			upper2 := t.TempDir()
			mnt2 := mountUnion(t, "-l", strings.Join(append([]string{upper1}, lowers...), ":"), "-u", upper2)
			got := snapshot(t, mnt2)
			// The root's own metadata is the upper's, not the layers'.
			delete(want, ".")
			delete(got, ".")
			assertSameTree(t, want, got)
			if b, a := fmt.Sprint(wantLinks), fmt.Sprint(hardlinkGroups(t, mnt2)); b != a {
				t.Errorf("hard link groups: first mount %s, with its upper as a lower %s", b, a)
			}
			var st unix.Stat_t
			wpWantErrno(t, "lstat "+stateDirName+" of the old upper", unix.Lstat(filepath.Join(mnt2, stateDirName), &st), unix.ENOENT)

			// And the new mount writes on top as usual.
			if err := os.RemoveAll(filepath.Join(mnt2, "opq")); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mkdir(filepath.Join(mnt2, "opq"), 0o755); err != nil {
				t.Fatal(err)
			}
			if got, err := listDir(filepath.Join(mnt2, "opq")); err != nil || got != "" {
				t.Errorf("opq re-created on the second mount lists %q, %v; want nothing", got, err)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// One upper, one mount

func TestWritePathSecondMountFails(t *testing.T) {
	t.Parallel()
	bin := requireBinary(t)
	lower := wpLower(t, tree{"f": file("f")})
	upper := t.TempDir()
	mnt1 := mountUnion(t, "-l", lower, "-u", upper)

	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"same upper", nil},
		{"same upper, other workdir", []string{"-w", t.TempDir()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt2 := resolvePath(t, filepath.Join(t.TempDir(), "mnt2"))
			if err := os.Mkdir(mnt2, 0o755); err != nil {
				t.Fatal(err)
			}
			argv := append([]string{"mount", "-l", lower, "-u", upper}, tc.extra...)
			argv = append(argv, mnt2)
			start := time.Now()
			res, err := runCommand(30*time.Second, bin, argv...)
			elapsed := time.Since(start)
			if _, mounted := mountedFS(t, mnt2); mounted {
				if ferr := forceUnmount(mnt2); ferr != nil {
					t.Errorf("unmount the second mount: %v", ferr)
				}
				t.Fatalf("a second mount of upper %s succeeded while the first is live", upper)
			}
			if err != nil {
				t.Fatalf("second mount: %v (after %v)", err, elapsed)
			}
			if res.exit == 0 {
				t.Errorf("second mount exited 0 without mounting")
			}
			if elapsed > 5*time.Second {
				t.Errorf("second mount took %v to fail, want under 5s", elapsed)
			}
			msg := strings.TrimSpace(res.stderr)
			if !strings.Contains(msg, resolvePath(t, upper)) {
				t.Errorf("error does not name the upper %s:\n%s", upper, msg)
			}
			if strings.Contains(msg, "goroutine ") || strings.Contains(msg, "panic") {
				t.Errorf("error is a crash, not a message:\n%s", msg)
			}
			t.Logf("second mount failed after %v: %s", elapsed, msg)
		})
	}

	// The first mount is unharmed.
	wpWriteFile(t, filepath.Join(mnt1, "g"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, "still works")
	if got := wpReadFile(t, filepath.Join(mnt1, "g")); got != "still works" {
		t.Errorf("first mount: g = %q", got)
	}
}

// ---------------------------------------------------------------------------
// Bad state databases

func TestWritePathCorruptStateDB(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		content []byte
	}{
		{"garbage", bytes.Repeat([]byte("this is not a bbolt database\x00\xff"), 2048)},
		{"zero length", nil},
		{"truncated header", []byte{0xed, 0xda, 0x0c, 0xed}},
	} {
		// The database is the mount's own (in the upper) or that of a
		// former upper now given as a lower.
		for _, where := range []string{"upper", "lower"} {
			t.Run(tc.name+" in "+where, func(t *testing.T) {
				t.Parallel()
				bin := requireBinary(t)
				lower := wpLower(t, tree{"f": file("f"), "g": file("g")})
				upper := t.TempDir()
				// A real state first: the mount recorded a whiteout.
				mnt := mountUnion(t, "-l", lower, "-u", upper)
				if err := unix.Unlink(filepath.Join(mnt, "f")); err != nil {
					t.Fatal(err)
				}
				umountUnion(t, mnt)

				// As the error names it: absolute and symlink-free.
				db := filepath.Join(resolvePath(t, upper), stateDirName, "state.db")
				if err := os.WriteFile(db, tc.content, 0o600); err != nil {
					t.Fatal(err)
				}
				old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
				if err := os.Chtimes(db, old, old); err != nil {
					t.Fatal(err)
				}
				before := wpLstat(t, db)

				argv := []string{"mount", "-l", lower, "-u", upper}
				if where == "lower" {
					argv = []string{"mount", "-l", upper + ":" + lower, "-u", t.TempDir()}
				}
				mnt = resolvePath(t, mnt)
				res, err := runCommand(30*time.Second, bin, append(argv, mnt)...)
				if _, mounted := mountedFS(t, mnt); mounted {
					if ferr := forceUnmount(mnt); ferr != nil {
						t.Errorf("unmount: %v", ferr)
					}
					t.Errorf("mount with a %s state database in the %s succeeded; want a refusal (an empty state would resurrect deleted files)", tc.name, where)
				} else if err != nil {
					t.Errorf("mount: %v", err)
				} else if res.exit == 0 {
					t.Errorf("mount exited 0 without mounting")
				}
				if msg := res.stderr; !strings.Contains(msg, db) {
					t.Errorf("error does not name the database %s:\n%s", db, msg)
				} else {
					t.Logf("refused: %s", strings.TrimSpace(msg))
				}

				got, err := os.ReadFile(db)
				if err != nil {
					t.Fatalf("the database is gone: %v", err)
				}
				after := wpLstat(t, db)
				if !bytes.Equal(got, tc.content) || after.Size != before.Size || after.Mtim != before.Mtim || after.Ino != before.Ino {
					t.Errorf("the refused mount changed %s: size %d -> %d, mtime %v -> %v, ino %d -> %d",
						db, before.Size, after.Size, time.Unix(before.Mtim.Unix()), time.Unix(after.Mtim.Unix()), before.Ino, after.Ino)
				}
			})
		}
	}
}

// ---------------------------------------------------------------------------
// Open files

func TestWritePathFstatUnlinked(t *testing.T) {
	t.Parallel()
	lower := wpLower(t, tree{"lower": file("lower content"), "lower2": file("lower two"), "lowerdir/": dir(0o755)})
	mnt := mountUnion(t, "-l", lower, "-u", t.TempDir())
	p := func(rel string) string { return filepath.Join(mnt, rel) }

	check := func(t *testing.T, fd int, wantNlink uint64, wantContent string) {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Errorf("fstat: %v", err)
		} else if st.Nlink != wantNlink {
			t.Errorf("fstat: st_nlink %d, want %d", st.Nlink, wantNlink)
		}
		buf := make([]byte, 100)
		n, err := unix.Pread(fd, buf, 0)
		if err != nil || string(buf[:n]) != wantContent {
			t.Errorf("pread after unlink: %q, %v; want %q", buf[:n], err, wantContent)
		}
	}
	open := func(t *testing.T, rel string, flags int) int {
		t.Helper()
		fd, err := unix.Open(p(rel), flags|unix.O_CLOEXEC, 0o644)
		if err != nil {
			t.Fatalf("open %s: %v", rel, err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}

	t.Run("lower file open read-only, unlinked", func(t *testing.T) {
		fd := open(t, "lower", unix.O_RDONLY)
		if err := unix.Unlink(p("lower")); err != nil {
			t.Fatal(err)
		}
		check(t, fd, 0, "lower content")
	})
	t.Run("lower file open read-only, renamed over", func(t *testing.T) {
		fd := open(t, "lower2", unix.O_RDONLY)
		wpWriteFile(t, p("replacement"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, "replacement")
		if err := unix.Rename(p("replacement"), p("lower2")); err != nil {
			t.Fatal(err)
		}
		check(t, fd, 0, "lower two")
	})
	// A directory has no FUSE file handle in GETATTR, so the server must
	// answer for a node that has no name any more: ext4 reports the
	// directory with st_nlink 0.
	checkDir := func(t *testing.T, fd int) {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Errorf("fstat of the open, removed directory: %v; ext4 reports it with st_nlink 0", err)
		} else if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Nlink != 0 {
			t.Errorf("fstat of the open, removed directory: mode %o nlink %d, want a directory with st_nlink 0", st.Mode, st.Nlink)
		}
	}
	t.Run("lower dir open, removed", func(t *testing.T) {
		fd := open(t, "lowerdir", unix.O_RDONLY|unix.O_DIRECTORY)
		if err := unix.Rmdir(p("lowerdir")); err != nil {
			t.Fatal(err)
		}
		checkDir(t, fd)
	})
	t.Run("upper dir open, renamed over", func(t *testing.T) {
		for _, d := range []string{"updir", "updir2"} {
			if err := unix.Mkdir(p(d), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		fd := open(t, "updir", unix.O_RDONLY|unix.O_DIRECTORY)
		if err := unix.Rename(p("updir2"), p("updir")); err != nil {
			t.Fatal(err)
		}
		checkDir(t, fd)
	})
	t.Run("upper file", func(t *testing.T) {
		wpWriteFile(t, p("up"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, "upper content")
		if err := unix.Link(p("up"), p("up2")); err != nil {
			t.Fatal(err)
		}
		fd := open(t, "up", unix.O_RDWR)
		if err := unix.Unlink(p("up")); err != nil {
			t.Fatal(err)
		}
		check(t, fd, 1, "upper content")
		if err := unix.Unlink(p("up2")); err != nil {
			t.Fatal(err)
		}
		check(t, fd, 0, "upper content")
		// Still writable, as on ext4.
		if _, err := unix.Pwrite(fd, []byte("UPPER"), 0); err != nil {
			t.Errorf("pwrite to the unlinked file: %v", err)
		}
		check(t, fd, 0, "UPPER content")
	})
}

// wpPattern is n bytes of a repeating pattern that starts with tag, so
// that pieces of different patterns are told apart at any offset.
func wpPattern(tag byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		if i%512 == 0 {
			b[i] = tag
		} else {
			b[i] = tag + byte(i%7)
		}
	}
	return b
}

// wpDescribeMix says which pattern each 4 KiB block of got matches.
func wpDescribeMix(got, a, b []byte) string {
	var runs []string
	last, count := "", 0
	for off := 0; off < len(got); off += 4096 {
		end := min(off+4096, len(got))
		kind := "other"
		switch {
		case end <= len(a) && bytes.Equal(got[off:end], a[off:end]):
			kind = "old"
		case end <= len(b) && bytes.Equal(got[off:end], b[off:end]):
			kind = "new"
		}
		if kind != last && count > 0 {
			runs = append(runs, fmt.Sprintf("%d blocks %s", count, last))
			count = 0
		}
		last = kind
		count++
	}
	runs = append(runs, fmt.Sprintf("%d blocks %s", count, last))
	return strings.Join(runs, ", ")
}

func TestWritePathCopyUpWhileOpen(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	oldData, newData := wpPattern('a', size), wpPattern('N', size)
	for _, tc := range []struct {
		name    string
		preread int // bytes the reader reads before the copy-up
	}{
		{"no read before", 0},
		{"first 64KiB read before", 64 << 10},
		{"whole file read before", size},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lower := wpLower(t, tree{"f": file(string(oldData))})
			mnt := mountUnion(t, "-l", lower, "-u", t.TempDir())
			f := filepath.Join(mnt, "f")
			src := filepath.Join(t.TempDir(), "new")
			if err := os.WriteFile(src, newData, 0o644); err != nil {
				t.Fatal(err)
			}

			reader, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			defer reader.Close()
			if tc.preread > 0 {
				buf := make([]byte, tc.preread)
				if _, err := io.ReadFull(reader, buf); err != nil {
					t.Fatal(err)
				}
			}

			// Another process copies the file up and overwrites it in place.
			res, err := runCommand(commandTimeout, "dd", "if="+src, "of="+f, "bs=64k", "conv=notrunc,fsync", "status=none")
			if err != nil || res.exit != 0 {
				t.Fatalf("dd into %s: %v, exit %d: %s", f, err, res.exit, res.stderr)
			}

			got := make([]byte, size)
			n, err := reader.ReadAt(got, 0)
			if err != nil && err != io.EOF {
				t.Fatalf("read after the copy-up: %v", err)
			}
			got = got[:n]
			if !bytes.Equal(got, oldData) && !bytes.Equal(got, newData) {
				t.Errorf("the descriptor opened before the copy-up reads a mix of old and new data: %s", wpDescribeMix(got, oldData, newData))
			}
			if fresh := wpReadFile(t, f); fresh != string(newData) {
				t.Errorf("a fresh open reads %s, want all new", wpDescribeMix([]byte(fresh), oldData, newData))
			}
		})
	}
}

func TestWritePathCopyUpOnceUnderParallelWriters(t *testing.T) {
	t.Parallel()
	const (
		writers = 8
		chunk   = 64 << 10
		rounds  = 5
	)
	lowerData := bytes.Repeat([]byte{'L'}, (writers+1)*chunk)
	tr := tree{}
	for r := range rounds {
		tr[fmt.Sprintf("dir%d/f", r)] = file(string(lowerData))
	}
	lower := wpLower(t, tr)
	upper, work := t.TempDir(), t.TempDir()
	mnt := mountUnion(t, "-l", lower, "-u", upper, "-w", work)

	for r := range rounds {
		rel := fmt.Sprintf("dir%d/f", r)
		f := filepath.Join(mnt, rel)
		inoBefore := wpLstat(t, f).Ino
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, writers)
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = owWriteAt(f, int64(i*chunk), string(bytes.Repeat([]byte{byte('0' + i)}, chunk)))
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("%s: writer %d: %v", rel, i, err)
			}
		}
		got := []byte(wpReadFile(t, f))
		want := slices.Clone(lowerData)
		for i := range writers {
			copy(want[i*chunk:], bytes.Repeat([]byte{byte('0' + i)}, chunk))
		}
		if !bytes.Equal(got, want) {
			var lost []string
			for i := range writers {
				if !bytes.Equal(got[i*chunk:min((i+1)*chunk, len(got))], want[i*chunk:(i+1)*chunk]) {
					lost = append(lost, strconv.Itoa(i))
				}
			}
			t.Errorf("%s: size %d, want %d; regions of writers %s are not theirs: a copy-up ran more than once and replaced earlier writes",
				rel, len(got), len(want), strings.Join(lost, ","))
		}
		if ino := wpLstat(t, f).Ino; ino != inoBefore {
			t.Errorf("%s: st_ino %d after the copy-up, %d before", rel, ino, inoBefore)
		}
	}
	umountUnion(t, mnt)
	files := wpUpperRegularFiles(t, upper)
	var want []string
	for r := range rounds {
		want = append(want, fmt.Sprintf("dir%d/f", r))
	}
	if !slices.Equal(files, want) {
		t.Errorf("regular files in the upper: %q, want exactly %q", files, want)
	}
	if left := wpDirEntries(t, work); len(left) > 0 && !slices.Equal(left, []string{"unionfs-work"}) {
		t.Errorf("work dir %s holds leftovers after the copy-ups: %q", work, left)
	}
}

// ---------------------------------------------------------------------------
// Limits

// wpCompareWithPlain runs ops on a plain directory of the upper's
// filesystem and on the mount, and reports every operation whose outcome
// differs: the union must behave as the filesystem it stores files on.
func wpCompareWithPlain(t *testing.T, plain, mnt string, ops func(t *testing.T, root string, rec *opRecorder)) {
	t.Helper()
	run := func(root string) []string {
		rec := newOpRecorder(t, root)
		ops(t, root, rec)
		return rec.records()
	}
	want, got := run(plain), run(mnt)
	var diffs []string
	for i := range max(len(want), len(got)) {
		w, g := "(none)", "(none)"
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w != g {
			diffs = append(diffs, fmt.Sprintf("op #%d: plain dir %q, union %q", i, w, g))
		}
	}
	if len(diffs) > 0 {
		t.Errorf("the union differs from a plain directory (%d differences):\n%s", len(diffs), formatDiffs(diffs))
	}
}

func TestWritePathNameMax(t *testing.T) {
	t.Parallel()
	l255 := strings.Repeat("l", 255)
	lowerTree := tree{
		l255:                file("lower, long name"),
		"r255":              file("renamed to 255 bytes"),
		"r256":              file("renamed to 256 bytes"),
		"d/x":               file("linked"),
		"d/" + l255 + "/":   dir(0o755),
		"d/" + l255 + "/in": file("in"),
	}
	plain := t.TempDir()
	writeTree(t, plain, lowerTree)
	mnt := mountUnion(t, "-l", wpLower(t, lowerTree), "-u", t.TempDir())

	wpCompareWithPlain(t, plain, mnt, func(t *testing.T, root string, rec *opRecorder) {
		p := func(rel string) string { return filepath.Join(root, rel) }
		var st unix.Stat_t
		rec.observe("statfs namelen", func() (string, error) {
			var sfs unix.Statfs_t
			err := unix.Statfs(root, &sfs)
			return strconv.FormatInt(sfs.Namelen, 10), err
		})
		rec.observe("read lower l255", func() (string, error) { return readString(p(l255)) })
		rec.observe("readdir lower d/l255", func() (string, error) { return listDir(p("d/" + l255)) })
		for _, k := range []int{255, 256} {
			name := func(c byte) string { return strings.Repeat(string(c), k) }
			ks := strconv.Itoa(k)
			rec.do("create "+ks, func() error { return owWriteFile(p(name('a')), os.O_WRONLY|os.O_CREATE|os.O_EXCL, ks) })
			rec.do("lstat "+ks, func() error { return unix.Lstat(p(name('a')), &st) })
			rec.observe("read "+ks, func() (string, error) { return readString(p(name('a'))) })
			rec.do("setxattr "+ks, func() error { return unix.Setxattr(p(name('a')), "user.k", []byte("v"), 0) })
			rec.do("mkdir "+ks, func() error { return unix.Mkdir(p("d/"+name('b')), 0o755) })
			rec.do("symlink named "+ks, func() error { return unix.Symlink("target", p(name('c'))) })
			rec.do("symlink to "+ks, func() error { return unix.Symlink(name('a'), p("s"+ks)) })
			rec.observe("read through symlink to "+ks, func() (string, error) { return readString(p("s" + ks)) })
			rec.do("rename lower file to "+ks, func() error { return unix.Rename(p("r"+ks), p(name('d'))) })
			rec.do("link lower file to "+ks, func() error { return unix.Link(p("d/x"), p("d/"+name('e'))) })
			rec.do("mkfifo "+ks, func() error { return unix.Mkfifo(p(name('f')), 0o644) })
		}
		rec.observe("readdir", func() (string, error) { return listDir(root) })
		rec.observe("readdir d", func() (string, error) { return listDir(p("d")) })
		rec.do("rename 255 over lower l255", func() error { return unix.Rename(p(strings.Repeat("a", 255)), p(l255)) })
		rec.observe("read l255", func() (string, error) { return readString(p(l255)) })
		rec.do("unlink l255", func() error { return unix.Unlink(p(l255)) })
		rec.do("lstat l255", func() error { return unix.Lstat(p(l255), &st) })
		rec.do("rm -r lower d/l255", func() error { return os.RemoveAll(p("d/" + l255)) })
		rec.do("lstat lower d/l255", func() error { return unix.Lstat(p("d/"+l255), &st) })
		rec.do("mkdir d/l255 again", func() error { return unix.Mkdir(p("d/"+l255), 0o755) })
		rec.observe("readdir d/l255", func() (string, error) { return listDir(p("d/" + l255)) })
		rec.observe("readdir d", func() (string, error) { return listDir(p("d")) })
	})
}

// wpChain returns directory names of up to 250 bytes ("aaa…", "bbb…", …)
// whose slash-joined length is about total bytes.
func wpChain(total int) []string {
	var names []string
	used := 0
	for {
		sep := min(len(names), 1)
		left := total - used - sep
		if left <= 0 {
			return names
		}
		n := min(250, left)
		names = append(names, strings.Repeat(string(rune('a'+len(names)%26)), n))
		used += sep + n
	}
}

func TestWritePathPathMax(t *testing.T) {
	t.Parallel()
	// The full path of the deepest dir, mountpoint included, is about
	// 3950 bytes: close to PATH_MAX (4096 with the NUL), and short enough
	// that one more name of at most 255 bytes reaches PATH_MAX.
	const deepLen = 3950

	t.Run("created through the mount", func(t *testing.T) {
		t.Parallel()
		plain := t.TempDir()
		mnt := mountUnion(t, "-l", wpLower(t, tree{"x": file("x")}), "-u", t.TempDir())
		chain := wpChain(deepLen - max(len(plain), len(mnt)) - 1)
		wpCompareWithPlain(t, plain, mnt, func(t *testing.T, root string, rec *opRecorder) {
			cur := root
			for i, name := range chain {
				cur = filepath.Join(cur, name)
				rec.do(fmt.Sprintf("mkdir level %d", i), func() error { return unix.Mkdir(cur, 0o755) })
			}
			wpPathMaxOps(t, cur, rec)
		})
	})
	t.Run("copied up from the lower", func(t *testing.T) {
		t.Parallel()
		plain, lower, upper := t.TempDir(), t.TempDir(), t.TempDir()
		mnt := filepath.Join(t.TempDir(), "mnt")
		if err := os.Mkdir(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		chain := wpChain(deepLen - max(len(plain), len(mnt), len(lower)) - 1)
		deep := filepath.Join(chain...)
		tr := tree{deep + "/f": file("lower"), deep + "/keep": file("keep")}
		writeTree(t, plain, tr)
		writeTree(t, lower, tr)
		lowerSums := checksumTree(t, lower)
		t.Cleanup(func() { assertUnchanged(t, lowerSums, lower) })
		mountUnionAt(t, mnt, "-l", lower, "-u", upper)
		wpCompareWithPlain(t, plain, mnt, func(t *testing.T, root string, rec *opRecorder) {
			cur := filepath.Join(root, deep)
			rec.do("append f", func() error { return appendFile(filepath.Join(cur, "f"), "+") })
			rec.do("chmod keep", func() error { return unix.Chmod(filepath.Join(cur, "keep"), 0o600) })
			wpPathMaxOps(t, cur, rec)
			rec.do("rmdir the deepest lower dir", func() error {
				for _, n := range []string{"f", "keep"} {
					if err := unix.Unlink(filepath.Join(cur, n)); err != nil {
						return err
					}
				}
				return unix.Rmdir(cur)
			})
			rec.do("mkdir it again", func() error { return unix.Mkdir(cur, 0o755) })
			rec.observe("readdir it", func() (string, error) { return listDir(cur) })
		})
	})
	t.Run("deeper than PATH_MAX through dirfds", func(t *testing.T) {
		t.Parallel()
		plain := t.TempDir()
		mnt := mountUnion(t, "-l", wpLower(t, tree{"x": file("x")}), "-u", t.TempDir())
		chain := wpChain(6000) // only reachable relative to a dirfd
		wpCompareWithPlain(t, plain, mnt, func(t *testing.T, root string, rec *opRecorder) {
			dfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			for i, name := range chain {
				rec.do(fmt.Sprintf("mkdirat level %d", i), func() error { return unix.Mkdirat(dfd, name, 0o755) })
				next, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				unix.Close(dfd)
				if err != nil {
					rec.do(fmt.Sprintf("open level %d", i), func() error { return err })
					return
				}
				dfd = next
			}
			defer unix.Close(dfd)
			rec.do("openat create f", func() error {
				fd, err := unix.Openat(dfd, "f", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
				if err != nil {
					return err
				}
				defer unix.Close(fd)
				_, err = unix.Write(fd, []byte("deep"))
				return err
			})
			rec.observe("read f", func() (string, error) {
				fd, err := unix.Openat(dfd, "f", unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					return "", err
				}
				defer unix.Close(fd)
				b := make([]byte, 16)
				n, err := unix.Read(fd, b)
				return string(b[:max(n, 0)]), err
			})
			rec.do("fchmodat f", func() error { return unix.Fchmodat(dfd, "f", 0o600, 0) })
			rec.do("fchownat f", func() error { return unix.Fchownat(dfd, "f", 1, 2, 0) })
			rec.do("utimensat f", func() error {
				return unix.UtimesNanoAt(dfd, "f", []unix.Timespec{{Sec: 1}, {Sec: 2}}, 0)
			})
			rec.do("renameat f g", func() error { return unix.Renameat(dfd, "f", dfd, "g") })
			rec.do("linkat g h", func() error { return unix.Linkat(dfd, "g", dfd, "h", 0) })
			rec.do("symlinkat s", func() error { return unix.Symlinkat("g", dfd, "s") })
			rec.observe("fstatat g", func() (string, error) {
				var st unix.Stat_t
				err := unix.Fstatat(dfd, "g", &st, unix.AT_SYMLINK_NOFOLLOW)
				return fmt.Sprintf("%04o %d:%d nlink=%d size=%d", st.Mode&0o7777, st.Uid, st.Gid, st.Nlink, st.Size), err
			})
			for _, n := range []string{"g", "h", "s"} {
				rec.do("unlinkat "+n, func() error { return unix.Unlinkat(dfd, n, 0) })
			}
		})
	})
}

// wpPathMaxOps runs file operations in dir, whose path is close to
// PATH_MAX, ending with names that make the path exactly PATH_MAX-1 bytes
// (allowed) and PATH_MAX bytes (ENAMETOOLONG).
func wpPathMaxOps(t *testing.T, dir string, rec *opRecorder) {
	p := func(name string) string { return filepath.Join(dir, name) }
	rec.do("create n", func() error { return owWriteFile(p("n"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, "near PATH_MAX") })
	rec.observe("read n", func() (string, error) { return readString(p("n")) })
	rec.do("setxattr n", func() error { return unix.Setxattr(p("n"), "user.k", []byte("v"), 0) })
	rec.do("chmod n", func() error { return unix.Chmod(p("n"), 0o600) })
	rec.do("truncate n", func() error { return unix.Truncate(p("n"), 4) })
	rec.do("link n n2", func() error { return unix.Link(p("n"), p("n2")) })
	rec.do("rename n2 n3", func() error { return unix.Rename(p("n2"), p("n3")) })
	rec.do("symlink", func() error { return unix.Symlink("n", p("sym")) })
	rec.observe("read through symlink", func() (string, error) { return readString(p("sym")) })
	rec.do("mkdir sub", func() error { return unix.Mkdir(p("sub"), 0o755) })
	rec.observe("readdir", func() (string, error) { return listDir(dir) })
	for _, total := range []int{unix.PathMax - 1, unix.PathMax} {
		name := strings.Repeat("z", total-len(dir)-1)
		if len(name) < 1 || len(name) > 255 {
			t.Fatalf("cannot fill the path to %d bytes with one name: %d bytes left", total, len(name))
		}
		label := fmt.Sprintf("path of %d bytes", total)
		rec.do("create "+label, func() error { return owWriteFile(p(name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, "x") })
		rec.do("unlink "+label, func() error { return unix.Unlink(p(name)) })
	}
	for _, n := range []string{"n", "n3", "sym"} {
		rec.do("unlink "+n, func() error { return unix.Unlink(p(n)) })
	}
	rec.do("rmdir sub", func() error { return unix.Rmdir(p("sub")) })
}

// ---------------------------------------------------------------------------
// What copy-up keeps

// wpCapV2 is a VFS_CAP_REVISION_2 security.capability value with the
// effective flag and CAP_NET_BIND_SERVICE (bit 10) permitted, as
// `setcap cap_net_bind_service+ep` writes it.
func wpCapV2() []byte {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|0x000001) // magic_etc: revision 2, effective
	binary.LittleEndian.PutUint32(b[4:], 1<<10)               // data[0].permitted
	return b
}

func TestWritePathCopyUpPreservesMetadata(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	const capName = "security.capability"
	meta := func(content string) entry {
		e := withOwner(fileMode(content, 0o4750), 1234, 5678)
		e = withXattr(e, "user.one", "1")
		return withXattr(e, "user.two", strings.Repeat("v", 300))
	}
	lower := t.TempDir()
	writeTree(t, lower, tree{
		"d/":          withOwner(dir(0o751), 42, 43),
		"d/by-xattr":  meta("copied up by setxattr"),
		"d/by-open":   meta("copied up by open for write"),
		"d/by-chmod":  meta("copied up by chmod"),
		"d/by-utimes": meta("copied up by utimes"),
	})
	// setcap's equivalent, after writeTree's chown (which clears it).
	for _, n := range []string{"by-xattr", "by-open", "by-chmod", "by-utimes"} {
		if err := unix.Setxattr(filepath.Join(lower, "d", n), capName, wpCapV2(), 0); err != nil {
			t.Fatalf("set %s on the lower: %v", capName, err)
		}
	}
	lowerSums := checksumTree(t, lower)
	t.Cleanup(func() { assertUnchanged(t, lowerSums, lower) })

	upper := t.TempDir()
	mnt := mountUnion(t, "-l", lower, "-u", upper)
	p := func(rel string) string { return filepath.Join(mnt, rel) }

	triggers := []struct {
		name string
		fn   func() error
	}{
		{"by-xattr", func() error { return unix.Setxattr(p("d/by-xattr"), "user.trigger", []byte("t"), 0) }},
		{"by-open", func() error { return owWriteFile(p("d/by-open"), os.O_WRONLY, "") }},
		{"by-chmod", func() error { return unix.Chmod(p("d/by-chmod"), 0o4750) }}, // same mode
		{"by-utimes", func() error {
			ts := unix.NsecToTimespec(fixtureTime.UnixNano())
			return unix.UtimesNano(p("d/by-utimes"), []unix.Timespec{ts, ts}) // same times
		}},
	}
	for _, tr := range triggers {
		t.Run(tr.name, func(t *testing.T) {
			rel := "d/" + tr.name
			low := filepath.Join(lower, rel)
			if err := tr.fn(); err != nil {
				t.Fatalf("trigger the copy-up: %v", err)
			}
			up := filepath.Join(upper, rel)
			if _, err := os.Lstat(up); err != nil {
				t.Fatalf("no copy-up of %s: %v", rel, err)
			}
			want := wpLstat(t, low)
			for _, side := range []struct{ name, path string }{{"mount", p(rel)}, {"upper", up}} {
				got := wpLstat(t, side.path)
				if got.Mode != want.Mode || got.Uid != want.Uid || got.Gid != want.Gid || got.Size != want.Size {
					t.Errorf("%s: mode %o owner %d:%d size %d, want mode %o owner %d:%d size %d as the lower",
						side.name, got.Mode, got.Uid, got.Gid, got.Size, want.Mode, want.Uid, want.Gid, want.Size)
				}
				if got.Mtim != want.Mtim {
					t.Errorf("%s: mtime %v, want %v as the lower", side.name, time.Unix(got.Mtim.Unix()), time.Unix(want.Mtim.Unix()))
				}
				if data, lowData := wpReadFile(t, side.path), wpReadFile(t, low); data != lowData {
					t.Errorf("%s: data %q, want %q", side.name, data, lowData)
				}
				xs, err := readXattrs(side.path, func(n string) bool { return n != "user.trigger" })
				if err != nil {
					t.Fatal(err)
				}
				wantXs, err := readXattrs(low, func(string) bool { return true })
				if err != nil {
					t.Fatal(err)
				}
				for name, v := range wantXs {
					if xs[name] != v {
						t.Errorf("%s: xattr %s = %q, want %q", side.name, name, xs[name], v)
					}
				}
			}
			// The parent directory was copied up with its metadata.
			wantDir, gotDir := wpLstat(t, filepath.Join(lower, "d")), wpLstat(t, filepath.Join(upper, "d"))
			if gotDir.Mode != wantDir.Mode || gotDir.Uid != wantDir.Uid || gotDir.Gid != wantDir.Gid {
				t.Errorf("upper d: mode %o owner %d:%d, want %o %d:%d", gotDir.Mode, gotDir.Uid, gotDir.Gid, wantDir.Mode, wantDir.Uid, wantDir.Gid)
			}
		})
	}
}

func TestWritePathCopyUpSparse(t *testing.T) {
	t.Parallel()
	const size = 1 << 30
	regions := map[int64]string{4096: "first data region", 700 << 20: "second data region"}
	lower := wpLower(t, tree{
		"by-xattr": sparse(size, regions),
		"by-write": sparse(size, regions),
	})
	upper := t.TempDir()
	mnt := mountUnion(t, "-l", lower, "-u", upper)

	if err := unix.Setxattr(filepath.Join(mnt, "by-xattr"), "user.trigger", []byte("t"), 0); err != nil {
		t.Fatal(err)
	}
	if err := owWriteAt(filepath.Join(mnt, "by-write"), 700<<20, "SECOND"); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[int64]string{
		"by-xattr": regions,
		"by-write": {4096: "first data region", 700 << 20: "SECOND data region"},
	}
	for name, data := range want {
		t.Run(name, func(t *testing.T) {
			for _, side := range []string{filepath.Join(upper, name), filepath.Join(mnt, name)} {
				st := wpLstat(t, side)
				if st.Size != size {
					t.Errorf("%s: size %d, want %d", side, st.Size, size)
				}
				if used := st.Blocks * 512; used > 1<<20 {
					t.Errorf("%s: %d bytes allocated for %d bytes of data: the copy-up filled the holes", side, used, 2*4096)
				}
				f, err := os.Open(side)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				for off, s := range data {
					buf := make([]byte, len(s))
					if _, err := f.ReadAt(buf, off); err != nil || string(buf) != s {
						t.Errorf("%s: at %d: %q, %v; want %q", side, off, buf, err, s)
					}
				}
				for _, off := range []int64{0, 1 << 20, 500 << 20, size - 4096} {
					buf := make([]byte, 4096)
					if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
						t.Errorf("%s: read hole at %d: %v", side, off, err)
					} else if !bytes.Equal(buf, make([]byte, 4096)) {
						t.Errorf("%s: hole at %d is not zeros", side, off)
					}
				}
				if next, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA); err != nil || next != 4096 {
					t.Errorf("%s: SEEK_DATA from 0 = %d, %v; want 4096", side, next, err)
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Special files

func TestWritePathSpecialFiles(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	lower := wpLower(t, tree{"d/existing": file("e")})
	// -o dev: FUSE mounts are nodev unless asked, and device nodes are
	// what is tested here.
	mnt := mountUnion(t, "-l", lower, "-u", t.TempDir(), "-o", "dev")
	p := func(rel string) string { return filepath.Join(mnt, rel) }

	t.Run("fifo", func(t *testing.T) {
		if err := unix.Mkfifo(p("d/fifo"), 0o644); err != nil {
			t.Fatal(err)
		}
		if st := wpLstat(t, p("d/fifo")); st.Mode&unix.S_IFMT != unix.S_IFIFO {
			t.Fatalf("d/fifo has mode %o, want a fifo", st.Mode)
		}
		got := make(chan string, 1)
		go func() {
			b, err := os.ReadFile(p("d/fifo")) // blocks until the writer opens
			if err != nil {
				got <- "error: " + err.Error()
				return
			}
			got <- string(b)
		}()
		if err := owWriteFile(p("d/fifo"), os.O_WRONLY, "through the pipe"); err != nil {
			t.Fatal(err)
		}
		select {
		case s := <-got:
			if s != "through the pipe" {
				t.Errorf("read from the fifo: %q", s)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("reader of the fifo is stuck")
		}
	})
	t.Run("char device", func(t *testing.T) {
		if err := unix.Mknod(p("d/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatal(err)
		}
		st := wpLstat(t, p("d/null"))
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
			t.Fatalf("d/null: mode %o rdev %d:%d, want a char device 1:3", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		if err := owWriteFile(p("d/null"), os.O_WRONLY, "discarded"); err != nil {
			t.Errorf("write to the device node (mounted -o dev): %v", err)
		}
		if got, err := readString(p("d/null")); err != nil || got != "" {
			t.Errorf("read from the null device: %q, %v", got, err)
		}
	})
	t.Run("unix socket", func(t *testing.T) {
		dfd, err := unix.Open(p("d"), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(dfd)
		// A short path for sun_path (108 bytes) through the dirfd.
		addr := &unix.SockaddrUnix{Name: "/proc/self/fd/" + strconv.Itoa(dfd) + "/sock"}
		srv, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(srv)
		if err := unix.Bind(srv, addr); err != nil {
			t.Fatalf("bind in the mount: %v", err)
		}
		if err := unix.Listen(srv, 1); err != nil {
			t.Fatal(err)
		}
		if st := wpLstat(t, p("d/sock")); st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			t.Errorf("d/sock has mode %o, want a socket", st.Mode)
		}
		cli, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(cli)
		if err := unix.Connect(cli, addr); err != nil {
			t.Fatalf("connect through the mount: %v", err)
		}
		conn, _, err := unix.Accept(srv)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(conn)
		if _, err := unix.Write(cli, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 8)
		if n, err := unix.Read(conn, buf); err != nil || string(buf[:n]) != "ping" {
			t.Errorf("read from the socket: %q, %v", buf[:n], err)
		}
	})
}

// ---------------------------------------------------------------------------
// Locks between processes

// wpLockHelperEnv carries "PATH|OPENMODE|OP:START:LEN,..." to
// TestWritePathLockHelper. OPENMODE is r or rw; OP is getlk, wrlck or
// rdlck (F_SETLK).
const wpLockHelperEnv = "UNIONFS_TEST_LOCK_HELPER"

// TestWritePathLockHelper is the other process of the fcntl lock tests; it
// does nothing unless wpRunLockHelper started it. It prints one
// "LOCK op result" line per operation.
func TestWritePathLockHelper(t *testing.T) {
	spec, ok := os.LookupEnv(wpLockHelperEnv)
	if !ok {
		return
	}
	parts := strings.Split(spec, "|")
	if len(parts) != 3 {
		t.Fatalf("%s=%q", wpLockHelperEnv, spec)
	}
	flags := unix.O_RDONLY
	if parts[1] == "rw" {
		flags = unix.O_RDWR
	}
	fd, err := unix.Open(parts[0], flags|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Printf("LOCK open %v\n", err)
		return
	}
	defer unix.Close(fd)
	for op := range strings.SplitSeq(parts[2], ",") {
		f := strings.Split(op, ":")
		start, _ := strconv.ParseInt(f[1], 10, 64)
		length, _ := strconv.ParseInt(f[2], 10, 64)
		lk := unix.Flock_t{Whence: io.SeekStart, Start: start, Len: length}
		switch f[0] {
		case "getlk":
			lk.Type = unix.F_WRLCK
			err := unix.FcntlFlock(uintptr(fd), unix.F_GETLK, &lk)
			fmt.Printf("LOCK %s %s type=%d pid=%d start=%d len=%d\n", op, wpErrResult(err), lk.Type, lk.Pid, lk.Start, lk.Len)
		case "wrlck", "rdlck":
			lk.Type = unix.F_WRLCK
			if f[0] == "rdlck" {
				lk.Type = unix.F_RDLCK
			}
			fmt.Printf("LOCK %s %s\n", op, wpErrResult(unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &lk)))
		}
	}
}

func wpErrResult(err error) string {
	if err == nil {
		return "ok"
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

// wpRunLockHelper runs TestWritePathLockHelper in a child process and returns
// its LOCK lines.
func wpRunLockHelper(t *testing.T, path, openMode string, ops ...string) []string {
	t.Helper()
	res, err := runCommand(2*time.Minute, "env", wpLockHelperEnv+"="+path+"|"+openMode+"|"+strings.Join(ops, ","),
		os.Args[0], "-test.run=^TestWritePathLockHelper$", "-test.count=1")
	if err != nil || res.exit != 0 {
		t.Fatalf("lock helper: %v, exit %d\n%s%s", err, res.exit, res.stdout, res.stderr)
	}
	var lines []string
	for line := range strings.Lines(res.stdout) {
		if rest, ok := strings.CutPrefix(line, "LOCK "); ok {
			lines = append(lines, strings.TrimSpace(rest))
		}
	}
	return lines
}

// wpRunFlock runs flock(1) -n on path in a child process and reports whether
// it got the lock.
func wpRunFlock(t *testing.T, path string, exclusive bool) bool {
	t.Helper()
	mode := "--shared"
	if exclusive {
		mode = "--exclusive"
	}
	res, err := runCommand(commandTimeout, "flock", "--nonblock", "--conflict-exit-code", "99", mode, path, "true")
	if err != nil {
		t.Fatalf("flock: %v", err)
	}
	switch res.exit {
	case 0:
		return true
	case 99:
		return false
	}
	t.Fatalf("flock %s: exit %d: %s", path, res.exit, res.stderr)
	return false
}

func TestWritePathLocksAcrossProcesses(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("flock"); err != nil {
		skipOrFail(t, "flock(1) not found: %v", err)
	}
	lower := wpLower(t, tree{"lowerfile": file(strings.Repeat("l", 1000)), "lowerfile2": file("l2")})
	mnt := mountUnion(t, "-l", lower, "-u", t.TempDir())
	p := func(rel string) string { return filepath.Join(mnt, rel) }
	wpWriteFile(t, p("upperfile"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, strings.Repeat("u", 1000))
	pid := os.Getpid()

	t.Run("flock", func(t *testing.T) {
		for _, rel := range []string{"upperfile", "lowerfile"} {
			f, err := os.Open(p(rel)) // read-only: a lower file stays in the lower
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
				t.Fatalf("flock %s: %v", rel, err)
			}
			if wpRunFlock(t, p(rel), false) {
				t.Errorf("%s: another process got a shared flock while we hold an exclusive one", rel)
			}
			if rel == "lowerfile" {
				// A copy-up while the lock is held must not lose it.
				if err := appendFile(p(rel), "copied up"); err != nil {
					t.Fatal(err)
				}
				if wpRunFlock(t, p(rel), true) {
					t.Errorf("%s: the lock was lost by the copy-up", rel)
				}
			}
			if err := unix.Flock(int(f.Fd()), unix.LOCK_UN); err != nil {
				t.Fatal(err)
			}
			if !wpRunFlock(t, p(rel), true) {
				t.Errorf("%s: another process cannot flock after we unlocked", rel)
			}
			f.Close()
		}
	})
	t.Run("fcntl", func(t *testing.T) {
		for _, tc := range []struct{ rel, openMode string }{{"upperfile", "rw"}, {"lowerfile2", "r"}} {
			flags := os.O_RDWR
			lockType := int16(unix.F_WRLCK)
			if tc.openMode == "r" {
				flags, lockType = os.O_RDONLY, unix.F_RDLCK
			}
			f, err := os.OpenFile(p(tc.rel), flags, 0)
			if err != nil {
				t.Fatal(err)
			}
			lk := unix.Flock_t{Type: lockType, Whence: io.SeekStart, Start: 0, Len: 100}
			if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
				t.Fatalf("F_SETLK on %s: %v", tc.rel, err)
			}
			got := wpRunLockHelper(t, p(tc.rel), "rw", "getlk:0:100", "wrlck:50:10", "wrlck:100:100", "rdlck:0:10")
			wantRd := "EAGAIN"
			if lockType == unix.F_RDLCK {
				wantRd = "ok"
			}
			want := []string{
				fmt.Sprintf("getlk:0:100 ok type=%d pid=%d start=0 len=100", lockType, pid),
				"wrlck:50:10 EAGAIN",
				"wrlck:100:100 ok",
				"rdlck:0:10 " + wantRd,
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s: the other process saw\n\t%s\nwant\n\t%s", tc.rel, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
			}
			f.Close() // drops this process's POSIX locks on the file
			got = wpRunLockHelper(t, p(tc.rel), "rw", "wrlck:0:100")
			if !slices.Equal(got, []string{"wrlck:0:100 ok"}) {
				t.Errorf("%s: after we closed, the other process saw %q", tc.rel, got)
			}
		}
	})
}

// ---------------------------------------------------------------------------
// fallocate, fsync, copy_file_range

func TestWritePathFallocateSyncCopyRange(t *testing.T) {
	t.Parallel()
	lowerTree := tree{
		"lf":  file(strings.Repeat("L", 10000)),
		"lf2": file(strings.Repeat("M", 5000)),
	}
	plain := t.TempDir()
	writeTree(t, plain, lowerTree)
	mnt := mountUnion(t, "-l", wpLower(t, lowerTree), "-u", t.TempDir())

	wpCompareWithPlain(t, plain, mnt, func(t *testing.T, root string, rec *opRecorder) {
		p := func(rel string) string { return filepath.Join(root, rel) }
		open := func(rel string, flags int) int {
			fd, err := unix.Open(p(rel), flags|unix.O_CLOEXEC, 0o644)
			if err != nil {
				t.Fatalf("open %s: %v", rel, err)
			}
			t.Cleanup(func() { unix.Close(fd) })
			return fd
		}
		size := func(label string, fd int) {
			rec.observe("fstat size "+label, func() (string, error) {
				var st unix.Stat_t
				err := unix.Fstat(fd, &st)
				return strconv.FormatInt(st.Size, 10), err
			})
		}
		content := func(rel string) {
			rec.observe("sha256 "+rel, func() (string, error) { return fileSHA256(p(rel)) })
		}

		lf := open("lf", unix.O_RDWR) // copy-up
		rec.do("fallocate lf extend", func() error { return unix.Fallocate(lf, 0, 20000, 5000) })
		size("lf", lf)
		rec.do("fallocate lf KEEP_SIZE", func() error { return unix.Fallocate(lf, unix.FALLOC_FL_KEEP_SIZE, 25000, 10000) })
		size("lf", lf)
		rec.do("fallocate lf PUNCH_HOLE", func() error {
			return unix.Fallocate(lf, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 4096, 4096)
		})
		rec.do("fallocate lf ZERO_RANGE", func() error { return unix.Fallocate(lf, unix.FALLOC_FL_ZERO_RANGE, 100, 50) })
		// COLLAPSE_RANGE and INSERT_RANGE are not tested: the kernel's FUSE
		// client refuses every mode but KEEP_SIZE, PUNCH_HOLE and
		// ZERO_RANGE with EOPNOTSUPP before the server sees the request,
		// so no FUSE filesystem can offer them.
		rec.do("fsync lf", func() error { return unix.Fsync(lf) })
		rec.do("fdatasync lf", func() error { return unix.Fdatasync(lf) })
		content("lf")

		ro := open("lf2", unix.O_RDONLY) // stays in the lower
		rec.do("fsync read-only lower lf2", func() error { return unix.Fsync(ro) })
		rec.do("fdatasync read-only lower lf2", func() error { return unix.Fdatasync(ro) })
		rec.do("fallocate read-only lf2", func() error { return unix.Fallocate(ro, 0, 0, 100) })

		nf := open("nf", unix.O_RDWR|unix.O_CREAT|unix.O_EXCL)
		rec.do("write nf", func() error {
			_, err := unix.Pwrite(nf, bytes.Repeat([]byte("0123456789"), 100), 0)
			return err
		})
		cfr := func(label string, in int, inOff int64, out int, outOff int64, n int) {
			rec.observe("copy_file_range "+label, func() (string, error) {
				k, err := unix.CopyFileRange(in, &inOff, out, &outOff, n, 0)
				return strconv.Itoa(k), err
			})
		}
		cfr("lf -> nf", lf, 0, nf, 500, 300)
		cfr("read-only lower lf2 -> nf", ro, 10, nf, 900, 200)
		cfr("nf -> nf, disjoint", nf, 0, nf, 2000, 100)
		cfr("nf -> nf, overlapping", nf, 0, nf, 50, 100)
		cfr("nf -> read-only lf2", nf, 0, ro, 0, 10)
		cfr("past the end of lf2", ro, 6000, nf, 0, 10)
		rec.do("fsync nf", func() error { return unix.Fsync(nf) })
		size("nf", nf)
		content("nf")
		content("lf2")
	})
}

// ---------------------------------------------------------------------------
// The lowers through a write-heavy session

func TestWritePathLowersUnchanged(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	top := tree{
		"etc/passwd":        fileMode("root:x:0:0::/root:/bin/sh\n", 0o644),
		"etc/shadow":        withOwner(fileMode("root:*:1::::::\n", 0o640), 0, 42),
		"bin/tool":          withXattr(fileMode("#!/bin/sh\n", 0o4755), "user.mark", "x"),
		"bin/link":          symlink("tool"),
		"lib/a.so":          file("a"),
		"lib/b.so":          hardlink("lib/a.so"),
		"var/log/":          withOwner(dir(0o1777), 5, 6),
		"var/log/old.log":   sparse(1<<24, map[int64]string{0: "start", 1<<24 - 3: "end"}),
		"var/run/fifo":      fifo(),
		"dev/null":          chardev(1, 3),
		"home/u/.profile":   withOwner(file("export A=1\n"), 1000, 1000),
		"home/u/deep/a/b/c": file("deep"),
	}
	bottom := tree{
		"etc/passwd":  file("shadowed\n"),
		"etc/hosts":   file("127.0.0.1 localhost\n"),
		"usr/share/x": file("x"),
		"home/u/old":  file("old"),
		"lib/c.so":    file("c"),
	}
	lowers := []string{wpLower(t, top), wpLower(t, bottom)}
	upper := t.TempDir()
	args := []string{"-l", strings.Join(lowers, ":"), "-u", upper}
	mnt := mountUnion(t, args...)

	touchAll := func(t *testing.T) {
		t.Helper()
		err := walk(mnt, walkConfig{}, func(rel, full string, st *unix.Stat_t) error {
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFREG:
				if err := appendFile(full, "+"); err != nil {
					return fmt.Errorf("append %s: %w", rel, err)
				}
				if err := unix.Truncate(full, st.Size/2); err != nil {
					return fmt.Errorf("truncate %s: %w", rel, err)
				}
				if err := unix.Setxattr(full, "user.touched", []byte("1"), 0); err != nil {
					return fmt.Errorf("setxattr %s: %w", rel, err)
				}
				fallthrough
			case unix.S_IFDIR, unix.S_IFIFO, unix.S_IFCHR:
				if err := unix.Chmod(full, 0o700|st.Mode&0o7000); err != nil {
					return fmt.Errorf("chmod %s: %w", rel, err)
				}
				if err := unix.Lchown(full, 7, 7); err != nil {
					return fmt.Errorf("chown %s: %w", rel, err)
				}
			case unix.S_IFLNK:
				if err := unix.Lchown(full, 7, 7); err != nil {
					return fmt.Errorf("lchown %s: %w", rel, err)
				}
			}
			return unix.UtimesNanoAt(unix.AT_FDCWD, full, []unix.Timespec{{Sec: 5}, {Sec: 6}}, unix.AT_SYMLINK_NOFOLLOW)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	touchAll(t)
	for _, step := range []func() error{
		func() error { return unix.Rename(filepath.Join(mnt, "home"), filepath.Join(mnt, "home2")) },
		func() error { return unix.Link(filepath.Join(mnt, "lib/a.so"), filepath.Join(mnt, "lib/d.so")) },
		func() error { return os.RemoveAll(filepath.Join(mnt, "usr")) },
		func() error { return unix.Mkdir(filepath.Join(mnt, "usr"), 0o755) },
		func() error {
			return unix.Renameat2(unix.AT_FDCWD, filepath.Join(mnt, "etc"), unix.AT_FDCWD, filepath.Join(mnt, "var"), unix.RENAME_EXCHANGE)
		},
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	wpRemount(t, mnt, args...)
	touchAll(t)
	// Delete everything, then build something new in its place.
	des, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		if err := os.RemoveAll(filepath.Join(mnt, de.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := listDir(mnt); err != nil || got != "" {
		t.Errorf("after removing everything the root lists %q, %v", got, err)
	}
	writeTree(t, mnt, tree{"etc/passwd": file("new"), "bin/": dir(0o755)})
	umountUnion(t, mnt)
	// wpLower's cleanups compare every lower file with its checksum.
}

// TestWritePathHardLinkDirForgotten: a file with names in two directories
// stays reachable by path after the kernel forgets the directory of its
// first name while the file is open through the second one. The server
// keeps a forgotten directory in its tree while a child of it is still
// known, as the child's path goes through it.
func TestWritePathHardLinkDirForgotten(t *testing.T) {
	lower := wpLower(t, tree{"a/": dir(0o755), "b/": dir(0o755)})
	upper := t.TempDir()
	mnt := mountUnion(t, "-l", lower, "-u", upper)
	p := func(rel string) string { return filepath.Join(mnt, rel) }
	wpWriteFile(t, p("b/first"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, "linked")
	if err := unix.Link(p("b/first"), p("a/second")); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(p("a/second"), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	// The kernel drops b/first and b (unused), keeps a/second (open).
	rpDropCaches(t)
	for i := 0; i < 20; i++ {
		// SETXATTR carries no file handle: the server reaches the
		// file by its path.
		err = unix.Fsetxattr(fd, "user.probe", []byte(strconv.Itoa(i)), 0)
		if err != nil {
			t.Fatalf("fsetxattr on the open file after its first directory was forgotten: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // FORGETs reach the server lazily
	}
	buf := make([]byte, 16)
	n, err := unix.Lgetxattr(filepath.Join(upper, "b/first"), "user.probe", buf)
	if err != nil || string(buf[:n]) != "19" {
		t.Errorf("upper b/first: user.probe = %q, %v; want \"19\"", buf[:n], err)
	}
	if got := wpReadFile(t, p("b/first")); got != "linked" {
		t.Errorf("b/first reads %q after the forget, want \"linked\"", got)
	}
}

// TestWritePathConcurrentNamespace runs creates, hard links, renames of
// files and directories, exchanges, removals and stats from several
// goroutines at once, while the kernel is made to forget what it caches,
// and then checks that the union answers every path it lists and comes
// back the same after a remount. On the shared names, races between
// operations give ENOENT, EEXIST and the like; anything else (EIO,
// ESTALE, EBADF, EINVAL) is a server bug. Each goroutine also works on
// names of its own (privateSequence), where every step must succeed: a
// node the server lost track of, or a record out of step with the upper,
// shows there as an ENOENT.
func TestWritePathConcurrentNamespace(t *testing.T) {
	tr := tree{}
	for _, d := range []string{"a", "b", "c"} {
		tr[d+"/"] = dir(0o755)
		tr[d+"/sub/"] = dir(0o755)
		for i := range 5 {
			tr[fmt.Sprintf("%s/f%d", d, i)] = file(d + strconv.Itoa(i))
			tr[fmt.Sprintf("%s/sub/g%d", d, i)] = file("g" + strconv.Itoa(i))
		}
	}
	tr["a/hl1"] = file("linked")
	tr["b/hl2"] = hardlink("a/hl1")
	lower := wpLower(t, tr)
	args := []string{"-l", lower, "-u", t.TempDir()}
	mnt := mountUnion(t, args...)
	p := func(rel string) string { return filepath.Join(mnt, rel) }

	expected := func(err error) bool {
		switch {
		case err == nil, errors.Is(err, unix.ENOENT), errors.Is(err, unix.EEXIST),
			errors.Is(err, unix.ENOTEMPTY), errors.Is(err, unix.ENOTDIR),
			errors.Is(err, unix.EISDIR), errors.Is(err, unix.EBUSY):
			return true
		}
		return false
	}
	var mu sync.Mutex
	var bad []string
	check := func(op string, err error) {
		if !expected(err) {
			mu.Lock()
			bad = append(bad, fmt.Sprintf("%s: %v", op, err))
			mu.Unlock()
		}
	}
	dirs := []string{"a", "b", "c", "a/sub", "b/sub", "c/sub"}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			r := uint64(w*7919 + 1)
			rnd := func(n int) int { r = r*6364136223846793005 + 1442695040888963407; return int(r>>33) % n }
			name := func() string {
				return fmt.Sprintf("%s/%c%d", dirs[rnd(len(dirs))], "fgxh"[rnd(4)], rnd(6))
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if i%3 == 0 {
					// Names of this goroutine's own: every step must work.
					if err := privateSequence(p, dirs, w, i, rnd); err != nil {
						mu.Lock()
						bad = append(bad, err.Error())
						mu.Unlock()
					}
					continue
				}
				switch rnd(9) {
				case 0:
					f, err := os.OpenFile(p(name()), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
					if err == nil {
						_, err = f.WriteString(strconv.Itoa(i))
						f.Close()
					}
					check("create", err)
				case 1:
					check("link", os.Link(p(name()), p(name())))
				case 2:
					check("rename", os.Rename(p(name()), p(name())))
				case 3:
					check("exchange", unix.Renameat2(unix.AT_FDCWD, p(name()), unix.AT_FDCWD, p(name()), unix.RENAME_EXCHANGE))
				case 4:
					check("unlink", os.Remove(p(name())))
				case 5:
					d := fmt.Sprintf("%s/d%d", dirs[rnd(3)], rnd(3))
					check("mkdir", os.Mkdir(p(d), 0o755))
					check("rename dir", os.Rename(p(d), p(fmt.Sprintf("%s/d%d", dirs[rnd(3)], rnd(3)))))
				case 6:
					check("rmdir", unix.Rmdir(p(fmt.Sprintf("%s/d%d", dirs[rnd(3)], rnd(3)))))
				case 7:
					f, err := os.Open(p(name()))
					if err == nil {
						_, err = f.Stat()
						if err == nil {
							_, err = io.ReadAll(f)
						}
						f.Close()
					}
					check("open+fstat+read", err)
				default:
					var st unix.Stat_t
					check("lstat", unix.Lstat(p(name()), &st))
				}
			}
		})
	}
	if os.Geteuid() == 0 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0)
			}
		})
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d operations failed unexpectedly, e.g. %v", len(bad), bad[:min(len(bad), 5)])
	}
	// Every listed path answers, and reads back the same after a remount.
	before, beforeLinks := snapshot(t, mnt), hardlinkGroups(t, mnt)
	wpRemount(t, mnt, args...)
	assertSameTree(t, before, snapshot(t, mnt))
	if b, a := fmt.Sprint(beforeLinks), fmt.Sprint(hardlinkGroups(t, mnt)); b != a {
		t.Errorf("hard link groups before remount %s, after %s", b, a)
	}
}

// privateSequence creates, links, renames, reads and removes files and a
// directory under names only goroutine w uses, failing on any error.
func privateSequence(p func(string) string, dirs []string, w, i int, rnd func(int) int) error {
	name := func(kind string) string {
		return fmt.Sprintf("%s/%s%d_%d", dirs[rnd(len(dirs))], kind, w, i)
	}
	first, link, moved := name("p"), name("q"), name("r")
	content := strconv.Itoa(i)
	steps := []struct {
		what string
		do   func() error
	}{
		{"create " + first, func() error { return os.WriteFile(p(first), []byte(content), 0o644) }},
		{"link " + first + " " + link, func() error { return os.Link(p(first), p(link)) }},
		{"rename " + first + " " + moved, func() error { return os.Rename(p(first), p(moved)) }},
		{"read " + moved, func() error {
			b, err := os.ReadFile(p(moved))
			if err == nil && string(b) != content {
				err = fmt.Errorf("content %q, want %q", b, content)
			}
			return err
		}},
		{"lstat " + link, func() error {
			var st unix.Stat_t
			err := unix.Lstat(p(link), &st)
			if err == nil && st.Nlink != 2 {
				err = fmt.Errorf("st_nlink %d, want 2", st.Nlink)
			}
			return err
		}},
		{"unlink " + moved, func() error { return os.Remove(p(moved)) }},
		{"unlink " + link, func() error { return os.Remove(p(link)) }},
		{"gone " + link, func() error {
			if _, err := os.Lstat(p(link)); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("lstat after unlink: %v, want ENOENT", err)
			}
			return nil
		}},
	}
	d, d2 := name("D"), name("E")
	steps = append(steps, []struct {
		what string
		do   func() error
	}{
		{"mkdir " + d, func() error { return os.Mkdir(p(d), 0o755) }},
		{"create in " + d, func() error { return os.WriteFile(p(d+"/in"), []byte(content), 0o644) }},
		{"rename dir " + d + " " + d2, func() error { return os.Rename(p(d), p(d2)) }},
		{"read in " + d2, func() error {
			b, err := os.ReadFile(p(d2 + "/in"))
			if err == nil && string(b) != content {
				err = fmt.Errorf("content %q, want %q", b, content)
			}
			return err
		}},
		{"remove " + d2, func() error { return os.RemoveAll(p(d2)) }},
	}...)
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("goroutine %d: %s: %v", w, s.what, err)
		}
	}
	return nil
}
