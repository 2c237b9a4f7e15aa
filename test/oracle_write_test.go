package test

// Oracle scenarios for the writable upper: copy-up by every operation,
// whiteouts and re-creation, opaque directories, directory renames,
// renameat2 flags, hard links, deep trees and several lower layers. Each
// runs on kernel overlayfs (redirect_dir=on, index=on, xino=on) and on
// unionfs; then unionfs is unmounted and mounted again on the same layers,
// and the merged view must not have changed.

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOracleWrite(t *testing.T) {
	requireKernelOverlay(t)
	requireFUSE(t)
	ru := newRemountingUnion()
	for _, sc := range writeScenarios() {
		runOracle(t, ru.withRemount(sc), ru.mount)
	}
}

// ---------------------------------------------------------------------------
// Remounting

// remountingUnion mounts unionfs as unionfsMount does, and remembers each
// mount's arguments so that the scenario can unmount and mount the same
// layers again after its ops.
type remountingUnion struct {
	mu   sync.Mutex
	args map[string][]string // mountpoint -> unionfs mount arguments
}

func newRemountingUnion() *remountingUnion {
	return &remountingUnion{args: map[string][]string{}}
}

// mount is a mountFunc.
func (ru *remountingUnion) mount(t *testing.T, lowers []string, upper string) string {
	t.Helper()
	args := []string{"-l", strings.Join(lowers, ":"), "-u", upper, "-w", t.TempDir()}
	mnt := mountUnion(t, args...)
	ru.mu.Lock()
	ru.args[mnt] = args
	ru.mu.Unlock()
	t.Cleanup(func() {
		ru.mu.Lock()
		delete(ru.args, mnt)
		ru.mu.Unlock()
	})
	return mnt
}

func (ru *remountingUnion) lookup(mnt string) ([]string, bool) {
	ru.mu.Lock()
	defer ru.mu.Unlock()
	args, ok := ru.args[mnt]
	return args, ok
}

// withRemount returns sc with a remount appended to its ops on the unionfs
// side: the merged tree and hard links must be the same after it, and
// runOracle then compares the remounted view with the kernel's. The
// kernel side is not remounted: it is the reference.
func (ru *remountingUnion) withRemount(sc scenario) scenario {
	ops := sc.ops
	sc.ops = func(t *testing.T, mnt string, rec *opRecorder) {
		if ops != nil {
			ops(t, mnt, rec)
		}
		args, ok := ru.lookup(mnt)
		if !ok {
			return // the kernel side
		}
		before, beforeLinks := snapshot(t, mnt), hardlinkGroups(t, mnt)
		umountUnion(t, mnt)
		mountUnionAt(t, mnt, args...)
		after, afterLinks := snapshot(t, mnt), hardlinkGroups(t, mnt)
		diffs := diffSnapshots(before, after)
		if b, a := fmt.Sprint(beforeLinks), fmt.Sprint(afterLinks); b != a {
			diffs = append(diffs, fmt.Sprintf("hard link groups: before %s, after %s", b, a))
		}
		if len(diffs) > 0 {
			t.Errorf("the merged view changed across unmount and remount (want = before, got = after):\n%s", formatDiffs(diffs))
		}
	}
	return sc
}

// ---------------------------------------------------------------------------
// Scenario ops

// wops wraps a scenario's recorder with the operations the write scenarios
// use. Paths are relative to the mountpoint and appear as such in the
// records, so both sides' records compare.
type wops struct {
	t   *testing.T
	mnt string
	rec *opRecorder
}

func newWops(t *testing.T, mnt string, rec *opRecorder) wops { return wops{t, mnt, rec} }

func (w wops) p(rel string) string { return filepath.Join(w.mnt, rel) }

func (w wops) do(op string, fn func() error) error { w.t.Helper(); return w.rec.do(op, fn) }

// stat records type, mode, owner, size (files and symlinks) and link count
// (non-directories) of rel, without following a symlink.
func (w wops) stat(rel string) {
	w.t.Helper()
	w.rec.observe("lstat "+rel, func() (string, error) { return owStatSummary(w.p(rel)) })
}

// mtime records rel's mtime in nanoseconds.
func (w wops) mtime(rel string) {
	w.t.Helper()
	w.rec.observe("mtime "+rel, func() (string, error) {
		var st unix.Stat_t
		if err := unix.Lstat(w.p(rel), &st); err != nil {
			return "", err
		}
		return strconv.FormatInt(st.Mtim.Nano(), 10), nil
	})
}

func (w wops) read(rel string) {
	w.t.Helper()
	w.rec.observe("read "+rel, func() (string, error) { return readString(w.p(rel)) })
}

func (w wops) ls(rel string) {
	w.t.Helper()
	w.rec.observe("readdir "+rel, func() (string, error) { return listDir(w.p(rel)) })
}

func (w wops) readlink(rel string) {
	w.t.Helper()
	w.rec.observe("readlink "+rel, func() (string, error) { return os.Readlink(w.p(rel)) })
}

func (w wops) xattrs(rel string) {
	w.t.Helper()
	w.rec.observe("user xattrs "+rel, func() (string, error) {
		x, err := readXattrs(w.p(rel), func(n string) bool { return strings.HasPrefix(n, "user.") })
		return fmt.Sprint(x), err
	})
}

// create makes a new file with O_CREAT|O_EXCL.
func (w wops) create(rel, content string) {
	w.t.Helper()
	w.do("create "+rel, func() error { return owWriteFile(w.p(rel), os.O_WRONLY|os.O_CREATE|os.O_EXCL, content) })
}

// overwrite opens an existing file with O_WRONLY|O_TRUNC and writes.
func (w wops) overwrite(rel, content string) {
	w.t.Helper()
	w.do("overwrite "+rel, func() error { return owWriteFile(w.p(rel), os.O_WRONLY|os.O_TRUNC, content) })
}

func (w wops) appendTo(rel, content string) {
	w.t.Helper()
	w.do("append "+rel, func() error { return appendFile(w.p(rel), content) })
}

func (w wops) unlink(rel string) {
	w.t.Helper()
	w.do("unlink "+rel, func() error { return unix.Unlink(w.p(rel)) })
}

func (w wops) rmdir(rel string) {
	w.t.Helper()
	w.do("rmdir "+rel, func() error { return unix.Rmdir(w.p(rel)) })
}

func (w wops) rmAll(rel string) {
	w.t.Helper()
	w.do("rm -r "+rel, func() error { return os.RemoveAll(w.p(rel)) })
}

func (w wops) mkdir(rel string) {
	w.t.Helper()
	w.do("mkdir "+rel, func() error { return unix.Mkdir(w.p(rel), 0o755) })
}

func (w wops) rename(from, to string) {
	w.t.Helper()
	w.do("rename "+from+" "+to, func() error { return unix.Rename(w.p(from), w.p(to)) })
}

func (w wops) rename2(from, to string, flags uint) {
	w.t.Helper()
	name := map[uint]string{unix.RENAME_NOREPLACE: "NOREPLACE", unix.RENAME_EXCHANGE: "EXCHANGE"}[flags]
	w.do("renameat2 "+name+" "+from+" "+to, func() error {
		return unix.Renameat2(unix.AT_FDCWD, w.p(from), unix.AT_FDCWD, w.p(to), flags)
	})
}

func (w wops) link(from, to string) {
	w.t.Helper()
	w.do("link "+from+" "+to, func() error { return unix.Link(w.p(from), w.p(to)) })
}

// owStatSummary is one line for a path's type, mode, owner, size and link
// count, leaving out what differs between filesystems for the same tree
// (directory sizes and link counts, inode numbers, times).
func owStatSummary(p string) (string, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return "", err
	}
	typ := fileType(st.Mode)
	s := fmt.Sprintf("%s %04o %d:%d", typ, st.Mode&0o7777, st.Uid, st.Gid)
	if typ != "dir" {
		s += fmt.Sprintf(" size=%d nlink=%d", st.Size, st.Nlink)
	}
	if typ == "chardev" || typ == "blockdev" {
		s += fmt.Sprintf(" rdev=%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	return s, nil
}

func owWriteFile(p string, flags int, content string) (err error) {
	f, err := os.OpenFile(p, flags, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	_, err = f.WriteString(content)
	return err
}

// owWriteAt opens p O_WRONLY (no O_TRUNC) and writes s at off.
func owWriteAt(p string, off int64, s string) (err error) {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	_, err = f.WriteAt([]byte(s), off)
	return err
}

// owDeepPath is d0/d1/.../d(n-1).
func owDeepPath(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf("d%d", i)
	}
	return path.Join(parts...)
}

// ---------------------------------------------------------------------------
// Scenarios

func writeScenarios() []scenario {
	var scs []scenario
	scs = append(scs, copyUpScenarios()...)
	scs = append(scs, whiteoutScenarios()...)
	scs = append(scs, dirRenameScenarios()...)
	scs = append(scs, renameOverScenarios()...)
	scs = append(scs, renameat2Scenarios()...)
	scs = append(scs, hardlinkScenarios()...)
	scs = append(scs, deepTreeScenarios()...)
	scs = append(scs, multiLayerScenarios()...)
	scs = append(scs, createScenarios()...)
	return scs
}

// copyUpLower is the lower layer of the copy-up scenarios: a file with an
// xattr and a non-default mode in a directory with its own owner and mode,
// so that a copy-up must carry the parent's metadata too.
func copyUpLower() []tree {
	return []tree{{
		"d/":      withOwner(dir(0o750), 42, 43),
		"d/f":     withXattr(withOwner(fileMode("hello world", 0o640), 42, 43), "user.k", "v"),
		"d/keep":  file("untouched"),
		"d/l":     symlink("f"),
		"d/sub/g": file("deep"),
		"top":     file("top"),
	}}
}

func copyUpScenarios() []scenario {
	type tc struct {
		name string
		op   func(w wops)
	}
	cases := []tc{
		{"open O_WRONLY and write", func(w wops) {
			w.do("pwrite d/f HE at 0", func() error { return owWriteAt(w.p("d/f"), 0, "HE") })
		}},
		{"open O_RDWR without writing", func(w wops) {
			w.do("open O_RDWR d/f", func() error { return owWriteFile(w.p("d/f"), os.O_RDWR, "") })
		}},
		{"O_APPEND", func(w wops) { w.appendTo("d/f", ", appended") }},
		{"O_TRUNC", func(w wops) { w.overwrite("d/f", "new") }},
		{"truncate shrink", func(w wops) {
			w.do("truncate d/f 5", func() error { return unix.Truncate(w.p("d/f"), 5) })
		}},
		{"truncate extend", func(w wops) {
			w.do("truncate d/f 100000", func() error { return unix.Truncate(w.p("d/f"), 100000) })
		}},
		{"chmod", func(w wops) {
			w.do("chmod d/f 4755", func() error { return unix.Chmod(w.p("d/f"), 0o4755) })
		}},
		{"chmod dir", func(w wops) {
			w.do("chmod d 0700", func() error { return unix.Chmod(w.p("d"), 0o700) })
			w.ls("d")
		}},
		{"chown", func(w wops) {
			w.do("chown d/f 1234:5678", func() error { return unix.Chown(w.p("d/f"), 1234, 5678) })
		}},
		{"lchown symlink", func(w wops) {
			w.do("lchown d/l 7:8", func() error { return unix.Lchown(w.p("d/l"), 7, 8) })
			w.stat("d/l")
			w.readlink("d/l")
		}},
		{"utimes", func(w wops) {
			ts := []unix.Timespec{{Sec: 1000000000, Nsec: 123456789}, {Sec: 1200000000, Nsec: 987654321}}
			w.do("utimensat d/f", func() error { return unix.UtimesNano(w.p("d/f"), ts) })
			w.mtime("d/f")
		}},
		{"setxattr user", func(w wops) {
			w.do("setxattr d/f user.new", func() error { return unix.Setxattr(w.p("d/f"), "user.new", []byte("1"), 0) })
			w.do("setxattr d/f user.k replace", func() error {
				return unix.Setxattr(w.p("d/f"), "user.k", []byte("w"), unix.XATTR_REPLACE)
			})
			w.xattrs("d/f")
		}},
		{"removexattr user", func(w wops) {
			w.do("removexattr d/f user.k", func() error { return unix.Removexattr(w.p("d/f"), "user.k") })
			w.do("removexattr d/f user.none", func() error { return unix.Removexattr(w.p("d/f"), "user.none") })
			w.xattrs("d/f")
		}},
		{"link", func(w wops) {
			w.link("d/f", "d/f2")
			w.link("d/f", "top2")
			w.stat("d/f2")
			w.appendTo("d/f2", " via f2")
			w.read("d/f")
			w.read("top2")
		}},
		{"rename", func(w wops) {
			w.rename("d/f", "d/g")
			w.stat("d/f")
			w.ls("d")
		}},
		{"rename to another dir", func(w wops) {
			w.rename("d/f", "d/sub/f")
			w.rename("top", "d/sub/top")
			w.ls("d")
			w.ls("d/sub")
			w.ls(".")
		}},
	}
	var scs []scenario
	for _, c := range cases {
		scs = append(scs, scenario{
			name:   "copy-up by " + c.name,
			lowers: copyUpLower(),
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				w := newWops(t, mnt, rec)
				c.op(w)
				for _, p := range []string{"d/f", "d/g", "d/sub/f", "d"} {
					w.stat(p)
				}
				w.read("d/f")
				w.xattrs("d/f")
				w.read("d/keep")
			},
		})
	}
	return scs
}

func whiteoutScenarios() []scenario {
	return []scenario{
		{
			name: "whiteout then re-create file",
			lowers: []tree{{
				"d/f": fileMode("lower", 0o600),
				"d/x": file("x"),
			}},
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				w := newWops(t, mnt, rec)
				w.unlink("d/f")
				w.stat("d/f")
				w.read("d/f")
				w.unlink("d/f")
				w.ls("d")
				w.create("d/f", "upper")
				w.stat("d/f")
				w.read("d/f")
				w.ls("d")
				w.unlink("d/f")
				w.mkdir("d/f")
				w.ls("d/f")
				w.create("d/f/inside", "in")
				w.ls("d")
				w.rmAll("d/f")
				w.do("symlink d/f", func() error { return unix.Symlink("x", w.p("d/f")) })
				w.read("d/f")
				w.ls("d")
			},
		},
		{
			name: "whiteout then re-create dir",
			lowers: []tree{{
				"d/sub/a":   file("a"),
				"d/sub/b/c": file("c"),
				"d/other":   file("o"),
			}},
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				w := newWops(t, mnt, rec)
				w.rmdir("d/sub")
				w.rmAll("d/sub")
				w.stat("d/sub")
				w.ls("d")
				w.mkdir("d/sub")
				w.ls("d/sub")
				w.stat("d/sub/a")
				w.mkdir("d/sub/b")
				w.ls("d/sub/b")
				w.create("d/sub/new", "new")
				w.ls("d/sub")
				w.rmAll("d/sub")
				w.create("d/sub", "now a file")
				w.read("d/sub")
			},
		},
		{
			name: "rmdir then mkdir of a lower dir is opaque",
			lowers: []tree{
				{"e/top": file("0"), "e/both": file("0")},
				{"e/bottom": file("1"), "e/both": file("1"), "e/deep/x": file("x"), "e/deep/y/z": file("z")},
			},
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				w := newWops(t, mnt, rec)
				w.ls("e")
				w.rmdir("e")
				for _, p := range []string{"e/top", "e/both", "e/bottom", "e/deep/x", "e/deep/y/z"} {
					w.unlink(p)
				}
				w.rmdir("e/deep/y")
				w.rmdir("e/deep")
				w.ls("e")
				w.rmdir("e")
				w.stat("e")
				w.ls(".")
				w.mkdir("e")
				w.ls("e")
				w.stat("e/bottom")
				w.mkdir("e/deep")
				w.ls("e/deep")
				w.stat("e/deep/x")
				w.create("e/both", "new")
				w.read("e/both")
			},
		},
		{
			name: "unlink everything in a lower dir then rmdir",
			lowers: []tree{
				{"d/a": file("a"), "d/b": symlink("a"), "d/c": fifo(), "d/sub/": dir(0o700)},
				{"d/low": file("low")},
			},
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				w := newWops(t, mnt, rec)
				for _, p := range []string{"d/a", "d/b", "d/c"} {
					w.unlink(p)
				}
				w.rmdir("d")
				w.rmdir("d/sub")
				w.ls("d")
				w.unlink("d/low")
				w.ls("d")
				w.rmdir("d")
				w.stat("d")
				w.ls(".")
				w.mkdir("d")
				w.ls("d")
			},
		},
	}
}

// renamedTreeLowers has a lower directory with a deep subtree, split over
// two layers so that the directory is merged.
func renamedTreeLowers() []tree {
	return []tree{
		{
			"a/b/c/d/e/f.txt": file("deep"),
			"a/b/old":         file("old"),
			"a/b/c/link":      symlink("d/e/f.txt"),
			"a/b/c/h1":        file("hl"),
			"a/h2":            hardlink("a/b/c/h1"),
			"a/top":           fileMode("top", 0o600),
		},
		{
			"a/b/fromlow2":  file("low2"),
			"a/b/c/d/lowd/": dir(0o711),
			"a/only2/x":     file("x"),
		},
	}
}

func dirRenameScenarios() []scenario {
	return []scenario{
		{
			name:   "rename lower dir with deep subtree",
			lowers: renamedTreeLowers(),
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				w := newWops(t, mnt, rec)
				w.rename("a", "z")
				w.stat("a")
				w.ls("z")
				w.ls("z/b")
				w.ls("z/b/c/d")
				w.read("z/b/c/d/e/f.txt")
				w.read("z/b/c/link")
				w.read("z/only2/x")
				// Modify inside the renamed tree.
				w.appendTo("z/b/c/d/e/f.txt", " modified")
				w.create("z/b/new", "new")
				w.unlink("z/b/old")
				w.rename("z/b/c", "z/c2")
				w.mkdir("z/b/c")
				w.ls("z/b/c")
				// Rename it again, then back.
				w.rename("z", "y")
				w.ls("y/b")
				w.read("y/c2/d/e/f.txt")
				w.rename("y", "a")
				w.stat("y")
				w.stat("z")
				w.ls("a")
				w.ls("a/b")
				w.ls("a/c2/d")
				w.read("a/c2/d/e/f.txt")
				w.read("a/c2/link")
			},
		},
		{
			name:   "rename lower dir then reuse its name",
			lowers: renamedTreeLowers(),
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				w := newWops(t, mnt, rec)
				w.rename("a", "z")
				w.mkdir("a")
				w.ls("a")
				w.mkdir("a/b")
				w.ls("a/b")
				w.stat("a/b/old")
				w.create("a/top", "reused")
				w.read("a/top")
				w.read("z/top")
				w.rename("z/b", "a/b2")
				w.ls("a/b2")
				w.ls("z")
			},
		},
		{
			name:   "rename dir into its own subtree",
			lowers: renamedTreeLowers(),
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				w := newWops(t, mnt, rec)
				w.rename("a", "a/b/inside")
				w.rename("a/b", "a/b/c/inside")
				w.ls("a/b")
			},
		},
	}
}

func renameOverScenarios() []scenario {
	lower := func() []tree {
		return []tree{{
			"a":          file("A"),
			"b":          fileMode("B", 0o600),
			"src/x":      file("x"),
			"src2/y":     file("y"),
			"empty/":     dir(0o700),
			"empty2/":    dir(0o755),
			"full/z":     file("z"),
			"cleared/c1": file("c1"),
		}}
	}
	return []scenario{
		{
			name:   "rename file over lower file",
			lowers: lower(),
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				w := newWops(t, mnt, rec)
				w.rename("a", "b")
				w.stat("a")
				w.stat("b")
				w.read("b")
				w.create("n", "new")
				w.rename("n", "b")
				w.read("b")
				w.rename("b", "src/x")
				w.read("src/x")
				w.ls(".")
				w.ls("src")
			},
		},
		{
			name:   "rename dir over empty lower dir",
			lowers: lower(),
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				w := newWops(t, mnt, rec)
				w.rename("src", "empty")
				w.stat("src")
				w.stat("empty")
				w.ls("empty")
				w.mkdir("newdir")
				w.create("newdir/n", "n")
				w.rename("newdir", "empty2")
				w.ls("empty2")
				w.rename("src2", "full")
				w.ls("full")
				w.unlink("cleared/c1")
				w.rename("src2", "cleared")
				w.ls("cleared")
				w.stat("src2")
				w.ls(".")
			},
		},
		{
			name:   "rename type mismatches",
			lowers: lower(),
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				w := newWops(t, mnt, rec)
				w.rename("a", "empty")
				w.rename("empty", "a")
				w.rename("a", "a")
				w.rename("missing", "a")
				w.read("a")
				w.ls(".")
			},
		},
	}
}

func renameat2Scenarios() []scenario {
	lower := func() []tree {
		return []tree{{
			"l1":       file("lower one"),
			"l2":       fileMode("lower two", 0o600),
			"ld1/x":    file("x"),
			"ld2/y":    file("y"),
			"gone":     file("to be deleted"),
			"sub/deep": file("deep"),
		}}
	}
	return []scenario{
		{
			name:   "RENAME_NOREPLACE",
			lowers: lower(),
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				w := newWops(t, mnt, rec)
				w.create("u1", "upper one")
				w.rename2("l1", "l2", unix.RENAME_NOREPLACE)   // lower over lower
				w.rename2("u1", "l2", unix.RENAME_NOREPLACE)   // upper over lower
				w.rename2("l1", "u1", unix.RENAME_NOREPLACE)   // lower over upper
				w.rename2("ld1", "ld2", unix.RENAME_NOREPLACE) // dir over dir
				w.unlink("gone")
				w.rename2("l1", "gone", unix.RENAME_NOREPLACE) // onto a whiteout
				w.rename2("ld1", "sub/ld1", unix.RENAME_NOREPLACE)
				w.rename2("u1", "fresh", unix.RENAME_NOREPLACE)
				for _, p := range []string{"l1", "l2", "gone", "u1", "fresh"} {
					w.read(p)
				}
				w.ls(".")
				w.ls("sub/ld1")
			},
		},
		{
			name:   "RENAME_EXCHANGE",
			lowers: lower(),
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				w := newWops(t, mnt, rec)
				w.create("u1", "upper one")
				w.create("u2", "upper two")
				w.rename2("l1", "l2", unix.RENAME_EXCHANGE) // lower <-> lower
				w.read("l1")
				w.read("l2")
				w.rename2("l1", "u1", unix.RENAME_EXCHANGE) // lower <-> upper
				w.read("l1")
				w.read("u1")
				w.rename2("u1", "u2", unix.RENAME_EXCHANGE) // upper <-> upper
				w.read("u1")
				w.read("u2")
				w.rename2("ld1", "ld2", unix.RENAME_EXCHANGE) // lower dir <-> lower dir
				w.ls("ld1")
				w.ls("ld2")
				w.rename2("ld1", "l2", unix.RENAME_EXCHANGE) // dir <-> file
				w.ls("l2")
				w.read("ld1")
				w.rename2("l2", "sub/deep", unix.RENAME_EXCHANGE) // across dirs
				w.ls("sub")
				w.read("l2")
				w.rename2("l1", "missing", unix.RENAME_EXCHANGE)
				w.unlink("gone")
				w.rename2("l1", "gone", unix.RENAME_EXCHANGE) // with a whiteout
				w.stat("gone")
				w.ls(".")
			},
		},
	}
}

func hardlinkScenarios() []scenario {
	return []scenario{
		{
			name: "hard links",
			lowers: []tree{{
				"h1":     fileMode("one", 0o640),
				"h2":     hardlink("h1"),
				"sub/h3": hardlink("h1"),
				"f":      file("single"),
			}},
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				w := newWops(t, mnt, rec)
				w.stat("h1")
				// Write through one name of a lower hard link, read the others.
				w.overwrite("h1", "changed through h1")
				w.read("h2")
				w.read("sub/h3")
				w.stat("h2")
				w.do("chmod h2 0600", func() error { return unix.Chmod(w.p("h2"), 0o600) })
				w.stat("sub/h3")
				// Link a lower file, write through the new name.
				w.link("f", "g")
				w.appendTo("g", " via g")
				w.read("f")
				w.stat("f")
				w.unlink("h2")
				w.stat("h1")
				w.rename("sub/h3", "h3")
				w.read("h3")
				w.link("h3", "sub/h4")
				w.stat("h1")
				w.unlink("f")
				w.stat("g")
				w.read("g")
			},
		},
		{
			name: "hard link to a lower file not yet copied up",
			lowers: []tree{{
				"a":   file("lower a"),
				"d/b": hardlink("a"),
			}},
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				w := newWops(t, mnt, rec)
				w.link("d/b", "c")
				w.stat("a")
				w.stat("c")
				w.do("setxattr a user.x", func() error { return unix.Setxattr(w.p("a"), "user.x", []byte("1"), 0) })
				w.xattrs("c")
				w.xattrs("d/b")
				w.unlink("a")
				w.unlink("d/b")
				w.stat("c")
				w.read("c")
			},
		},
	}
}

// deepDepth is the depth of the deep-tree scenarios' lower directories.
const deepDepth = 30

func deepTreeScenarios() []scenario {
	lower := tree{}
	for i := 1; i <= deepDepth; i++ {
		lower[owDeepPath(i)+"/sib"] = file(fmt.Sprintf("sibling at depth %d", i))
	}
	lower[owDeepPath(deepDepth)+"/leaf.txt"] = file("leaf")
	lower2 := tree{owDeepPath(deepDepth/2) + "/from-lower2": file("lower2")}
	leaf := owDeepPath(deepDepth) + "/leaf.txt"
	return []scenario{{
		name:   fmt.Sprintf("deep tree of depth %d", deepDepth),
		lowers: []tree{lower, lower2},
		ops: func(t *testing.T, mnt string, rec *opRecorder) {
			w := newWops(t, mnt, rec)
			w.appendTo(leaf, " appended") // copies up 30 parents
			w.read(leaf)
			w.create(owDeepPath(deepDepth)+"/new", "new")
			w.mkdir(owDeepPath(deepDepth) + "/d30")
			w.create(owDeepPath(deepDepth+1)+"/deeper", "deeper")
			w.unlink(owDeepPath(20) + "/sib")
			w.ls(owDeepPath(20))
			// Rename a lower directory in the middle of the chain.
			mid := owDeepPath(deepDepth / 2)
			w.rename(mid, mid+"x")
			w.ls(mid + "x")
			moved := mid + "x" + strings.TrimPrefix(leaf, mid)
			w.read(moved)
			w.stat(leaf)
			w.rmAll(owDeepPath(25))
			w.ls(owDeepPath(24))
			w.rename(mid+"x", mid)
			w.ls(owDeepPath(24))
			w.stat(owDeepPath(25))
		},
	}}
}

func multiLayerScenarios() []scenario {
	return []scenario{
		{
			name: "three lowers: delete a name present in several layers",
			lowers: []tree{
				{"x": file("top"), "d/a": file("0"), "m/": dir(0o755), "both": file("0")},
				{"x": file("mid"), "d/b": file("1"), "y": file("mid y"), "z/in1": file("1"), "both": file("1"), "w2/": dir(0o700)},
				{"x": file("bottom"), "d/c": file("2"), "y": file("bottom y"), "z/in2": file("2"), "w": file("only bottom"), "w2/q": file("q")},
			},
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				w := newWops(t, mnt, rec)
				w.read("x")
				w.unlink("x")
				w.stat("x")
				w.create("x", "new")
				w.read("x")
				w.unlink("y")
				w.stat("y")
				w.ls("d")
				w.unlink("d/b")
				w.unlink("d/c")
				w.ls("d")
				w.ls("z")
				w.rmAll("z")
				w.stat("z")
				w.mkdir("z")
				w.ls("z")
				w.unlink("w")
				w.ls("w2")
				w.rmAll("w2")
				w.mkdir("w2")
				w.ls("w2")
				w.rename("both", "both2")
				w.stat("both")
				w.read("both2")
				w.ls(".")
			},
		},
		{
			name: "three lowers: file and directory under one name",
			lowers: []tree{
				{"k": file("file on top"), "q/a": file("a"), "r/": opaqueDir(0o755), "r/top": file("t")},
				{"k/inner": file("dir in the middle"), "q": file("file in the middle"), "r/mid": file("m")},
				{"k/deeper": file("dir at the bottom"), "q/b": file("b"), "r/bottom": file("b")},
			},
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				w := newWops(t, mnt, rec)
				w.stat("k")
				w.ls("q")
				w.ls("r")
				w.unlink("k")
				w.stat("k")
				w.mkdir("k")
				w.ls("k")
				w.rmAll("q")
				w.stat("q")
				w.mkdir("q")
				w.ls("q")
				w.rename("r", "r2")
				w.ls("r2")
				w.ls(".")
			},
		},
	}
}

func createScenarios() []scenario {
	return []scenario{{
		name:   "create every type in a lower dir",
		lowers: []tree{{"d/existing": file("e"), "d/sub/": withOwner(dir(0o775), 5, 6)}},
		ops: func(t *testing.T, mnt string, rec *opRecorder) {
			w := newWops(t, mnt, rec)
			w.do("mkfifo d/fifo", func() error { return unix.Mkfifo(w.p("d/fifo"), 0o640) })
			w.do("mknod d/null", func() error {
				return unix.Mknod(w.p("d/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
			})
			w.do("symlink d/sym", func() error { return unix.Symlink("existing", w.p("d/sym")) })
			w.do("mkdir d/sub/new 0750", func() error { return unix.Mkdir(w.p("d/sub/new"), 0o750) })
			w.do("create d/excl", func() error {
				return owWriteFile(w.p("d/excl"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, "x")
			})
			w.do("create d/existing O_EXCL", func() error {
				return owWriteFile(w.p("d/existing"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, "x")
			})
			w.do("bind socket d/sock", func() error { return owBindUnixSocket(w.p("d"), "sock") })
			w.do("O_TMPFILE in d, then linkat", func() error { return owTmpfileLink(w.p("d"), w.p("d/tmp-linked"), "anonymous") })
			for _, p := range []string{"d/fifo", "d/null", "d/sym", "d/sub/new", "d/excl", "d/sock", "d/tmp-linked"} {
				w.stat(p)
			}
			w.read("d/tmp-linked")
			w.ls("d")
		},
	}}
}

// owBindUnixSocket binds a unix socket to dir/name and closes it, leaving
// the socket file. It names the directory through /proc/self/fd, since a
// sun_path holds only 108 bytes and test paths are long.
func owBindUnixSocket(dir, name string) error {
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Bind(fd, &unix.SockaddrUnix{Name: "/proc/self/fd/" + strconv.Itoa(dfd) + "/" + name})
}

// owTmpfileLink creates an O_TMPFILE file in dir, writes content and links
// it in as name.
func owTmpfileLink(dir, name, content string) error {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("open O_TMPFILE: %w", err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(content)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, name, unix.AT_SYMLINK_FOLLOW); err != nil {
		return fmt.Errorf("linkat: %w", err)
	}
	return nil
}
