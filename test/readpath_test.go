package test

// End-to-end tests of the read path: the merged view of stacks of 1, 2 and
// 64 layers, readdir, getattr, readlink, read and mmap, sparse files,
// xattrs, statfs, access, special files, inode numbers, the read-only
// mount and a former upper reused as a lower. Kernel overlayfs (through
// runOracle) and the layers themselves are the reference.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// ---------------------------------------------------------------------------
// Helpers

// rpMountRO writes each tree into its own layer (topmost first), mounts
// them read-only with one --lower per layer and returns the mountpoint and
// the layer dirs. The layers are checked to be untouched after the unmount.
func rpMountRO(t *testing.T, trees []tree) (string, []string) {
	t.Helper()
	dirs := make([]string, len(trees))
	for i, tr := range trees {
		dirs[i] = t.TempDir()
		writeTree(t, dirs[i], tr)
	}
	rpCheckUntouched(t, dirs)
	var args []string
	for _, d := range dirs {
		args = append(args, "-l", d)
	}
	return mountUnion(t, args...), dirs
}

// rpCheckUntouched registers a cleanup (so: after any later unmount) that
// fails the test if a layer changed.
func rpCheckUntouched(t *testing.T, dirs []string) {
	t.Helper()
	sums := make([]map[string]string, len(dirs))
	for i, d := range dirs {
		sums[i] = checksumTree(t, d)
	}
	t.Cleanup(func() {
		for i, d := range dirs {
			assertUnchanged(t, sums[i], d)
		}
	})
}

// rpMerge computes the view a union of layers (snapshots, topmost first)
// must show, by the overlayfs rules: the topmost layer that has a name
// decides its type and attributes; a non-directory hides everything below
// it; a directory merges with the same-named directories below it until a
// layer has a non-directory there. It also returns, for each path, the
// index of the layer it comes from.
func rpMerge(layers []map[string]node) (map[string]node, map[string]int) {
	children := make([]map[string][]string, len(layers))
	for i, l := range layers {
		children[i] = map[string][]string{}
		for p := range l {
			if p != "." {
				children[i][path.Dir(p)] = append(children[i][path.Dir(p)], path.Base(p))
			}
		}
	}
	view := map[string]node{".": layers[0]["."]}
	from := map[string]int{".": 0}
	var visit func(dir string, contrib []int)
	visit = func(dir string, contrib []int) {
		names := map[string]bool{}
		for _, i := range contrib {
			for _, n := range children[i][dir] {
				names[n] = true
			}
		}
		for name := range names {
			p := path.Join(dir, name)
			var sub []int
			found := false
			for _, i := range contrib {
				n, ok := layers[i][p]
				if !ok {
					continue
				}
				if !found {
					found = true
					view[p], from[p] = n, i
				}
				if n.Type != "dir" {
					break
				}
				sub = append(sub, i)
			}
			if view[p].Type == "dir" {
				visit(p, sub)
			}
		}
	}
	all := make([]int, len(layers))
	for i := range all {
		all[i] = i
	}
	visit(".", all)
	return view, from
}

// rpExpected snapshots each layer dir and merges them.
func rpExpected(t *testing.T, dirs []string) (map[string]node, map[string]int) {
	t.Helper()
	snaps := make([]map[string]node, len(dirs))
	for i, d := range dirs {
		snaps[i] = snapshot(t, d)
	}
	return rpMerge(snaps)
}

// rpDirent is one linux_dirent64 record.
type rpDirent struct {
	ino  uint64
	off  int64
	typ  uint8
	name string
}

// rpGetdents reads directory entries from fd with getdents64 and a buffer
// of bufSize bytes, until the end (max < 0) or until it has at least max
// entries; it returns whole getdents batches.
func rpGetdents(t *testing.T, fd int, bufSize, max int) []rpDirent {
	t.Helper()
	buf := make([]byte, bufSize)
	var out []rpDirent
	for max < 0 || len(out) < max {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatalf("getdents: %v", err)
		}
		if n == 0 {
			break
		}
		out = append(out, rpParseDirents(t, buf[:n])...)
	}
	return out
}

func rpParseDirents(t *testing.T, b []byte) []rpDirent {
	t.Helper()
	var out []rpDirent
	for len(b) > 0 {
		if len(b) < 19 {
			t.Fatalf("getdents: truncated record")
		}
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		if reclen < 19 || reclen > len(b) {
			t.Fatalf("getdents: bad record length %d", reclen)
		}
		name := b[19:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		out = append(out, rpDirent{
			ino:  binary.NativeEndian.Uint64(b[0:8]),
			off:  int64(binary.NativeEndian.Uint64(b[8:16])),
			typ:  b[18],
			name: string(name),
		})
		b = b[reclen:]
	}
	return out
}

func rpNames(ds []rpDirent) []string {
	names := make([]string, len(ds))
	for i, d := range ds {
		names[i] = d.name
	}
	return names
}

// rpOpenDir opens a directory for getdents; closed at cleanup.
func rpOpenDir(t *testing.T, p string) int {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func rpSeek(t *testing.T, fd int, off int64) {
	t.Helper()
	if got, err := unix.Seek(fd, off, io.SeekStart); err != nil || got != off {
		t.Fatalf("lseek(dir, %d) = %d, %v", off, got, err)
	}
}

// rpDirentType is the d_type the kernel should report for a stat mode.
func rpDirentType(mode uint32) uint8 {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return unix.DT_REG
	case unix.S_IFDIR:
		return unix.DT_DIR
	case unix.S_IFLNK:
		return unix.DT_LNK
	case unix.S_IFIFO:
		return unix.DT_FIFO
	case unix.S_IFCHR:
		return unix.DT_CHR
	case unix.S_IFBLK:
		return unix.DT_BLK
	case unix.S_IFSOCK:
		return unix.DT_SOCK
	}
	return unix.DT_UNKNOWN
}

func rpLstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat: %v", err)
	}
	return st
}

// rpDropCaches makes the kernel forget every unused dentry and inode, so
// that the next lookups go to the server again (root only).
func rpDropCaches(t *testing.T) {
	t.Helper()
	requireRoot(t)
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		skipOrFail(t, "drop caches: %v", err)
	}
}

// rpInodes maps every path under root to its st_ino.
func rpInodes(t *testing.T, root string) map[string]uint64 {
	t.Helper()
	inos := map[string]uint64{}
	err := walk(root, walkConfig{}, func(rel, _ string, st *unix.Stat_t) error {
		inos[rel] = st.Ino
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return inos
}

func rpRandom(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(b)
	return b
}

// ---------------------------------------------------------------------------
// Stacks of 1, 2 and 64 layers

// rpOneLayer is a single layer with every file type and some odd modes.
func rpOneLayer() []tree {
	return []tree{{
		".":               dir(0o755),
		"a/b/c/deep.txt":  file("deep"),
		"empty":           file(""),
		"setuid":          fileMode("x", 0o4755),
		"setgid-dir/":     dir(0o2775),
		"sticky/":         dir(0o1777),
		"private/":        dir(0o700),
		"private/secret":  fileMode("s", 0o600),
		"ro/":             dir(0o555),
		"ro/file":         fileMode("r", 0o444),
		"l-rel":           symlink("a/b/c/deep.txt"),
		"l-abs":           symlink("/nonexistent/target"),
		"h1":              file("linked"),
		"sub/h2":          hardlink("h1"),
		"p":               fifo(),
		"x":               withXattr(file("x"), "user.one", "1"),
		"sp":              sparse(1<<20, map[int64]string{4096: "data"}),
		"name with space": file("space"),
		"ünïcödé":         file("utf8"),
	}}
}

// rpTwoLayers covers every way two layers interact.
func rpTwoLayers() []tree {
	return []tree{
		{
			".":                dir(0o751),
			"f":                file("top f"),
			"file-over-dir":    file("a file hides the dir below"),
			"dir-over-file/":   dir(0o750),
			"dir-over-file/in": file("in"),
			"merged/":          dir(0o750),
			"merged/top":       file("top"),
			"merged/both":      file("both from top"),
			"merged/sub/t":     file("t"),
			"link":             symlink("merged/top"),
			"link-over-dir":    symlink("merged"),
			"x":                withXattr(file("x"), "user.layer", "top"),
			"top-only/deep/f":  file("deep"),
		},
		{
			".":                   dir(0o755),
			"f":                   file("bottom f, hidden"),
			"file-over-dir/":      dir(0o755),
			"file-over-dir/gone":  file("hidden below a file"),
			"dir-over-file":       file("hidden below a dir"),
			"merged/":             dir(0o755),
			"merged/bottom":       file("bottom"),
			"merged/both":         file("both from bottom, hidden"),
			"merged/sub/b":        file("b"),
			"link-over-dir/":      dir(0o755),
			"link-over-dir/inner": file("hidden below a symlink"),
			"x":                   withXattr(file("x2"), "user.layer", "bottom"),
			"bottom-only/deep/f":  file("deep"),
			"h1":                  file("h"),
			"h2":                  hardlink("h1"),
			"p":                   fifo(),
			"sp":                  sparse(3<<20, map[int64]string{0: "head", 2 << 20: "middle"}),
		},
	}
}

// rp64Layers builds 64 layers whose interactions reach all the way down.
func rp64Layers() []tree {
	layers := make([]tree, 64)
	for i := range layers {
		tr := tree{
			fmt.Sprintf("common/f%02d", i):       file(fmt.Sprintf("f%02d from layer %d", i, i)),
			"top":                                file(fmt.Sprintf("top from layer %d", i)),
			fmt.Sprintf("deep/a/b/c/g%d", i%8):   file(fmt.Sprintf("g%d from layer %d", i%8, i)),
			fmt.Sprintf("spread/l%02d/own", i/8): file(fmt.Sprintf("own from layer %d", i)),
		}
		if i == 0 {
			tr["."] = dir(0o751)
		}
		// fd: a file in layer 10 hides the directories in 11..63.
		switch {
		case i == 10:
			tr["fd"] = file("fd is a file in layer 10")
		case i > 10:
			tr[fmt.Sprintf("fd/x%02d", i)] = file("hidden below the file")
		}
		// df: a dir in layers 5 and 20, a file in 21..29 that stops the
		// merge, and a dir again in 30..63 that stays hidden.
		switch {
		case i == 5 || i == 20:
			tr[fmt.Sprintf("df/y%02d", i)] = file("visible")
		case i > 20 && i < 30:
			tr["df"] = file("hidden below the dir")
		case i >= 30:
			tr[fmt.Sprintf("df/z%02d", i)] = file("hidden below the file in 21..29")
		}
		if i%9 == 0 {
			tr[fmt.Sprintf("every9/n%02d", i)] = file("n")
			tr["every9/shared"] = file(fmt.Sprintf("shared from layer %d", i))
		}
		switch i {
		case 2:
			tr["x"] = withXattr(file("x2"), "user.layer", "2")
		case 3:
			tr["perm/"] = dir(0o750)
			tr["perm/p3"] = file("p3")
			tr["link"] = symlink("common/f03")
		case 4:
			tr["x"] = withXattr(file("x4"), "user.layer", "4")
		case 6:
			tr["p"] = fifo()
		case 7:
			tr["h1"] = file("hardlinked in layer 7")
			tr["h2"] = hardlink("h1")
		case 8:
			tr["h2"] = file("hidden below layer 7's link")
		case 12:
			tr["sp"] = sparse(2<<20, map[int64]string{1 << 20: "mid"})
		case 40:
			tr["link/"] = dir(0o755)
			tr["link/z"] = file("hidden below a symlink")
		case 50:
			tr["perm/"] = dir(0o700)
			tr["perm/p50"] = file("p50")
		case 63:
			tr["bottom-only/deep/file"] = file("from the very bottom")
		}
		layers[i] = tr
	}
	return layers
}

func TestReadStacks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		layers []tree
	}{
		{"1 layer", rpOneLayer()},
		{"2 layers", rpTwoLayers()},
		{"64 layers", rp64Layers()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mnt, dirs := rpMountRO(t, tc.layers)
			want, _ := rpExpected(t, dirs)
			assertSameTree(t, want, snapshot(t, mnt))

			// Hard links within one layer stay one inode.
			wantLinks := map[string][]string{}
			for _, d := range dirs {
				for _, v := range hardlinkGroups(t, d) {
					visible := slices.DeleteFunc(slices.Clone(v), func(p string) bool {
						n, ok := want[p]
						return !ok || n.Type == "dir"
					})
					if len(visible) > 1 {
						wantLinks[visible[0]] = visible
					}
				}
			}
			if got := hardlinkGroups(t, mnt); !maps.EqualFunc(got, wantLinks, slices.Equal) {
				t.Errorf("hard link groups = %v, want %v", got, wantLinks)
			}
		})
	}
}

// TestReadOracle compares the read-only 2- and 64-layer stacks with
// kernel overlayfs. (The short name keeps the 64 lowerdir paths within
// the kernel's one-page limit on mount options.)
func TestReadOracle(t *testing.T) {
	t.Parallel()
	lookups := func(paths ...string) func(t *testing.T, mnt string, rec *opRecorder) {
		return func(t *testing.T, mnt string, rec *opRecorder) {
			for _, p := range paths {
				full := filepath.Join(mnt, p)
				rec.do("lstat "+p, func() error { var st unix.Stat_t; return unix.Lstat(full, &st) })
				rec.do("stat "+p, func() error { var st unix.Stat_t; return unix.Stat(full, &st) })
				rec.observe("read "+p, func() (string, error) { return readString(full) })
				rec.observe("readdir "+p, func() (string, error) { return listDir(full) })
				rec.observe("readlink "+p, func() (string, error) { return os.Readlink(full) })
			}
		}
	}
	runOracle(t, scenario{
		name:     "2",
		readOnly: true,
		lowers:   rpTwoLayers(),
		ops: lookups(".", "f", "file-over-dir", "file-over-dir/gone", "dir-over-file", "dir-over-file/in",
			"merged", "merged/both", "merged/sub", "link", "link/x", "link-over-dir", "link-over-dir/inner",
			"link-over-dir/top", "x", "missing", "missing/deeper"),
	}, unionfsMount)
	runOracle(t, scenario{
		name:     "64",
		readOnly: true,
		lowers:   rp64Layers(),
		ops: lookups(".", "top", "common", "deep/a/b/c", "deep/a/b/c/g3", "fd", "fd/x11", "df", "df/y20",
			"df/z30", "every9", "every9/shared", "perm", "link", "link/z", "h2", "bottom-only/deep/file"),
	}, unionfsMount)
	// Kernel-format whiteouts and opaque markers in the lowers (root:
	// they are a char device and trusted.* xattrs).
	runOracle(t, scenario{
		name:     "whiteouts",
		readOnly: true,
		lowers: []tree{
			{
				"gone":       overlayWhiteout(),
				"d/":         opaqueDir(0o755),
				"d/new":      file("new"),
				"w/x":        overlayWhiteout(),
				"w/top":      file("top"),
				"nd/gone2":   overlayWhiteout(),
				"recreated/": opaqueDir(0o700),
			},
			{
				"gone":          file("hidden by a whiteout"),
				"d/old":         file("hidden by the opaque dir above"),
				"w/x":           file("hidden by a whiteout"),
				"w/y":           file("y"),
				"nd/gone2":      file("hidden"),
				"nd/kept":       file("kept"),
				"recreated/old": file("hidden by the opaque dir above"),
			},
			{
				"gone":      file("hidden two layers down"),
				"d/older":   file("hidden: the opaque dir stops the merge"),
				"w/x":       file("hidden"),
				"w/z":       file("z"),
				"only-here": file("bottom"),
			},
		},
		ops: lookups(".", "gone", "d", "d/old", "d/older", "w", "w/x", "nd", "nd/gone2", "recreated", "recreated/old"),
	}, unionfsMount)
}

// ---------------------------------------------------------------------------
// readdir

func TestReadDirMerged(t *testing.T) {
	t.Parallel()
	mnt, dirs := rpMountRO(t, []tree{
		{"d/a": file("a"), "d/both": file("top"), "d/sub/": dir(0o755), "d/l": symlink("a"), "d/shadow": file("file")},
		{"d/b": file("b"), "d/both": file("mid"), "d/sub/x": file("x"), "d/p": fifo(), "d/shadow/": dir(0o755), "d/shadow/in": file("hidden")},
		{"d/c": file("c"), "d/both": file("bottom"), "d/a": file("hidden a"), "d/sub/": dir(0o700)},
	})
	want, _ := rpExpected(t, dirs)
	fd := rpOpenDir(t, filepath.Join(mnt, "d"))
	ents := rpGetdents(t, fd, 4096, -1)
	names := rpNames(ents)
	slices.Sort(names)
	wantNames := []string{".", "..", "a", "b", "both", "c", "l", "p", "shadow", "sub"}
	if !slices.Equal(names, wantNames) {
		t.Errorf("getdents d = %q, want %q (merged, each once, with . and ..)", names, wantNames)
	}
	for _, e := range ents {
		if e.name == "." || e.name == ".." {
			if e.typ != unix.DT_DIR {
				t.Errorf("%s: d_type %d, want DT_DIR", e.name, e.typ)
			}
			continue
		}
		st := rpLstat(t, filepath.Join(mnt, "d", e.name))
		if e.typ != rpDirentType(st.Mode) {
			t.Errorf("d/%s: d_type %d, lstat says %s", e.name, e.typ, fileType(st.Mode))
		}
		if n := want["d/"+e.name]; n.Type != fileType(st.Mode) {
			t.Errorf("d/%s: type %s, want %s", e.name, fileType(st.Mode), n.Type)
		}
	}
	if got, err := readString(filepath.Join(mnt, "d/both")); err != nil || got != "top" {
		t.Errorf("d/both = %q, %v; want the topmost", got, err)
	}
	if got, err := listDir(filepath.Join(mnt, "d/shadow")); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("readdir d/shadow = %q, %v; want ENOTDIR: the top layer's file hides the dir below", got, err)
	}
}

// TestReadDirSeek checks telldir/seekdir on one open handle: every
// entry's d_off, and the position after a partial read, lead back to the
// same continuation, even with another handle reading in between.
func TestReadDirSeek(t *testing.T) {
	t.Parallel()
	layers := make([]tree, 3)
	for i := range layers {
		layers[i] = tree{}
		for j := range 150 {
			// Overlapping ranges: 0..149, 75..224, 150..299.
			layers[i][fmt.Sprintf("d/entry-%04d", i*75+j)] = file(fmt.Sprint(i))
		}
	}
	mnt, _ := rpMountRO(t, layers)
	d := filepath.Join(mnt, "d")
	fd := rpOpenDir(t, d)

	first := rpGetdents(t, fd, 512, 40) // small buffer: several batches
	if len(first) < 40 {
		t.Fatalf("first read returned %d entries, want at least 40", len(first))
	}
	pos, err := unix.Seek(fd, 0, io.SeekCurrent) // telldir
	if err != nil {
		t.Fatalf("lseek(SEEK_CUR): %v", err)
	}
	rest := rpGetdents(t, fd, 512, -1)
	all := append(slices.Clone(first), rest...)
	names := rpNames(all)
	sorted := slices.Sorted(slices.Values(names))
	if len(sorted) != 302 || len(slices.Compact(slices.Clone(sorted))) != 302 {
		t.Fatalf("one pass over d: %d entries, %d distinct; want 302 (300 + . and ..)", len(sorted), len(slices.Compact(slices.Clone(sorted))))
	}

	// Another handle reads the whole directory in between.
	other := rpOpenDir(t, d)
	if n := len(rpGetdents(t, other, 8192, -1)); n != 302 {
		t.Errorf("second handle: %d entries, want 302", n)
	}

	rpSeek(t, fd, pos) // seekdir to the telldir position
	if again := rpGetdents(t, fd, 512, -1); !slices.Equal(rpNames(again), rpNames(rest)) {
		t.Errorf("after seekdir(telldir()): %d entries %q..., want the same %d as before", len(again), rpNames(again)[:min(5, len(again))], len(rest))
	}
	for _, i := range []int{0, 1, 2, 39, 100, 200, len(all) - 2} {
		rpSeek(t, fd, all[i].off) // glibc's seekdir to the telldir of entry i
		got := rpNames(rpGetdents(t, fd, 512, -1))
		if want := names[i+1:]; !slices.Equal(got, want) {
			t.Errorf("seekdir(d_off of entry %d %q): %d entries starting %q, want %d starting %q",
				i, names[i], len(got), got[:min(3, len(got))], len(want), want[:min(3, len(want))])
		}
	}
	rpSeek(t, fd, all[len(all)-1].off)
	if got := rpGetdents(t, fd, 512, -1); len(got) != 0 {
		t.Errorf("seekdir to the last entry's d_off: %d more entries, want none", len(got))
	}
	rpSeek(t, fd, 0) // rewinddir
	if got := rpNames(rpGetdents(t, fd, 4096, -1)); !slices.Equal(got, names) {
		t.Errorf("after rewinddir: %d entries, want the same %d in the same order", len(got), len(names))
	}
}

// TestReadDirWhileChanging reads a merged, writable directory in small
// batches while entries are removed and created between the batches (as
// rm -r and build tools do): every entry that stays is listed exactly once,
// no name is listed twice, and nothing that never existed shows up; entries
// created or removed during the pass may show up or not (POSIX leaves it
// open). Removals behind the read position must not make the pass skip
// entries ahead of it.
func TestReadDirWhileChanging(t *testing.T) {
	t.Parallel()
	lower := tree{}
	for i := range 300 {
		lower[fmt.Sprintf("d/low-%04d", i)] = file("l")
	}
	mnt := mountUnion(t, "-l", wpLower(t, lower), "-u", t.TempDir())
	d := filepath.Join(mnt, "d")
	for i := range 300 { // upper entries too
		wpWriteFile(t, filepath.Join(d, fmt.Sprintf("up-%04d", i)), unix.O_CREAT|unix.O_WRONLY, "u")
	}
	for round := range 3 {
		fd := rpOpenDir(t, d)
		before := map[string]bool{}
		for _, n := range rpNames(rpGetdents(t, rpOpenDir(t, d), 8192, -1)) {
			before[n] = true
		}
		seen := map[string]int{}
		removed, created := map[string]bool{}, map[string]bool{}
		for batch := 0; ; batch++ {
			ents := rpGetdents(t, fd, 600, 1) // one small getdents batch
			if len(ents) == 0 {
				break
			}
			for _, e := range ents {
				seen[e.name]++
				if e.name == "." || e.name == ".." {
					continue
				}
				// Remove every other entry just listed, and one not
				// listed yet; create a new one.
				if len(seen)%2 == 0 && !removed[e.name] {
					if err := unix.Unlink(filepath.Join(d, e.name)); err != nil {
						t.Fatalf("unlink %s: %v", e.name, err)
					}
					removed[e.name] = true
				}
			}
			for n := range before {
				if seen[n] == 0 && !removed[n] && n != "." && n != ".." {
					if err := unix.Unlink(filepath.Join(d, n)); err != nil {
						t.Fatalf("unlink %s: %v", n, err)
					}
					removed[n] = true
					break
				}
			}
			c := fmt.Sprintf("new-%d-%04d", round, batch)
			wpWriteFile(t, filepath.Join(d, c), unix.O_CREAT|unix.O_WRONLY, "n")
			created[c] = true
			// Another reader lists the changed directory from the start:
			// the server and the kernel then hold a newer listing than
			// the one this pass began on.
			if batch%2 == 0 {
				other, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				rpGetdents(t, other, 8192, -1)
				unix.Close(other)
			}
		}
		for n, k := range seen {
			if k > 1 {
				t.Errorf("round %d: %s listed %d times in one pass", round, n, k)
			}
		}
		missing := 0
		for n := range before {
			if seen[n] == 0 && !removed[n] {
				missing++
				if missing <= 5 {
					t.Errorf("round %d: %s was there all along but the pass skipped it", round, n)
				}
			}
		}
		for n := range seen {
			if !before[n] && !created[n] {
				t.Errorf("round %d: %s listed, but it never existed", round, n)
			}
		}
		if len(removed) < len(before)/3 {
			t.Fatalf("round %d: only %d of %d entries removed during the pass; the test needs many", round, len(removed), len(before))
		}
	}
}

func TestReadDirLarge(t *testing.T) {
	t.Parallel()
	const total = 5000
	layers := []tree{{}, {}, {}, {}}
	for i := range total {
		name := fmt.Sprintf("big/e%05d", i)
		switch {
		case i < 2000:
			layers[0][name] = file("0")
		case i < 3500:
			layers[1][name] = file("1")
		default:
			layers[2][name] = file("2")
		}
		if i >= 1500 && i < 2000 || i >= 3000 && i < 3500 {
			layers[i/1500%3][name] = file("overlap") // also in the next layer down
		}
		if i%7 == 0 {
			layers[3][name] = file("3") // bottom, always hidden
		}
	}
	layers[3]["big/bottom-only"] = file("b")
	mnt, _ := rpMountRO(t, layers)

	fd := rpOpenDir(t, filepath.Join(mnt, "big"))
	ents := rpGetdents(t, fd, 4096, -1)
	seen := map[string]int{}
	for _, e := range ents {
		seen[e.name]++
	}
	for name, n := range seen {
		if n != 1 {
			t.Errorf("%q listed %d times", name, n)
		}
	}
	if len(seen) != total+3 {
		t.Errorf("%d distinct names, want %d (%d entries, bottom-only, . and ..)", len(seen), total+3, total)
	}
	for i := range total {
		if name := fmt.Sprintf("e%05d", i); seen[name] == 0 {
			t.Errorf("%s missing from the listing", name)
		}
	}
	for _, name := range []string{".", "..", "bottom-only"} {
		if seen[name] == 0 {
			t.Errorf("%s missing from the listing", name)
		}
	}
	des, err := os.ReadDir(filepath.Join(mnt, "big"))
	if err != nil || len(des) != total+1 {
		t.Errorf("os.ReadDir: %d entries, %v; want %d", len(des), err, total+1)
	}
	if got, err := readString(filepath.Join(mnt, "big/e01999")); err != nil || got != "0" {
		t.Errorf("big/e01999 = %q, %v; want the topmost, %q", got, err, "0")
	}
}

// ---------------------------------------------------------------------------
// getattr, readlink, read, mmap, sparse files

// TestReadGetattr compares lstat through the mount with lstat of the layer
// entry that the merge rules say is visible.
func TestReadGetattr(t *testing.T) {
	t.Parallel()
	mnt, dirs := rpMountRO(t, rpTwoLayers())
	want, from := rpExpected(t, dirs)
	mntDev := rpLstat(t, mnt).Dev
	for p := range want {
		got := rpLstat(t, filepath.Join(mnt, p))
		src := rpLstat(t, filepath.Join(dirs[from[p]], p))
		type field struct {
			name      string
			got, want any
		}
		fields := []field{
			{"mode", fmt.Sprintf("%o", got.Mode), fmt.Sprintf("%o", src.Mode)},
			{"uid", got.Uid, src.Uid},
			{"gid", got.Gid, src.Gid},
			{"size", got.Size, src.Size},
			{"mtime", got.Mtim, src.Mtim},
			{"rdev", got.Rdev, src.Rdev},
			{"st_dev", got.Dev, mntDev},
		}
		if src.Mode&unix.S_IFMT != unix.S_IFDIR {
			fields = append(fields, field{"nlink", got.Nlink, src.Nlink})
		}
		if src.Mode&unix.S_IFMT == unix.S_IFREG {
			fields = append(fields, field{"blocks", got.Blocks, src.Blocks})
		}
		for _, f := range fields {
			if f.got != f.want {
				t.Errorf("%s: %s = %v, want %v (from layer %d)", p, f.name, f.got, f.want, from[p])
			}
		}
	}
}

func TestReadSymlinks(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	writeTree(t, outside, tree{"outside": file("outside the union")})
	long := strings.Repeat("d/", 1500) + "f"
	targets := map[string]string{
		"rel":      "merged/f",
		"abs":      "/etc/passwd",
		"dangling": "does/not/exist",
		"dotdot":   "../../../../x",
		"long":     long,
		"odd":      "sp ace\ttab\nnewline",
		"sym":      outside,
		"rsym":     "target",
	}
	top := tree{"merged/f": file("f")}
	for name, target := range targets {
		top[name] = symlink(target)
	}
	mnt, _ := rpMountRO(t, []tree{top, {
		"abs":          file("hidden below a symlink"),
		"sym/":         dir(0o755),
		"sym/inner":    file("layer 1's sym/inner: must never show"),
		"rsym/":        dir(0o755),
		"rsym/f":       file("layer 1's rsym/f: must never show"),
		"target/g":     file("g"),
		"dangling/":    dir(0o755),
		"dangling/x":   file("hidden"),
		"bottom-link":  symlink("/etc/passwd"),
		"merged/extra": file("e"),
	}})
	targets["bottom-link"] = "/etc/passwd"

	for name, target := range targets {
		p := filepath.Join(mnt, name)
		got, err := os.Readlink(p)
		if err != nil || got != target {
			t.Errorf("readlink %s = %q, %v; want %q", name, got, err, target)
		}
		st := rpLstat(t, p)
		if st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Size != int64(len(target)) {
			t.Errorf("lstat %s: %s of size %d, want a symlink of size %d", name, fileType(st.Mode), st.Size, len(target))
		}
	}
	if real, err := os.ReadFile("/etc/passwd"); err == nil {
		if got, err := os.ReadFile(filepath.Join(mnt, "abs")); err != nil || !bytes.Equal(got, real) {
			t.Errorf("read through abs -> /etc/passwd: %d bytes, %v; want the host's /etc/passwd", len(got), err)
		}
	}
	for _, tc := range []struct {
		path, want string
		err        error
	}{
		{"rel", "f", nil},
		{"dangling", "", unix.ENOENT},
		{"dangling/x", "", unix.ENOENT},
		{"sym/outside", "outside the union", nil}, // the kernel follows the link out of the mount
		{"sym/inner", "", unix.ENOENT},            // never merged with layer 1's sym/
		{"rsym/g", "g", nil},                      // resolved in the merged view: target/g
		{"rsym/f", "", unix.ENOENT},               // never merged with layer 1's rsym/
	} {
		got, err := readString(filepath.Join(mnt, tc.path))
		if !errors.Is(err, tc.err) || (tc.err == nil && got != tc.want) {
			t.Errorf("read %s = %q, %v; want %q, %v", tc.path, got, err, tc.want, tc.err)
		}
	}
}

func TestReadFileData(t *testing.T) {
	t.Parallel()
	big := rpRandom(1, 3<<20+7)
	low := rpRandom(2, 1<<20)
	mnt, _ := rpMountRO(t, []tree{
		{"empty": file(""), "one": file("1"), "page": file(string(rpRandom(3, 4096))), "big": file(string(big))},
		{"low": file(string(low)), "big": file("hidden")},
	})
	for name, wantData := range map[string][]byte{"big": big, "low": low, "one": []byte("1"), "empty": nil, "page": rpRandom(3, 4096)} {
		p := filepath.Join(mnt, name)
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, wantData) {
			t.Errorf("read %s: %d bytes, %v; want %d bytes of the top layer", name, len(got), err, len(wantData))
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range []int64{0, 1, 4095, 4096, 4097, 1 << 20, int64(len(wantData)) - 1, int64(len(wantData)), int64(len(wantData)) + 100} {
			if off < 0 {
				continue
			}
			buf := make([]byte, 9000)
			n, err := f.ReadAt(buf, off)
			if err != nil && err != io.EOF {
				t.Errorf("pread %s at %d: %v", name, off, err)
			}
			var want []byte
			if off < int64(len(wantData)) {
				want = wantData[off:min(int64(len(wantData)), off+9000)]
			}
			if !bytes.Equal(buf[:n], want) {
				t.Errorf("pread %s at %d: %d bytes differ from the layer's %d", name, off, n, len(want))
			}
		}
		f.Close()
	}

	// mmap of a lower file, shared and private.
	for _, tc := range []struct {
		name  string
		flags int
	}{{"MAP_SHARED", unix.MAP_SHARED}, {"MAP_PRIVATE", unix.MAP_PRIVATE}} {
		for file, wantData := range map[string][]byte{"big": big, "low": low} {
			f, err := os.Open(filepath.Join(mnt, file))
			if err != nil {
				t.Fatal(err)
			}
			m, err := syscall.Mmap(int(f.Fd()), 0, len(wantData), syscall.PROT_READ, tc.flags)
			f.Close() // the mapping keeps the file
			if err != nil {
				t.Errorf("mmap %s %s: %v", tc.name, file, err)
				continue
			}
			if !bytes.Equal(m, wantData) {
				t.Errorf("mmap %s %s: contents differ from the layer", tc.name, file)
			}
			if err := syscall.Munmap(m); err != nil {
				t.Errorf("munmap: %v", err)
			}
		}
	}
}

func TestReadSparse(t *testing.T) {
	t.Parallel()
	const size = 64 << 20
	chunks := map[int64]string{0: "head", 16 << 20: "middle", 40<<20 + 123: "odd", size - 4: "tail"}
	mnt, dirs := rpMountRO(t, []tree{
		{"top": file("t")},
		{"sp": sparse(size, chunks), "hole-only": sparse(8<<20, nil)},
	})
	for _, name := range []string{"sp", "hole-only"} {
		lowerPath, mntPath := filepath.Join(dirs[1], name), filepath.Join(mnt, name)
		lst, mst := rpLstat(t, lowerPath), rpLstat(t, mntPath)
		if mst.Size != lst.Size || mst.Blocks != lst.Blocks {
			t.Errorf("%s: size %d blocks %d, want the layer's size %d blocks %d", name, mst.Size, mst.Blocks, lst.Size, lst.Blocks)
		}
		wantSum, err := fileSHA256(lowerPath)
		if err != nil {
			t.Fatal(err)
		}
		if gotSum, err := fileSHA256(mntPath); err != nil || gotSum != wantSum {
			t.Errorf("%s: content differs from the layer's (%v)", name, err)
		}
		lf, err := os.Open(lowerPath)
		if err != nil {
			t.Fatal(err)
		}
		mf, err := os.Open(mntPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range []int64{0, 1, 4096, 1 << 20, 16<<20 - 1, 16 << 20, 16<<20 + 4096, 40 << 20, size - 4096, size - 1, size, size + 1} {
			for _, whence := range []int{unix.SEEK_DATA, unix.SEEK_HOLE} {
				want, wantErr := unix.Seek(int(lf.Fd()), off, whence)
				got, gotErr := unix.Seek(int(mf.Fd()), off, whence)
				if got != want || gotErr != wantErr {
					what := map[int]string{unix.SEEK_DATA: "SEEK_DATA", unix.SEEK_HOLE: "SEEK_HOLE"}[whence]
					t.Errorf("%s: lseek(%d, %s) = %d, %v; the layer says %d, %v", name, off, what, got, gotErr, want, wantErr)
				}
			}
		}
		lf.Close()
		mf.Close()
	}
	f, err := os.Open(filepath.Join(mnt, "sp"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off, data := range chunks {
		buf := make([]byte, len(data))
		if n, err := f.ReadAt(buf, off); n != len(data) || string(buf) != data {
			t.Errorf("sp at %d: %q, %v; want %q", off, buf[:n], err, data)
		}
	}
}

// TestReadHugeSparse reads a file larger than 4 GiB: offsets past 32 bits
// must survive every layer of the read path.
func TestReadHugeSparse(t *testing.T) {
	t.Parallel()
	const size = 6 << 30
	chunks := map[int64]string{0: "start", 4<<30 - 2: "across 4G", 5<<30 + 7: "past 5G", size - 3: "end"}
	// Not rpMountRO: checksumming 6 GiB of holes twice would dominate.
	dirs := []string{t.TempDir(), t.TempDir()}
	writeTree(t, dirs[0], tree{"huge": sparse(size, chunks)})
	writeTree(t, dirs[1], tree{"huge": file("hidden")})
	mnt := mountUnion(t, "-l", dirs[0], "-l", dirs[1])
	st := rpLstat(t, filepath.Join(mnt, "huge"))
	if st.Size != size {
		t.Fatalf("size %d, want %d", st.Size, size)
	}
	f, err := os.Open(filepath.Join(mnt, "huge"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off, data := range chunks {
		buf := make([]byte, len(data))
		if n, err := f.ReadAt(buf, off); n != len(data) || string(buf) != data {
			t.Errorf("pread at %d: %q, %v; want %q", off, buf[:n], err, data)
		}
	}
	lf, err := os.Open(filepath.Join(dirs[0], "huge"))
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	for _, off := range []int64{4096, 4<<30 - 4096, 4 << 30, 5 << 30, 5<<30 + 4096} {
		want, wantErr := unix.Seek(int(lf.Fd()), off, unix.SEEK_DATA)
		got, gotErr := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if got != want || gotErr != wantErr {
			t.Errorf("lseek(%d, SEEK_DATA) = %d, %v; the layer says %d, %v", off, got, gotErr, want, wantErr)
		}
	}
	m, err := syscall.Mmap(int(f.Fd()), 5<<30, 4096, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap at 5 GiB: %v", err)
	}
	defer syscall.Munmap(m)
	if string(m[7:7+len("past 5G")]) != "past 5G" {
		t.Errorf("mmap at 5 GiB: %q, want %q at offset 7", m[:16], "past 5G")
	}
}

// TestReadConcurrent reads, lists and stats from many goroutines at once:
// the server must answer every request right under load.
func TestReadConcurrent(t *testing.T) {
	t.Parallel()
	layers := make([]tree, 8)
	for i := range layers {
		layers[i] = tree{}
		for j := range 40 {
			layers[i][fmt.Sprintf("d%d/f%02d", j%4, j)] = file(fmt.Sprintf("layer %d file %d", i, j))
			layers[i][fmt.Sprintf("own%d/f%02d", i, j)] = file(strings.Repeat(fmt.Sprint(i), 1000+j))
		}
	}
	mnt, dirs := rpMountRO(t, layers)
	want, _ := rpExpected(t, dirs)
	paths := slices.Sorted(maps.Keys(want))
	errs := make(chan error, 64)
	done := make(chan struct{})
	for w := range 16 {
		go func() {
			defer func() { done <- struct{}{} }()
			for round := range 5 {
				for i := range paths {
					p := paths[(i+w*7+round)%len(paths)]
					n := want[p]
					full := filepath.Join(mnt, p)
					var err error
					switch n.Type {
					case "dir":
						_, err = os.ReadDir(full)
					case "file":
						var sum string
						if sum, err = fileSHA256(full); err == nil && sum != n.SHA256 {
							err = fmt.Errorf("content differs from the topmost layer's")
						}
					}
					if err != nil {
						select {
						case errs <- fmt.Errorf("%s: %w", p, err):
						default:
						}
						return
					}
				}
			}
		}()
	}
	for range 16 {
		<-done
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// ---------------------------------------------------------------------------
// xattrs, statfs, access, special files

func TestReadXattrs(t *testing.T) {
	t.Parallel()
	bin := string([]byte{0, 1, 2, 0xff, 0xfe, '\n', 0})
	bigVal := strings.Repeat("v", 4000)
	multi := withXattr(withXattr(withXattr(file("m"), "user.a", "1"), "user.b", "2"), "user.c", "")
	layers := []tree{
		{
			"f0":    withXattr(file("f0"), "user.where", "top"),
			"d/":    withXattr(dir(0o755), "user.dir", "top"),
			"d/in":  file("in"),
			"bin":   withXattr(file(""), "user.bin", bin),
			"big":   withXattr(file(""), "user.big", bigVal),
			"multi": multi,
			"none":  file("no xattrs"),
		},
		{
			"f0":      withXattr(file("f0 hidden"), "user.where", "bottom"),
			"d/":      withXattr(dir(0o755), "user.lowdir", "hidden: the top dir's attrs win"),
			"d/low":   withXattr(file("low"), "user.where", "bottom"),
			"f1":      withXattr(file("f1"), "user.where", "bottom"),
			"dlow/":   withXattr(dir(0o755), "user.only", "bottom"),
			"none":    withXattr(file("hidden"), "user.hidden", "x"),
			"symlink": symlink("f1"),
		},
	}
	if !xattrsSupported(t, t.TempDir()) {
		skipOrFail(t, "no user xattrs on the temp dir's filesystem")
	}
	mnt, _ := rpMountRO(t, layers)
	user := func(name string) bool { return strings.HasPrefix(name, "user.") }
	for p, want := range map[string]map[string]string{
		"f0":    {"user.where": "top"},
		"d":     {"user.dir": "top"},
		"d/low": {"user.where": "bottom"},
		"bin":   {"user.bin": bin},
		"big":   {"user.big": bigVal},
		"multi": {"user.a": "1", "user.b": "2", "user.c": ""},
		"f1":    {"user.where": "bottom"},
		"dlow":  {"user.only": "bottom"},
		"none":  nil,
		"d/in":  nil,
	} {
		got, err := readXattrs(filepath.Join(mnt, p), user)
		if err != nil || !maps.Equal(got, want) {
			t.Errorf("user xattrs of %s = %q, %v; want %q", p, got, err, want)
		}
	}

	f0 := filepath.Join(mnt, "f0")
	if _, err := unix.Lgetxattr(f0, "user.missing", make([]byte, 10)); !errors.Is(err, unix.ENODATA) {
		t.Errorf("getxattr of a missing name: %v, want ENODATA", err)
	}
	if n, err := unix.Lgetxattr(filepath.Join(mnt, "big"), "user.big", nil); err != nil || n != len(bigVal) {
		t.Errorf("getxattr size query: %d, %v; want %d", n, err, len(bigVal))
	}
	if _, err := unix.Lgetxattr(f0, "user.where", make([]byte, 1)); !errors.Is(err, unix.ERANGE) {
		t.Errorf("getxattr into a too small buffer: %v, want ERANGE", err)
	}
	if _, err := unix.Llistxattr(filepath.Join(mnt, "multi"), make([]byte, 3)); !errors.Is(err, unix.ERANGE) {
		t.Errorf("listxattr into a too small buffer: %v, want ERANGE", err)
	}
	// Through a symlink: getxattr follows it, lgetxattr does not.
	val := make([]byte, 64)
	if n, err := unix.Getxattr(filepath.Join(mnt, "symlink"), "user.where", val); err != nil || string(val[:n]) != "bottom" {
		t.Errorf("getxattr through symlink -> f1: %q, %v; want %q", val[:max(n, 0)], err, "bottom")
	}
	if _, err := unix.Lgetxattr(filepath.Join(mnt, "symlink"), "user.where", val); !errors.Is(err, unix.ENODATA) {
		t.Errorf("lgetxattr of the symlink itself: %v, want ENODATA", err)
	}
}

// TestReadXattrsHidePrivate checks that overlayfs's own markers in a layer
// (an opaque directory) are obeyed and not shown as xattrs, as the kernel
// hides trusted.overlay.*.
func TestReadXattrsHidePrivate(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	mnt, _ := rpMountRO(t, []tree{
		{"o/": withXattr(opaqueDir(0o755), "user.kept", "1"), "o/new": file("new")},
		{"o/old": file("hidden by the opaque dir")},
	})
	all, err := readXattrs(filepath.Join(mnt, "o"), func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	for name := range all {
		if strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.") {
			t.Errorf("o shows the private xattr %s", name)
		}
	}
	if all["user.kept"] != "1" {
		t.Errorf("o xattrs = %q, want user.kept=1 among them", all)
	}
	if got, err := listDir(filepath.Join(mnt, "o")); err != nil || got != "new" {
		t.Errorf("readdir o = %q, %v; want only %q (opaque)", got, err, "new")
	}
}

func TestReadStatfs(t *testing.T) {
	t.Parallel()
	mnt, dirs := rpMountRO(t, []tree{{"a": file("a")}, {"b": file("b")}})
	var got, layer unix.Statfs_t
	if err := unix.Statfs(mnt, &got); err != nil {
		t.Fatalf("statfs %s: %v", mnt, err)
	}
	if err := unix.Statfs(dirs[0], &layer); err != nil {
		t.Fatal(err)
	}
	const fuseSuperMagic = 0x65735546
	if got.Type != fuseSuperMagic {
		t.Errorf("f_type = %#x, want FUSE_SUPER_MAGIC %#x", got.Type, fuseSuperMagic)
	}
	if got.Blocks*uint64(got.Frsize) != layer.Blocks*uint64(layer.Frsize) {
		t.Errorf("total size %d x %d, want the layer filesystem's %d x %d", got.Blocks, got.Frsize, layer.Blocks, layer.Frsize)
	}
	if got.Bsize <= 0 || got.Namelen != layer.Namelen || got.Files != layer.Files {
		t.Errorf("statfs = %+v, want bsize > 0 and namelen, files of the layer's %+v", got, layer)
	}
	if got.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("f_flags %#x lack ST_RDONLY on a read-only mount", got.Flags)
	}
	var sub unix.Statfs_t
	if err := unix.Statfs(filepath.Join(mnt, "b"), &sub); err != nil || sub.Blocks != got.Blocks {
		t.Errorf("statfs of a file from the bottom layer: %+v, %v; want the same answer as the root", sub, err)
	}
}

func TestReadAccess(t *testing.T) {
	t.Parallel()
	mnt, _ := rpMountRO(t, []tree{
		{"r": fileMode("r", 0o644), "x": fileMode("x", 0o755), "d/": dir(0o755)},
		{"none": fileMode("n", 0o000), "lowx": fileMode("x", 0o711), "d/in": file("in")},
	})
	root := os.Geteuid() == 0
	for _, tc := range []struct {
		path     string
		mode     uint32
		want     error
		rootOnly bool
	}{
		{"r", unix.F_OK, nil, false},
		{"r", unix.R_OK, nil, false},
		{"r", unix.W_OK, unix.EROFS, false},
		{"r", unix.R_OK | unix.W_OK, unix.EROFS, false},
		{"r", unix.X_OK, unix.EACCES, false},
		{"x", unix.X_OK, nil, false},
		{"x", unix.R_OK | unix.X_OK, nil, false},
		{"x", unix.W_OK, unix.EROFS, false},
		{"lowx", unix.X_OK, nil, false},
		{"lowx", unix.W_OK, unix.EROFS, false},
		{"none", unix.R_OK, nil, true}, // root reads without permission bits
		{"none", unix.X_OK, unix.EACCES, true},
		{"none", unix.W_OK, unix.EROFS, true},
		{"d", unix.R_OK | unix.X_OK, nil, false},
		{"d", unix.W_OK, unix.EROFS, false},
		{"d/in", unix.W_OK, unix.EROFS, false},
		{".", unix.W_OK, unix.EROFS, false},
		{"missing", unix.F_OK, unix.ENOENT, false},
		{"r/x", unix.F_OK, unix.ENOTDIR, false},
	} {
		if tc.rootOnly && !root {
			continue
		}
		err := unix.Access(filepath.Join(mnt, tc.path), tc.mode)
		if !errors.Is(err, tc.want) {
			t.Errorf("access(%s, %#o) = %v, want %v", tc.path, tc.mode, err, tc.want)
		}
	}
}

func TestReadSpecialFiles(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	top, bottom := t.TempDir(), t.TempDir()
	writeTree(t, top, tree{"p": fifo(), "c": chardev(1, 3), "dev/tty-like": chardev(4, 64)})
	writeTree(t, bottom, tree{"p": file("hidden"), "bottom-fifo": fifo(), "dev/null-like": chardev(1, 3)})
	if err := unix.Mknod(filepath.Join(bottom, "blk"), unix.S_IFBLK|0o640, int(unix.Mkdev(7, 9))); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(bottom, "sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	rpCheckUntouched(t, []string{top, bottom})
	mnt := mountUnion(t, "-l", top+":"+bottom)

	for _, tc := range []struct {
		path, typ, rdev string
		layer           string
	}{
		{"p", "fifo", "", top},
		{"bottom-fifo", "fifo", "", bottom},
		{"c", "chardev", "1:3", top},
		{"dev/tty-like", "chardev", "4:64", top},
		{"dev/null-like", "chardev", "1:3", bottom},
		{"blk", "blockdev", "7:9", bottom},
		{"sock", "socket", "", bottom},
	} {
		st := rpLstat(t, filepath.Join(mnt, tc.path))
		src := rpLstat(t, filepath.Join(tc.layer, tc.path))
		if got := fileType(st.Mode); got != tc.typ || st.Mode != src.Mode {
			t.Errorf("%s: %s mode %o, want %s mode %o", tc.path, got, st.Mode, tc.typ, src.Mode)
		}
		if tc.rdev != "" {
			if got := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)); got != tc.rdev {
				t.Errorf("%s: rdev %s, want %s", tc.path, got, tc.rdev)
			}
		}
		dfd := rpOpenDir(t, filepath.Join(mnt, path.Dir(tc.path)))
		for _, e := range rpGetdents(t, dfd, 4096, -1) {
			if e.name == path.Base(tc.path) && e.typ != rpDirentType(st.Mode) {
				t.Errorf("%s: d_type %d, want %d", tc.path, e.typ, rpDirentType(st.Mode))
			}
		}
	}

	// A fifo works as a fifo, even on a read-only mount: the pipe lives in
	// the kernel, not in the filesystem.
	fd, err := unix.Open(filepath.Join(mnt, "p"), unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open fifo p O_RDWR: %v", err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte("through the pipe")); err != nil {
		t.Errorf("write fifo: %v", err)
	}
	buf := make([]byte, 64)
	if n, err := unix.Read(fd, buf); err != nil || string(buf[:n]) != "through the pipe" {
		t.Errorf("read fifo: %q, %v", buf[:max(n, 0)], err)
	}
}

// ---------------------------------------------------------------------------
// Inode numbers

func rpInodeLayers() []tree {
	return []tree{
		{"a": file("a"), "m/": dir(0o755), "m/p": file("p"), "m/deep/x": file("x"), "h1": file("h"), "sub/h2": hardlink("h1"), "l": symlink("a")},
		{"a": file("hidden"), "b": file("b"), "m/q": file("q"), "m/deep/y": file("y"), "lh1": file("lh"), "lh2": hardlink("lh1"), "only/dir/f": file("f")},
	}
}

func TestReadInodes(t *testing.T) {
	t.Parallel()
	mnt, _ := rpMountRO(t, rpInodeLayers())
	rpCheckInodes(t, mnt, [][]string{{"h1", "sub/h2"}, {"lh1", "lh2"}})
}

// TestReadInodesAcrossFilesystems puts each layer on its own fresh tmpfs,
// whose inode numbers start at the same value: the union must still give
// distinct files distinct numbers.
func TestReadInodesAcrossFilesystems(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	layers := rpInodeLayers()
	dirs := make([]string, len(layers))
	layerOf := map[uint64]int{} // raw inode number -> bit set of layers using it
	for i, tr := range layers {
		dirs[i] = filepath.Join(t.TempDir(), "tmpfs")
		cliTmpfs(t, dirs[i])
		writeTree(t, dirs[i], tr)
		for _, ino := range rpInodes(t, dirs[i]) {
			layerOf[ino] |= 1 << i
		}
	}
	collisions := 0
	for _, set := range layerOf {
		if set == 3 {
			collisions++
		}
	}
	t.Logf("%d raw inode numbers are used in both tmpfs layers", collisions)
	rpCheckUntouched(t, dirs)
	mnt := mountUnion(t, "-l", strings.Join(dirs, ":"))
	rpCheckInodes(t, mnt, [][]string{{"h1", "sub/h2"}, {"lh1", "lh2"}})
}

// rpCheckInodes checks mnt's inode numbers: distinct except for the given
// hard link groups, equal in readdir and lstat, and stable across a drop
// of the kernel's caches.
func rpCheckInodes(t *testing.T, mnt string, links [][]string) {
	t.Helper()
	before := rpInodes(t, mnt)
	linked := map[string]bool{}
	for _, g := range links {
		for _, p := range g[1:] {
			linked[p] = true
			if before[p] != before[g[0]] {
				t.Errorf("hard links %s and %s: st_ino %d and %d, want equal", g[0], p, before[g[0]], before[p])
			}
		}
	}
	owner := map[uint64]string{}
	for _, p := range slices.Sorted(maps.Keys(before)) {
		if linked[p] {
			continue
		}
		if other, dup := owner[before[p]]; dup {
			t.Errorf("%s and %s share st_ino %d", other, p, before[p])
		}
		owner[before[p]] = p
	}

	// d_ino from getdents is the st_ino of the entry, "." and ".." included.
	for p, ino := range before {
		st := rpLstat(t, filepath.Join(mnt, p))
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		fd := rpOpenDir(t, filepath.Join(mnt, p))
		for _, e := range rpGetdents(t, fd, 4096, -1) {
			var want uint64
			switch e.name {
			case ".":
				want = ino
			case "..":
				if p == "." {
					continue // the mountpoint's parent: outside the union
				}
				want = before[path.Dir(p)]
			default:
				want = before[path.Join(p, e.name)]
			}
			if e.ino != want {
				t.Errorf("readdir %s: %s has d_ino %d, lstat says %d", p, e.name, e.ino, want)
			}
		}
	}

	if os.Geteuid() != 0 {
		skipOrFail(t, "dropping the kernel caches needs root")
	}
	for range 2 {
		rpDropCaches(t)
		after := rpInodes(t, mnt)
		for p, ino := range before {
			if after[p] != ino {
				t.Errorf("%s: st_ino %d after dropping caches, was %d", p, after[p], ino)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// The read-only mount

func TestReadOnlyEROFS(t *testing.T) {
	t.Parallel()
	layers := []tree{
		{"f": file("f"), "d/": dir(0o755), "d/g": file("g"), "empty/": dir(0o755), "l": symlink("f"), "x": withXattr(file("x"), "user.k", "v")},
		{"low": file("low"), "lowdir/h": file("h")},
	}
	for _, tc := range []struct {
		name  string
		upper bool // mount with an upper and -o ro
	}{{"no upper", false}, {"upper with -o ro", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dirs := make([]string, len(layers))
			for i, tr := range layers {
				dirs[i] = t.TempDir()
				writeTree(t, dirs[i], tr)
			}
			args := []string{"-l", strings.Join(dirs, ":")}
			upper := t.TempDir()
			if tc.upper {
				args = append(args, "-u", upper, "-o", "ro")
			}
			rpCheckUntouched(t, dirs)
			upperSums := checksumTree(t, upper, skipStateDir())
			delete(upperSums, ".")
			mnt := mountUnion(t, args...)
			view := snapshot(t, mnt)
			rpAssertAllEROFS(t, mnt)
			assertSameTree(t, view, snapshot(t, mnt))

			umountUnion(t, mnt)
			after := checksumTree(t, upper, skipStateDir())
			delete(after, ".")
			if diffs := diffChecksums(upperSums, after); len(diffs) > 0 {
				t.Errorf("upper changed by a read-only mount:\n%s", formatDiffs(diffs))
			}
		})
	}
}

func rpAssertAllEROFS(t *testing.T, mnt string) {
	t.Helper()
	p := func(rel string) string { return filepath.Join(mnt, rel) }
	open := func(rel string, flags int) func() error {
		return func() error {
			fd, err := unix.Open(p(rel), flags|unix.O_CLOEXEC, 0o644)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(0), unix.NsecToTimespec(0)}
	for _, op := range []struct {
		name string
		fn   func() error
	}{
		{"create", open("new", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL)},
		{"create in subdir", open("d/new", unix.O_WRONLY|unix.O_CREAT)},
		{"create in lower dir", open("lowdir/new", unix.O_RDWR|unix.O_CREAT)},
		{"open O_CREAT existing", open("f", unix.O_WRONLY|unix.O_CREAT)},
		{"open O_WRONLY", open("f", unix.O_WRONLY)},
		{"open O_RDWR lower", open("low", unix.O_RDWR)},
		{"open O_APPEND", open("d/g", unix.O_WRONLY|unix.O_APPEND)},
		{"open O_RDONLY|O_TRUNC", open("f", unix.O_RDONLY|unix.O_TRUNC)},
		{"mkdir", func() error { return unix.Mkdir(p("newdir"), 0o755) }},
		{"mkdir in lower dir", func() error { return unix.Mkdir(p("lowdir/newdir"), 0o755) }},
		{"unlink", func() error { return unix.Unlink(p("f")) }},
		{"unlink lower", func() error { return unix.Unlink(p("lowdir/h")) }},
		{"unlink symlink", func() error { return unix.Unlink(p("l")) }},
		{"rmdir", func() error { return unix.Rmdir(p("empty")) }},
		{"rename file", func() error { return unix.Rename(p("f"), p("f2")) }},
		{"rename over", func() error { return unix.Rename(p("f"), p("low")) }},
		{"rename dir", func() error { return unix.Rename(p("d"), p("d2")) }},
		{"chmod", func() error { return unix.Chmod(p("f"), 0o600) }},
		{"chmod dir", func() error { return unix.Chmod(p("lowdir"), 0o700) }},
		{"chown", func() error { return unix.Lchown(p("f"), os.Geteuid(), os.Getegid()) }},
		{"utimes", func() error { return unix.UtimesNanoAt(unix.AT_FDCWD, p("f"), ts, 0) }},
		{"truncate", func() error { return unix.Truncate(p("f"), 0) }},
		{"truncate lower", func() error { return unix.Truncate(p("low"), 100) }},
		{"setxattr", func() error { return unix.Lsetxattr(p("x"), "user.k", []byte("w"), 0) }},
		{"setxattr new", func() error { return unix.Lsetxattr(p("f"), "user.new", []byte("1"), 0) }},
		{"removexattr", func() error { return unix.Lremovexattr(p("x"), "user.k") }},
		{"link", func() error { return unix.Link(p("f"), p("f-link")) }},
		{"symlink", func() error { return unix.Symlink("f", p("new-symlink")) }},
		{"mknod fifo", func() error { return unix.Mkfifo(p("new-fifo"), 0o644) }},
		{"mknod file", func() error { return unix.Mknod(p("new-node"), unix.S_IFREG|0o644, 0) }},
	} {
		if err := op.fn(); !errors.Is(err, unix.EROFS) {
			t.Errorf("%s on a read-only mount: %v, want EROFS", op.name, err)
		}
	}
}

// ---------------------------------------------------------------------------
// A former upper as a lower

// TestReadFormerUpperAsLower makes changes through a mount with an upper,
// then stacks that upper read-only on the same lower: deletions, the
// opaque directory and the renamed directory must hold, and the upper's
// state directory must not show.
func TestReadFormerUpperAsLower(t *testing.T) {
	t.Parallel()
	lower, upper := t.TempDir(), t.TempDir()
	writeTree(t, lower, tree{
		"kept":      file("kept"),
		"gone":      file("deleted through the mount"),
		"gone-dir/": dir(0o755),
		"od/a":      file("a"),
		"od/sub/b":  file("b"),
		"rd/x":      file("x"),
		"rd/sub/y":  file("y"),
		"mv":        file("moved file"),
		"edit":      file("old"),
	})
	rpCheckUntouched(t, []string{lower})

	mnt := mountUnion(t, "-l", lower, "-u", upper, "-w", t.TempDir())
	p := func(rel string) string { return filepath.Join(mnt, rel) }
	for _, step := range []struct {
		name string
		fn   func() error
	}{
		{"unlink gone", func() error { return unix.Unlink(p("gone")) }},
		{"rmdir gone-dir", func() error { return unix.Rmdir(p("gone-dir")) }},
		{"unlink od/sub/b", func() error { return unix.Unlink(p("od/sub/b")) }},
		{"rmdir od/sub", func() error { return unix.Rmdir(p("od/sub")) }},
		{"unlink od/a", func() error { return unix.Unlink(p("od/a")) }},
		{"rmdir od", func() error { return unix.Rmdir(p("od")) }},
		{"mkdir od", func() error { return unix.Mkdir(p("od"), 0o755) }},
		{"create od/new", func() error { return os.WriteFile(p("od/new"), []byte("new"), 0o644) }},
		{"rename rd rd2", func() error { return unix.Rename(p("rd"), p("rd2")) }},
		{"rename mv mv2", func() error { return unix.Rename(p("mv"), p("mv2")) }},
		{"write edit", func() error { return os.WriteFile(p("edit"), []byte("new"), 0o644) }},
	} {
		if err := step.fn(); err != nil {
			t.Fatalf("%s through the mount: %v", step.name, err)
		}
	}
	want := map[string]string{
		"kept": "kept", "od/new": "new", "rd2/x": "x", "rd2/sub/y": "y", "mv2": "moved file", "edit": "new",
	}
	wantPaths := []string{".", "edit", "kept", "mv2", "od", "od/new", "rd2", "rd2/sub", "rd2/sub/y", "rd2/x"}
	check := func(t *testing.T, mnt string) map[string]node {
		t.Helper()
		view := snapshot(t, mnt)
		if got := slices.Sorted(maps.Keys(view)); !slices.Equal(got, wantPaths) {
			t.Errorf("paths = %q\nwant %q", got, wantPaths)
		}
		for rel, content := range want {
			if got, err := readString(filepath.Join(mnt, rel)); err != nil || got != content {
				t.Errorf("%s = %q, %v; want %q", rel, got, err, content)
			}
		}
		for _, rel := range []string{"gone", "gone-dir", "od/a", "od/sub", "rd", "rd/x", "mv", stateDirName} {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(mnt, rel), &st); !errors.Is(err, unix.ENOENT) {
				t.Errorf("lstat %s: %v, want ENOENT", rel, err)
			}
		}
		return view
	}
	live := check(t, mnt)
	umountUnion(t, mnt)
	if _, err := os.Stat(filepath.Join(upper, stateDirName)); err != nil {
		t.Fatalf("the upper has no %s dir after the mount: %v", stateDirName, err)
	}

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"read-only U:L", []string{"-l", upper + ":" + lower}},
		{"U:L under a new upper", []string{"-l", upper + ":" + lower, "-u", t.TempDir(), "-w", t.TempDir()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			upperSums := checksumTree(t, upper)
			again := mountUnion(t, tc.args...)
			assertSameTree(t, live, check(t, again))
			umountUnion(t, again)
			assertUnchanged(t, upperSums, upper)
		})
	}
}
