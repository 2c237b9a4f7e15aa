package test

// The oracle: kernel overlayfs is the reference for union semantics. A
// scenario builds the same lower layers twice, runs the same operations on
// a kernel overlay mount and on unionfs, and compares what a user sees:
// the merged tree, which paths are one inode, and the result of every
// operation.

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// overlayOptEscaper escapes a path for an overlayfs mount option. The
// kernel splits the option string on "," and lowerdir on ":", and in both
// a backslash makes the next character literal.
var overlayOptEscaper = strings.NewReplacer(`\`, `\\`, `:`, `\:`, `,`, `\,`)

// mountKernelOverlay mounts kernel overlayfs on mnt, with the lowers in
// overlayfs order (lowers[0] is the topmost), and unmounts it in t.Cleanup.
// With upper == "" the mount is read-only and work is ignored.
func mountKernelOverlay(t testing.TB, lowers []string, upper, work, mnt string) {
	t.Helper()
	requireKernelOverlay(t)
	if len(lowers) == 0 {
		t.Fatal("mountKernelOverlay: no lower layers")
	}
	lowers = slices.Clone(lowers)
	var flags uintptr
	var opts []string
	if upper == "" {
		// Without an upper the kernel wants two lowers; an empty bottom
		// layer changes nothing in the merged view.
		if len(lowers) == 1 {
			lowers = append(lowers, t.TempDir())
		}
		flags = unix.MS_RDONLY
	}
	escaped := make([]string, len(lowers))
	for i, l := range lowers {
		escaped[i] = overlayOptEscaper.Replace(l)
	}
	opts = append(opts, "lowerdir="+strings.Join(escaped, ":"))
	if upper != "" {
		if work == "" {
			t.Fatal("mountKernelOverlay: an upper needs a work dir")
		}
		// index=on keeps hard links one inode across copy-up; it means
		// nothing without an upper, where the kernel warns about it.
		opts = append(opts,
			"upperdir="+overlayOptEscaper.Replace(upper),
			"workdir="+overlayOptEscaper.Replace(work),
			"index=on")
	}
	// redirect_dir=on lets directories be renamed (else EXDEV); xino=on
	// keeps inode numbers unique when layers are on different filesystems.
	opts = append(opts, "redirect_dir=on", "xino=on")
	data := strings.Join(opts, ",")

	if err := unix.Mount("overlay", mnt, "overlay", flags, data); err != nil {
		t.Fatalf("mount -t overlay -o %s %s: %v (dmesg has the kernel's reason)", data, mnt, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount overlay %s: %v (an fd left open?); detaching it", mnt, err)
			if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
				t.Errorf("lazy unmount %s: %v", mnt, err)
			}
		}
	})
}

// mountFunc mounts a union of lowers (topmost first) and upper ("" for a
// read-only union) and returns the mountpoint, unmounted in t.Cleanup.
type mountFunc func(t *testing.T, lowers []string, upper string) string

// kernelOverlayMount is the mountFunc of the reference side.
func kernelOverlayMount(t *testing.T, lowers []string, upper string) string {
	t.Helper()
	work := ""
	if upper != "" {
		work = t.TempDir() // same filesystem as upper: both in $TMPDIR
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mountKernelOverlay(t, lowers, upper, work, mnt)
	return mnt
}

// unionfsMount is the mountFunc for unionfs: `unionfs mount -l L0:L1 [-u U
// -w W] MNT`, with the lowers in the same order as overlayfs's lowerdir.
func unionfsMount(t *testing.T, lowers []string, upper string) string {
	t.Helper()
	for _, l := range lowers {
		if strings.Contains(l, ":") {
			t.Fatalf("lower %q contains ':', the -l list separator", l)
		}
	}
	args := []string{"-l", strings.Join(lowers, ":")}
	if upper != "" {
		args = append(args, "-u", upper, "-w", t.TempDir())
	}
	return mountUnion(t, args...)
}

// scenario is one oracle test case.
type scenario struct {
	name string
	// lowers are the lower layers, topmost first (as in lowerdir=L0:L1).
	lowers []tree
	// readOnly mounts without an upper layer.
	readOnly bool
	// ops runs on the merged view at mnt. It reports every operation whose
	// outcome matters through rec, so both sides' outcomes are compared;
	// it calls t.Fatal only for harness trouble.
	ops func(t *testing.T, mnt string, rec *opRecorder)
}

// sideResult is what one side of the oracle observed.
type sideResult struct {
	tree    map[string]node
	links   map[string][]string
	records []string
}

// runOracle runs sc as subtest sc.name on kernel overlayfs ("kernel") and
// on unionMount ("union"), then reports every difference between them.
func runOracle(t *testing.T, sc scenario, unionMount mountFunc) {
	t.Helper()
	t.Run(sc.name, func(t *testing.T) {
		requireKernelOverlay(t)
		want, ok := runSideSubtest(t, "kernel", sc, kernelOverlayMount)
		if !ok {
			return
		}
		got, ok := runSideSubtest(t, "union", sc, unionMount)
		if !ok {
			return
		}
		if diffs := compareSides(want, got); len(diffs) > 0 {
			t.Errorf("union differs from kernel overlayfs (%d differences):\n%s", len(diffs), formatDiffs(diffs))
		}
	})
}

// runSideSubtest runs one side as a subtest, so that its mounts are gone
// before the next side starts and a failure names its side. ok is false if
// the side failed or skipped; the parent then skips too, or is already
// marked failed.
func runSideSubtest(t *testing.T, name string, sc scenario, mount mountFunc) (res sideResult, ok bool) {
	t.Helper()
	done := false
	passed := t.Run(name, func(t *testing.T) {
		res = runSide(t, sc, mount)
		done = true
	})
	if passed && !done {
		t.Skipf("side %q skipped", name)
	}
	return res, passed && done
}

// runSide builds sc's lowers, mounts them, runs the ops and records what
// the merged view shows. The lowers must come through byte-for-byte: that
// is checked after the unmount.
func runSide(t *testing.T, sc scenario, mount mountFunc) sideResult {
	t.Helper()
	lowers := make([]string, len(sc.lowers))
	sums := make([]map[string]string, len(sc.lowers))
	for i, tr := range sc.lowers {
		lowers[i] = t.TempDir()
		writeTree(t, lowers[i], tr)
		sums[i] = checksumTree(t, lowers[i])
	}
	// Registered before the mount, so it runs after the unmount.
	t.Cleanup(func() {
		for i, l := range lowers {
			assertUnchanged(t, sums[i], l)
		}
	})
	upper := ""
	if !sc.readOnly {
		upper = t.TempDir()
	}
	mnt := mount(t, lowers, upper)
	rec := newOpRecorder(t, mnt)
	if sc.ops != nil {
		sc.ops(t, mnt, rec)
	}
	return sideResult{
		tree:    snapshot(t, mnt),
		links:   hardlinkGroups(t, mnt),
		records: rec.records(),
	}
}

// compareSides lists the differences between the kernel's result (want)
// and the union's (got); nil means the union behaved like the kernel.
func compareSides(want, got sideResult) []string {
	var diffs []string
	for i := range max(len(want.records), len(got.records)) {
		w, g := "(none)", "(none)"
		if i < len(want.records) {
			w = want.records[i]
		}
		if i < len(got.records) {
			g = got.records[i]
		}
		if w != g {
			diffs = append(diffs, fmt.Sprintf("op #%d: kernel %q, union %q", i, w, g))
		}
	}
	for _, d := range diffSnapshots(want.tree, got.tree) {
		diffs = append(diffs, "tree: "+d)
	}
	wantLinks, gotLinks := linkSets(want.links), linkSets(got.links)
	for _, s := range slices.Sorted(maps.Keys(unionKeys(wantLinks, gotLinks))) {
		switch {
		case !gotLinks[s]:
			diffs = append(diffs, "hard links: kernel has one inode for "+s+", union does not")
		case !wantLinks[s]:
			diffs = append(diffs, "hard links: union has one inode for "+s+", kernel does not")
		}
	}
	return diffs
}

func linkSets(groups map[string][]string) map[string]bool {
	sets := make(map[string]bool, len(groups))
	for _, paths := range groups {
		sets[strings.Join(paths, " = ")] = true
	}
	return sets
}

// opRecorder records the outcome of each operation of a scenario, as
// "op -> ok", "op -> ENOENT" or "op -> ok: value", so that both sides'
// lists can be compared line by line. Paths under the mountpoint are
// written as $MNT, since the two sides mount at different places.
type opRecorder struct {
	t   testing.TB
	mnt string

	mu   sync.Mutex
	recs []string
}

func newOpRecorder(t testing.TB, mnt string) *opRecorder {
	return &opRecorder{t: t, mnt: mnt}
}

// do runs fn, records how it ended, and returns its error so the ops can
// branch on it.
func (r *opRecorder) do(op string, fn func() error) error {
	r.t.Helper()
	err := fn()
	r.add(op + " -> " + r.outcome(err))
	return err
}

// observe runs fn and records its result too, for reads whose value
// matters (file content, a directory listing, a stat field).
func (r *opRecorder) observe(op string, fn func() (string, error)) string {
	r.t.Helper()
	val, err := fn()
	rec := op + " -> " + r.outcome(err)
	if err == nil {
		rec += ": " + strings.ReplaceAll(val, r.mnt, "$MNT")
	}
	r.add(rec)
	return val
}

func (r *opRecorder) add(rec string) {
	r.t.Helper()
	r.t.Log(rec)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
}

// outcome names the errno of err; an error without one (a bug in the ops,
// more likely than in the filesystem) is recorded by its text.
func (r *opRecorder) outcome(err error) string {
	if err == nil {
		return "ok"
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			return name
		}
		return fmt.Sprintf("errno %d", int(errno))
	}
	return "error: " + strings.ReplaceAll(err.Error(), r.mnt, "$MNT")
}

func (r *opRecorder) records() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.recs)
}

// ---------------------------------------------------------------------------
// Self-tests: the harness against the kernel alone, so it is known to work
// before unionfs does.

// harnessScenarios exercise copy-up, whiteouts, renames, hard links and
// read-only errors: enough to show the comparison sees what matters.
func harnessScenarios() []scenario {
	return []scenario{
		{
			name: "copy-up and delete",
			lowers: []tree{
				{
					"a/b.txt": file("hello"),
					"a/c":     file("gone soon"),
					"l":       symlink("a/b.txt"),
					"h1":      file("linked"),
					"h2":      hardlink("h1"),
					"x":       withXattr(file("x"), "user.k", "v"),
				},
				{
					"a/b.txt": file("shadowed"),
					"a/d":     file("from the bottom"),
					"e/f":     fileMode("f", 0o640),
				},
			},
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				p := func(rel string) string { return filepath.Join(mnt, rel) }
				rec.do("append a/b.txt", func() error { return appendFile(p("a/b.txt"), " world") })
				rec.do("unlink a/c", func() error { return unix.Unlink(p("a/c")) })
				rec.do("unlink a/c again", func() error { return unix.Unlink(p("a/c")) })
				rec.do("rmdir e (not empty)", func() error { return unix.Rmdir(p("e")) })
				rec.do("chmod e/f 0600", func() error { return unix.Chmod(p("e/f"), 0o600) })
				rec.do("rename a a2", func() error { return unix.Rename(p("a"), p("a2")) })
				rec.observe("readdir a2", func() (string, error) { return listDir(p("a2")) })
				rec.do("stat a", func() error { var st unix.Stat_t; return unix.Lstat(p("a"), &st) })
				rec.do("write h1", func() error { return os.WriteFile(p("h1"), []byte("relinked"), 0o644) })
				rec.observe("read h2", func() (string, error) { return readString(p("h2")) })
				rec.do("link h1 h3", func() error { return unix.Link(p("h1"), p("h3")) })
				rec.do("setxattr x user.k", func() error { return unix.Lsetxattr(p("x"), "user.k", []byte("w"), 0) })
				rec.do("mkdir n", func() error { return unix.Mkdir(p("n"), 0o700) })
				rec.do("symlink s", func() error { return unix.Symlink("a2/d", p("n/s")) })
				rec.observe("readlink l", func() (string, error) { return os.Readlink(p("l")) })
				rec.do("open l (dangling now)", func() error { return readErr(p("l")) })
			},
		},
		{
			name:     "read-only whiteouts",
			readOnly: true,
			lowers: []tree{
				{
					"gone":  overlayWhiteout(),
					"d/":    opaqueDir(0o755),
					"d/new": file("new"),
				},
				{
					"gone":   file("hidden by the whiteout above"),
					"d/old":  file("hidden by the opaque dir above"),
					"kept":   file("kept"),
					"k/":     dir(0o711),
					"k/file": file("deep"),
				},
			},
			ops: func(t *testing.T, mnt string, rec *opRecorder) {
				p := func(rel string) string { return filepath.Join(mnt, rel) }
				rec.do("stat gone", func() error { var st unix.Stat_t; return unix.Lstat(p("gone"), &st) })
				rec.observe("readdir /", func() (string, error) { return listDir(mnt) })
				rec.observe("readdir d", func() (string, error) { return listDir(p("d")) })
				rec.do("create z", func() error { return os.WriteFile(p("z"), nil, 0o644) })
				rec.do("unlink kept", func() error { return unix.Unlink(p("kept")) })
				rec.observe("read k/file", func() (string, error) { return readString(p("k/file")) })
			},
		},
	}
}

func TestOracleHarnessKernelOnly(t *testing.T) {
	requireKernelOverlay(t)
	// The kernel on both sides must agree with itself...
	for _, sc := range harnessScenarios() {
		runOracle(t, sc, kernelOverlayMount)
	}

	// ...and a real difference must be reported, in the tree, the hard
	// links and the op records alike.
	t.Run("difference is caught", func(t *testing.T) {
		lowers := []tree{{"a": file("a"), "b": file("b"), "h": file("h"), "h2": hardlink("h")}}
		base := scenario{lowers: lowers, ops: func(t *testing.T, mnt string, rec *opRecorder) {
			rec.do("remove a", func() error { return os.Remove(filepath.Join(mnt, "a")) })
		}}
		other := scenario{lowers: lowers, ops: func(t *testing.T, mnt string, rec *opRecorder) {
			// Same op names, different effects: what a buggy union does.
			rec.do("remove a", func() error { return os.Remove(filepath.Join(mnt, "missing")) })
			if err := unix.Chmod(filepath.Join(mnt, "b"), 0o600); err != nil {
				t.Fatal(err)
			}
			// Break the hard link the way a naive copy-up would.
			h := filepath.Join(mnt, "h")
			if err := os.Remove(h); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(h, []byte("h"), 0o644); err != nil {
				t.Fatal(err)
			}
		}}
		want, ok := runSideSubtest(t, "kernel", base, kernelOverlayMount)
		if !ok {
			return
		}
		got, ok := runSideSubtest(t, "buggy", other, kernelOverlayMount)
		if !ok {
			return
		}
		diffs := compareSides(want, got)
		for _, expect := range []string{
			`op #0: kernel "remove a -> ok", union "remove a -> ENOENT"`,
			"tree: a: unexpected file",
			"tree: b: perm: want 0644, got 0600",
			"tree: h: nlink: want 2, got 1",
			"hard links: kernel has one inode for h = h2, union does not",
		} {
			if !slices.Contains(diffs, expect) {
				t.Errorf("compareSides missed %q; it said:\n%s", expect, formatDiffs(diffs))
			}
		}
	})
}

// TestOracleHarnessKernelEscapedPaths checks the option escaping: layers
// whose paths hold the overlayfs separators still mount, and a read-only
// union of one lower shows exactly that lower.
func TestOracleHarnessKernelEscapedPaths(t *testing.T) {
	requireKernelOverlay(t)
	lower := filepath.Join(t.TempDir(), `lower,with:odd\chars`)
	if err := os.Mkdir(lower, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTree(t, lower, tree{
		"a/b.txt": file("hello"),
		"d/":      dir(0o1777),
		"l":       symlink("a/b.txt"),
		"h1":      fileMode("x", 0o4755),
		"h2":      hardlink("h1"),
		"p":       fifo(),
		"x":       withXattr(file(""), "user.k", "v"),
	})
	before := checksumTree(t, lower)

	upper := filepath.Join(t.TempDir(), "up,per")
	work := filepath.Join(t.TempDir(), "wo:rk")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ name, upper, work string }{
		{"read-only", "", ""},
		{"with upper", upper, work},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := filepath.Join(t.TempDir(), "m,n:t")
			if err := os.Mkdir(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			mountKernelOverlay(t, []string{lower}, tc.upper, tc.work, mnt)
			if _, mounted := mountedFS(t, mnt); !mounted {
				t.Fatalf("mountedFS(%s) = not mounted", mnt)
			}
			assertSameTree(t, snapshot(t, lower), snapshot(t, mnt))
			if got, want := hardlinkGroups(t, mnt), map[string][]string{"h1": {"h1", "h2"}}; !maps.EqualFunc(got, want, slices.Equal) {
				t.Errorf("hardlinkGroups = %v, want %v", got, want)
			}
		})
	}
	assertUnchanged(t, before, lower)
}

// TestOracleHarnessOpRecorder pins the record format that both sides share.
func TestOracleHarnessOpRecorder(t *testing.T) {
	mnt := t.TempDir()
	rec := newOpRecorder(t, mnt)
	rec.do("ok op", func() error { return nil })
	rec.do("unlink missing", func() error { return os.Remove(filepath.Join(mnt, "missing")) })
	rec.do("plain error", func() error { return fmt.Errorf("bad thing at %s/x", mnt) })
	rec.observe("read", func() (string, error) { return "value in " + mnt, nil })
	rec.observe("read missing", func() (string, error) { return readString(filepath.Join(mnt, "missing")) })
	want := []string{
		"ok op -> ok",
		"unlink missing -> ENOENT",
		"plain error -> error: bad thing at $MNT/x",
		"read -> ok: value in $MNT",
		"read missing -> ENOENT",
	}
	if got := rec.records(); !slices.Equal(got, want) {
		t.Errorf("records:\n got %q\nwant %q", got, want)
	}
}

// ---------------------------------------------------------------------------
// Small operations for scenarios.

func appendFile(p, s string) (err error) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	_, err = f.WriteString(s)
	return err
}

func readString(p string) (string, error) {
	b, err := os.ReadFile(p)
	return string(b), err
}

// readErr opens and reads p, returning only the error.
func readErr(p string) error {
	_, err := os.ReadFile(p)
	return err
}

// listDir returns the sorted names in dir, comma-separated.
func listDir(dir string) (string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	names := make([]string, len(des))
	for i, de := range des {
		names[i] = de.Name()
	}
	return strings.Join(names, ","), nil
}
