package test

// End-to-end tests of the unionfs command line: every argument form, the
// option parser, the daemon and foreground modes, umount, mount(8)
// integration and the refusal of bad input. All of them run the real
// binary and look at the result with plain syscalls and /proc.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ---------------------------------------------------------------------------
// Helpers

// cliStack is three lower layers a, b and c and an upper with its work dir,
// each in its own temp dir. Every layer has "who" (its own name), "only-X",
// "d/X" and, for every other layer Y, a file "pair-XY" (letters sorted)
// holding its own name: which layer wins each pair reveals the stack order.
type cliStack struct {
	a, b, c, upper, work string
}

func newCLIStack(t *testing.T) cliStack {
	t.Helper()
	s := cliStack{a: t.TempDir(), b: t.TempDir(), c: t.TempDir(), upper: t.TempDir(), work: t.TempDir()}
	for name, dir := range map[string]string{"a": s.a, "b": s.b, "c": s.c} {
		writeTree(t, dir, cliLayer(name))
	}
	return s
}

// cliLayer is the content of layer "a", "b" or "c" of a cliStack.
func cliLayer(name string) tree {
	tr := tree{
		"who":          file(name),
		"only-" + name: file(name),
		"d/" + name:    file(name),
	}
	for _, other := range []string{"a", "b", "c"} {
		if other != name {
			tr["pair-"+cliSorted(name, other)] = file(name)
		}
	}
	return tr
}

func cliSorted(x, y string) string {
	if x > y {
		x, y = y, x
	}
	return x + y
}

// cliAssertStackOrder checks that mnt shows exactly the layers in order
// (topmost first): the right winner of every shared file and every
// layer's own files, and nothing from the other layers.
func cliAssertStackOrder(t *testing.T, mnt string, order ...string) {
	t.Helper()
	want := map[string]string{"who": order[0]}
	var wantD []string
	for i, x := range order {
		want["only-"+x] = x
		want["d/"+x] = x
		wantD = append(wantD, x)
		for _, y := range []string{"a", "b", "c"} {
			// x wins against a layer below it or not in the stack.
			if y != x && !slices.Contains(order[:i], y) {
				want["pair-"+cliSorted(x, y)] = x
			}
		}
	}
	for p, content := range want {
		got, err := readString(filepath.Join(mnt, p))
		if err != nil {
			t.Errorf("read %s: %v", p, err)
		} else if got != content {
			t.Errorf("%s = %q, want %q (stack order should be %v)", p, got, content, order)
		}
	}
	var wantRoot []string
	for p := range want {
		if !strings.Contains(p, "/") {
			wantRoot = append(wantRoot, p)
		}
	}
	wantRoot = append(wantRoot, "d")
	slices.Sort(wantRoot)
	slices.Sort(wantD)
	if got, err := listDir(mnt); err != nil || got != strings.Join(wantRoot, ",") {
		t.Errorf("readdir / = %q, %v; want %q", got, err, strings.Join(wantRoot, ","))
	}
	if got, err := listDir(filepath.Join(mnt, "d")); err != nil || got != strings.Join(wantD, ",") {
		t.Errorf("readdir d = %q, %v; want %q", got, err, strings.Join(wantD, ","))
	}
}

// cliNewMountpoint makes an empty directory to mount on, symlink-free.
func cliNewMountpoint(t *testing.T) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	return resolvePath(t, mnt)
}

// cliMountArgs runs the binary with exactly args (no "mount" added), for
// the argument forms mountUnion does not cover, and requires exit 0 and a
// live mount at mnt. The mount is undone when the test ends.
func cliMountArgs(t *testing.T, mnt string, args ...string) cmdResult {
	t.Helper()
	requireFUSE(t)
	res, err := runCommand(commandTimeout, requireBinary(t), args...)
	t.Cleanup(func() {
		if _, mounted := mountedFS(t, mnt); mounted {
			unmountUnion(t, mnt, t.Errorf)
		}
	})
	if err != nil || res.exit != 0 {
		t.Fatalf("unionfs %s: exit %d, err %v\nstderr:\n%s", strings.Join(args, " "), res.exit, err, res.stderr)
	}
	if _, mounted := mountedFS(t, mnt); !mounted {
		t.Fatalf("unionfs %s exited 0 but %s is not mounted\nstderr:\n%s", strings.Join(args, " "), mnt, res.stderr)
	}
	return res
}

// cliMountinfo is one line of /proc/self/mountinfo.
type cliMountinfo struct {
	dev                   string // major:minor
	point, fstype, source string
	mountOpts, superOpts  []string
}

// cliFindMount returns the topmost mount at mnt.
func cliFindMount(t testing.TB, mnt string) (cliMountinfo, bool) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var found cliMountinfo
	ok := false
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if sep < 6 || sep+3 >= len(f) || unescapeMountinfo(f[4]) != mnt {
			continue
		}
		found = cliMountinfo{
			dev:       f[2],
			point:     unescapeMountinfo(f[4]),
			mountOpts: strings.Split(f[5], ","),
			fstype:    unescapeMountinfo(f[sep+1]),
			source:    unescapeMountinfo(f[sep+2]),
			superOpts: strings.Split(f[sep+3], ","),
		}
		ok = true
	}
	return found, ok
}

// cliMountsUnder lists the mount points at or below root.
func cliMountsUnder(t testing.TB, root string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for line := range strings.Lines(string(data)) {
		if point, _, ok := parseMountinfoLine(line); ok && cliHasPathPrefix(point, root) {
			out = append(out, point)
		}
	}
	slices.Sort(out)
	return out
}

func cliHasPathPrefix(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// cliProcs returns the pids of live unionfs processes (running the test's
// binary) with an argument for which match is true. Zombies have no exe
// link and do not count: they have exited.
func cliProcs(t testing.TB, match func(arg string) bool) []int {
	t.Helper()
	bin, err := filepath.EvalSymlinks(requireBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || exe != bin {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		if slices.ContainsFunc(strings.Split(string(cmdline), "\x00"), match) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cliServerPIDs returns the unionfs processes serving (or starting to
// serve) the mountpoint mnt.
func cliServerPIDs(t testing.TB, mnt string) []int {
	t.Helper()
	return cliProcs(t, func(arg string) bool { return arg == mnt })
}

// cliWaitServersExit waits up to timeout for every one of pids to exit
// completely, and fails the test if one does not.
func cliWaitServersExit(t *testing.T, pids []int, timeout time.Duration) {
	t.Helper()
	for _, pid := range pids {
		if !cliWaitExit(pid, timeout) {
			t.Fatalf("server pid %d still running (or stuck exiting) %v after the unmount", pid, timeout)
		}
	}
}

// cliWaitExit waits until every thread of process pid has exited (a
// zombie counts: it holds no files any more) and reports whether it did
// in time. The leader alone is not enough: it turns zombie while another
// thread may still hang closing files.
func cliWaitExit(pid int, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cliExited(pid) {
			return true
		}
	}
	return false
}

// cliTaskStates describes the threads of pid, as "tid:state ...".
func cliTaskStates(pid int) string {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	var out []string
	for _, task := range tasks {
		data, err := os.ReadFile(task)
		if i := bytes.LastIndexByte(data, ')'); err == nil && i > 0 && i+2 < len(data) {
			out = append(out, strings.Split(task, "/")[4]+":"+string(data[i+2]))
		}
	}
	return "threads " + strings.Join(out, " ")
}

func cliExited(pid int) bool {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	for _, task := range tasks {
		data, err := os.ReadFile(task)
		if err != nil {
			continue
		}
		if i := bytes.LastIndexByte(data, ')'); i > 0 && i+2 < len(data) && data[i+2] != 'Z' && data[i+2] != 'X' {
			return false
		}
	}
	return true
}

// cliWaitMounted polls until mnt is a mount point, or the process behind
// done exits, or the timeout passes.
func cliWaitMounted(t *testing.T, mnt string, done <-chan struct{}, timeout time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, mounted := mountedFS(t, mnt); mounted {
			return true
		}
		select {
		case <-done:
			_, mounted := mountedFS(t, mnt)
			return mounted
		case <-time.After(10 * time.Millisecond):
		}
	}
	return false
}

// cliAbortFUSE aborts the FUSE connection of the mount whose device was
// dev ("0:NN"), through fusectl, and lazily detaches mnt: the way out of
// a server wedged in its own mount, so that one bug cannot hang the run.
func cliAbortFUSE(t *testing.T, dev, mnt string) {
	t.Helper()
	major, minor, ok := strings.Cut(dev, ":")
	if ok && major == "0" && os.Geteuid() == 0 {
		const ctl = "/sys/fs/fuse/connections"
		if ents, err := os.ReadDir(ctl); err == nil && len(ents) == 0 {
			unix.Mount("fusectl", ctl, "fusectl", 0, "")
		}
		if err := os.WriteFile(filepath.Join(ctl, minor, "abort"), []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Logf("abort FUSE connection %s: %v", minor, err)
		}
	}
	if _, mounted := mountedFS(t, mnt); mounted {
		if err := forceUnmount(mnt); err != nil {
			t.Logf("lazy unmount %s: %v", mnt, err)
		}
	}
}

// cliAssertOneErrorLine checks the shape of a refusal: exactly one line on
// stderr, starting with "unionfs: ", containing each of want.
func cliAssertOneErrorLine(t *testing.T, stderr string, want ...string) {
	t.Helper()
	if !strings.HasSuffix(stderr, "\n") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("stderr is not exactly one line:\n%s", stderr)
	}
	if !strings.HasPrefix(stderr, "unionfs: ") {
		t.Errorf("stderr does not start with %q: %q", "unionfs: ", stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr %q does not mention %q", strings.TrimSpace(stderr), w)
		}
	}
}

// cliAssertEROFS checks that creating a file in mnt fails with EROFS.
func cliAssertEROFS(t *testing.T, mnt string) {
	t.Helper()
	err := os.WriteFile(filepath.Join(mnt, "new-file"), nil, 0o644)
	if !errors.Is(err, unix.EROFS) {
		t.Errorf("create in read-only mount: %v, want EROFS", err)
	}
}

// cliAssertWritable creates a file through mnt and checks it landed in upper.
func cliAssertWritable(t *testing.T, mnt, upper string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(mnt, "new-file"), []byte("new"), 0o644); err != nil {
		t.Errorf("create through a mount with an upper: %v", err)
		return
	}
	if got, err := readString(filepath.Join(upper, "new-file")); err != nil || got != "new" {
		t.Errorf("upper/new-file = %q, %v; want %q", got, err, "new")
	}
}

// ---------------------------------------------------------------------------
// Argument forms

func TestCLIArgumentForms(t *testing.T) {
	t.Parallel()
	type dirs struct{ a, b, upper, work, mnt string }
	tests := []struct {
		name     string
		args     func(d dirs) []string
		source   string // expected mount source in /proc/self/mountinfo
		writable bool
	}{
		{
			name:   "mount -l -l, read-only",
			args:   func(d dirs) []string { return []string{"mount", "-l", d.a, "-l", d.b, d.mnt} },
			source: "unionfs",
		},
		{
			name: "mount -l a:b -u -w",
			args: func(d dirs) []string {
				return []string{"mount", "-l", d.a + ":" + d.b, "-u", d.upper, "-w", d.work, d.mnt}
			},
			source: "unionfs", writable: true,
		},
		{
			name: "mount long flags",
			args: func(d dirs) []string {
				return []string{"mount", "--lower=" + d.a, "--lower", d.b, "--upper=" + d.upper, "--workdir", d.work, d.mnt}
			},
			source: "unionfs", writable: true,
		},
		{
			name: "mount -u without -w",
			args: func(d dirs) []string {
				return []string{"mount", "-l", d.a + ":" + d.b, "-u", d.upper, d.mnt}
			},
			source: "unionfs", writable: true,
		},
		{
			name: "mount -o",
			args: func(d dirs) []string {
				return []string{"mount", "-o", "lowerdir=" + d.a + ":" + d.b + ",upperdir=" + d.upper + ",workdir=" + d.work, d.mnt}
			},
			source: "unionfs", writable: true,
		},
		{
			name: "mount -o lowerdir only",
			args: func(d dirs) []string {
				return []string{"mount", "-o", "lowerdir=" + d.a + ":" + d.b, d.mnt}
			},
			source: "unionfs",
		},
		{
			name: "podman: -o OPTS MNT",
			args: func(d dirs) []string {
				return []string{"-o", "lowerdir=" + d.a + ":" + d.b + ",upperdir=" + d.upper + ",workdir=" + d.work, d.mnt}
			},
			source: "unionfs", writable: true,
		},
		{
			name: "mount(8): SOURCE MNT -o OPTS",
			args: func(d dirs) []string {
				return []string{"my-source", d.mnt, "-o", "rw,lowerdir=" + d.a + ":" + d.b + ",upperdir=" + d.upper + ",workdir=" + d.work}
			},
			source: "my-source", writable: true,
		},
		{
			name: "mount(8) with helper flags: SOURCE MNT -n -s -v -o OPTS",
			args: func(d dirs) []string {
				return []string{"overlay-src", d.mnt, "-n", "-s", "-v", "-o", "lowerdir=" + d.a + ":" + d.b}
			},
			source: "overlay-src",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newCLIStack(t)
			d := dirs{a: s.a, b: s.b, upper: s.upper, work: s.work, mnt: cliNewMountpoint(t)}
			upperBefore := checksumTree(t, s.upper)
			res := cliMountArgs(t, d.mnt, tc.args(d)...)
			if res.stderr != "" {
				t.Errorf("unexpected stderr:\n%s", res.stderr)
			}
			mi, _ := cliFindMount(t, d.mnt)
			if mi.fstype != "fuse.unionfs" {
				t.Errorf("type in mountinfo = %q, want fuse.unionfs", mi.fstype)
			}
			if mi.source != tc.source {
				t.Errorf("source in mountinfo = %q, want %q", mi.source, tc.source)
			}
			cliAssertStackOrder(t, d.mnt, "a", "b")
			if _, err := os.Lstat(filepath.Join(d.mnt, stateDirName)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("lstat %s in the mount: %v, want ENOENT", stateDirName, err)
			}
			if tc.writable {
				cliAssertWritable(t, d.mnt, s.upper)
			} else {
				cliAssertEROFS(t, d.mnt)
				umountUnion(t, d.mnt)
				assertUnchanged(t, upperBefore, s.upper)
			}
		})
	}
}

// TestCLILowerOrder pins the stack order: leftmost in a:b is topmost, and
// a repeated --lower (or a later -o lowerdir) goes below the earlier ones.
func TestCLILowerOrder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		args  func(s cliStack) []string
		order []string
	}{
		{"-l a -l b -l c", func(s cliStack) []string { return []string{"-l", s.a, "-l", s.b, "-l", s.c} }, []string{"a", "b", "c"}},
		{"-l c -l b -l a", func(s cliStack) []string { return []string{"-l", s.c, "-l", s.b, "-l", s.a} }, []string{"c", "b", "a"}},
		{"-l b:a:c", func(s cliStack) []string { return []string{"-l", s.b + ":" + s.a + ":" + s.c} }, []string{"b", "a", "c"}},
		{"-l c:a -l b", func(s cliStack) []string { return []string{"-l", s.c + ":" + s.a, "-l", s.b} }, []string{"c", "a", "b"}},
		{"-l b -l c:a", func(s cliStack) []string { return []string{"-l", s.b, "-l", s.c + ":" + s.a} }, []string{"b", "c", "a"}},
		{"-o lowerdir=a:c:b", func(s cliStack) []string { return []string{"-o", "lowerdir=" + s.a + ":" + s.c + ":" + s.b} }, []string{"a", "c", "b"}},
		{"-l c -o lowerdir=b:a", func(s cliStack) []string { return []string{"-l", s.c, "-o", "lowerdir=" + s.b + ":" + s.a} }, []string{"c", "b", "a"}},
		{"-l a:b -o lowerdir=c", func(s cliStack) []string { return []string{"-l", s.a + ":" + s.b, "-o", "lowerdir=" + s.c} }, []string{"a", "b", "c"}},
		{"only -l b", func(s cliStack) []string { return []string{"-l", s.b} }, []string{"b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newCLIStack(t)
			mnt := mountUnion(t, tc.args(s)...)
			cliAssertStackOrder(t, mnt, tc.order...)
		})
	}
}

// ---------------------------------------------------------------------------
// Option parsing, through the binary

func TestCLIOptionParsing(t *testing.T) {
	t.Parallel()
	type dirs struct{ lower, upper, work string }
	tests := []struct {
		name string
		// setup may create more directories under root and returns the
		// -o strings (each passed as its own -o).
		opts     func(t *testing.T, root string, d dirs) []string
		writable bool
		// wantWarnings are substrings of the expected stderr lines, one
		// per line; nil means stderr must be empty.
		wantWarnings []string
		// wantMountOpts must appear in the mount's per-mount options.
		wantMountOpts []string
		// wantSuperOpts must appear in the mount's superblock options.
		wantSuperOpts []string
		// wantFile is a file (and content) the merged view must show.
		wantFile [2]string
	}{
		{
			name: "empty entries",
			opts: func(t *testing.T, _ string, d dirs) []string {
				return []string{"lowerdir=" + d.lower + ",,upperdir=" + d.upper + ",,,workdir=" + d.work}
			},
			writable: true,
		},
		{
			name: "leading and trailing commas",
			opts: func(t *testing.T, _ string, d dirs) []string {
				return []string{",lowerdir=" + d.lower + ","}
			},
		},
		{
			name: "a second -o of commas only",
			opts: func(t *testing.T, _ string, d dirs) []string {
				return []string{"lowerdir=" + d.lower, ",,,", ""}
			},
		},
		{
			name: "fstab words",
			opts: func(t *testing.T, _ string, d dirs) []string {
				return []string{"defaults,rw,dev,suid,exec,noatime,auto,noauto,user,users,nofail,_netdev,lowerdir=" + d.lower + ",upperdir=" + d.upper + ",workdir=" + d.work}
			},
			writable: true,
		},
		{
			name: "nosuid nodev noexec reach the kernel",
			opts: func(t *testing.T, _ string, d dirs) []string {
				return []string{"nosuid,nodev,noexec,lowerdir=" + d.lower}
			},
			wantMountOpts: []string{"nosuid", "nodev", "noexec"},
		},
		{
			name: "allow_other default_permissions debug",
			opts: func(t *testing.T, _ string, d dirs) []string {
				return []string{"allow_other,default_permissions,debug,lowerdir=" + d.lower}
			},
			wantSuperOpts: []string{"allow_other", "default_permissions"},
		},
		{
			name: "quoted value with commas",
			opts: func(t *testing.T, _ string, d dirs) []string {
				return []string{`lowerdir=` + d.lower + `,context="system_u:object_r:container_file_t:s0:c1,c2",upperdir=` + d.upper + `,workdir=` + d.work}
			},
			writable: true,
		},
		{
			name: "quoted lowerdir with a comma in the path",
			opts: func(t *testing.T, root string, d dirs) []string {
				odd := filepath.Join(root, "with,comma")
				writeTree(t, odd, tree{"odd": file("comma")})
				return []string{`lowerdir="` + odd + `:` + d.lower + `"`}
			},
			wantFile: [2]string{"odd", "comma"},
		},
		{
			name: `escaped colon \: in lowerdir`,
			opts: func(t *testing.T, root string, d dirs) []string {
				odd := filepath.Join(root, "with:colon")
				writeTree(t, odd, tree{"odd": file("colon")})
				return []string{"lowerdir=" + strings.ReplaceAll(odd, ":", `\:`) + ":" + d.lower}
			},
			wantFile: [2]string{"odd", "colon"},
		},
		{
			name: "unknown option warns once",
			opts: func(t *testing.T, _ string, d dirs) []string {
				return []string{"lowerdir=" + d.lower + ",frobnicate=7,upperdir=" + d.upper + ",workdir=" + d.work}
			},
			writable:     true,
			wantWarnings: []string{"frobnicate"},
		},
		{
			name: "unknown flag option warns once",
			opts: func(t *testing.T, _ string, d dirs) []string {
				return []string{"lowerdir=" + d.lower, "bogusflag"}
			},
			wantWarnings: []string{"bogusflag"},
		},
		{
			name: "ro with an upper",
			opts: func(t *testing.T, _ string, d dirs) []string {
				return []string{"ro,lowerdir=" + d.lower + ",upperdir=" + d.upper + ",workdir=" + d.work}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			d := dirs{lower: filepath.Join(root, "lower"), upper: filepath.Join(root, "upper"), work: filepath.Join(root, "work")}
			writeTree(t, d.lower, tree{"base": file("base"), "sub/x": file("x")})
			for _, p := range []string{d.upper, d.work} {
				if err := os.Mkdir(p, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			upperBefore := checksumTree(t, d.upper, skipStateDir())
			mnt := cliNewMountpoint(t)
			var args []string
			for _, o := range tc.opts(t, root, d) {
				args = append(args, "-o", o)
			}
			res := cliMountArgs(t, mnt, append(append([]string{"mount"}, args...), mnt)...)

			lines := strings.Split(strings.TrimSuffix(res.stderr, "\n"), "\n")
			if res.stderr == "" {
				lines = nil
			}
			if len(lines) != len(tc.wantWarnings) {
				t.Errorf("stderr has %d lines, want %d:\n%s", len(lines), len(tc.wantWarnings), res.stderr)
			}
			for i, w := range tc.wantWarnings {
				if i < len(lines) && (!strings.HasPrefix(lines[i], "unionfs: ") || !strings.Contains(lines[i], w)) {
					t.Errorf("stderr line %q: want a line starting with \"unionfs: \" that names %q", lines[i], w)
				}
			}

			if got, err := readString(filepath.Join(mnt, "base")); err != nil || got != "base" {
				t.Errorf("read base = %q, %v; want %q", got, err, "base")
			}
			if tc.wantFile[0] != "" {
				if got, err := readString(filepath.Join(mnt, tc.wantFile[0])); err != nil || got != tc.wantFile[1] {
					t.Errorf("read %s = %q, %v; want %q", tc.wantFile[0], got, err, tc.wantFile[1])
				}
			}
			mi, _ := cliFindMount(t, mnt)
			for _, o := range tc.wantMountOpts {
				if !slices.Contains(mi.mountOpts, o) {
					t.Errorf("mount options %v lack %q", mi.mountOpts, o)
				}
			}
			for _, o := range tc.wantSuperOpts {
				if !slices.Contains(mi.superOpts, o) {
					t.Errorf("superblock options %v lack %q", mi.superOpts, o)
				}
			}
			if tc.writable {
				cliAssertWritable(t, mnt, d.upper)
			} else {
				cliAssertEROFS(t, mnt)
				umountUnion(t, mnt)
				// The first mount of an upper adds its state dir, which
				// changes the root's mtime and link count; nothing else.
				after := checksumTree(t, d.upper, skipStateDir())
				delete(after, ".")
				delete(upperBefore, ".")
				if diffs := diffChecksums(upperBefore, after); len(diffs) > 0 {
					t.Errorf("upper modified by a read-only mount:\n%s", formatDiffs(diffs))
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Foreground, daemon and umount

func TestCLIForegroundSignals(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			requireFUSE(t)
			s := newCLIStack(t)
			mnt := cliNewMountpoint(t)
			cmd := exec.Command(requireBinary(t), "mount", "-f", "-l", s.a+":"+s.b, "-u", s.upper, mnt)
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stderr, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			var waitErr error
			go func() { waitErr = cmd.Wait(); close(done) }()
			t.Cleanup(func() {
				if _, mounted := mountedFS(t, mnt); mounted {
					if err := forceUnmount(mnt); err != nil {
						t.Errorf("cleanup: %v", err)
					}
				}
				cmd.Process.Kill()
				<-done
			})

			if !cliWaitMounted(t, mnt, done, 30*time.Second) {
				t.Fatalf("unionfs mount -f: %s never became a mount point\noutput:\n%s", mnt, stderr.String())
			}
			select {
			case <-done:
				t.Fatalf("unionfs mount -f exited (%v) while mounted: it must stay in the foreground\noutput:\n%s", waitErr, stderr.String())
			default:
			}
			if pids := cliServerPIDs(t, mnt); !slices.Equal(pids, []int{cmd.Process.Pid}) {
				t.Errorf("processes serving %s: %v, want only the foreground one %d", mnt, pids, cmd.Process.Pid)
			}
			cliAssertStackOrder(t, mnt, "a", "b")
			cliAssertWritable(t, mnt, s.upper)

			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("unionfs mount -f still running 30s after %v\noutput:\n%s", sig, stderr.String())
			}
			if waitErr != nil {
				t.Errorf("unionfs mount -f after %v: %v, want exit 0\noutput:\n%s", sig, waitErr, stderr.String())
			}
			if _, mounted := mountedFS(t, mnt); mounted {
				t.Errorf("%s still mounted after unionfs mount -f exited on %v", mnt, sig)
			}
		})
	}

	// A signal as soon as the mount shows in /proc must still unmount.
	t.Run("SIGTERM as soon as mounted", func(t *testing.T) {
		t.Parallel()
		requireFUSE(t)
		s := newCLIStack(t)
		mnt := cliNewMountpoint(t)
		for round := range 10 {
			cmd := exec.Command(requireBinary(t), "mount", "-f", "-l", s.a, mnt)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			var waitErr error
			go func() { waitErr = cmd.Wait(); close(done) }()
			var mi cliMountinfo
			mounted := false
			for deadline := time.Now().Add(30 * time.Second); !mounted && time.Now().Before(deadline); {
				if mi, mounted = cliFindMount(t, mnt); !mounted {
					time.Sleep(time.Millisecond)
				}
			}
			if !mounted {
				cmd.Process.Kill()
				<-done
				t.Fatalf("round %d: never mounted\n%s", round, out.String())
			}
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				// Wedged: most likely exiting while its own mount holds
				// one of its files. Free it, then report.
				cliAbortFUSE(t, mi.dev, mnt)
				cmd.Process.Kill()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
				}
				t.Fatalf("round %d: unionfs mount -f hung after SIGTERM right after the mount appeared (process stuck; had to abort its FUSE connection)\n%s", round, out.String())
			}
			_, stillMounted := mountedFS(t, mnt)
			if stillMounted {
				cliAbortFUSE(t, mi.dev, mnt)
			}
			if waitErr != nil || stillMounted {
				t.Fatalf("round %d: SIGTERM right after the mount appeared: exit %v, still mounted %v; want exit 0 and unmounted\n%s",
					round, waitErr, stillMounted, out.String())
			}
		}
	})
}

// TestCLIDaemonReturnsWhenLive runs `unionfs mount` with pipes for stdout
// and stderr, as a shell or podman would: the command must return, with
// the mount already answering, and without the server holding the pipes.
func TestCLIDaemonReturnsWhenLive(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	s := newCLIStack(t)
	mnt := cliNewMountpoint(t)
	cmd := exec.Command(requireBinary(t), "mount", "-l", s.a+":"+s.b, mnt)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr // pipes: Wait waits for EOF on both
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if _, mounted := mountedFS(t, mnt); mounted {
			unmountUnion(t, mnt, t.Errorf)
		}
	})

	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		// Unmounting makes the server exit and close whatever it holds.
		if _, mounted := mountedFS(t, mnt); mounted {
			forceUnmount(mnt)
		}
		<-done
		t.Fatalf("unionfs mount did not return within 30s: its stdout/stderr pipes stayed open (held by the server?)")
	}
	// No delay here: the mount must already be live.
	var stMnt, stParent unix.Stat_t
	if err := unix.Stat(mnt, &stMnt); err != nil {
		t.Fatalf("stat %s right after mount returned: %v", mnt, err)
	}
	if err := unix.Stat(filepath.Dir(mnt), &stParent); err != nil {
		t.Fatal(err)
	}
	if stMnt.Dev == stParent.Dev {
		t.Errorf("stat %s right after mount returned: st_dev %d is the parent's: not the union", mnt, stMnt.Dev)
	}
	if got, rerr := readString(filepath.Join(mnt, "only-b")); rerr != nil || got != "b" {
		t.Errorf("read only-b right after mount returned: %q, %v", got, rerr)
	}
	if err != nil {
		t.Fatalf("unionfs mount: %v\nstderr:\n%s", err, stderr.String())
	}
	if stdout.Len() != 0 || stderr.Len() != 0 {
		t.Errorf("unionfs mount printed something on success:\nstdout: %q\nstderr: %q", stdout.String(), stderr.String())
	}
	cliAssertStackOrder(t, mnt, "a", "b")

	// The server runs detached with stdin/stdout/stderr on /dev/null.
	pids := cliServerPIDs(t, mnt)
	if len(pids) != 1 {
		t.Fatalf("processes serving %s: %v, want exactly one", mnt, pids)
	}
	if pids[0] == cmd.Process.Pid {
		t.Errorf("the server is the process that returned")
	}
	for fd := range 3 {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pids[0], fd))
		if err != nil || target != "/dev/null" {
			t.Errorf("server fd %d -> %q, %v; want /dev/null", fd, target, err)
		}
	}
	// It starts with a descriptor table of 1024 slots (growing it later
	// stalls every open in the process for an RCU grace period), and keeps
	// no descriptor of its caller's beyond 0-2 (go test leaves /dev/null
	// open without close-on-exec), nor the placeholder that sized the table.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pids[0]))
	if err != nil {
		t.Fatal(err)
	}
	var fdSize int
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "FDSize:"); ok {
			fdSize, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if fdSize < 1024 {
		t.Errorf("server FDSize %d, want >= 1024", fdSize)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pids[0]))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range fds {
		fd, _ := strconv.Atoi(e.Name())
		target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pids[0], fd))
		if fd > 2 && target == "/dev/null" {
			t.Errorf("server keeps fd %d -> %s from its start", fd, target)
		}
	}
}

// TestCLIServerStaysOutOfItsMount checks, in the server's request log, that
// starting a mount sends no request from the server itself: go-fuse's
// WaitMount opens a file of the new mount (".go-fuse-epoll-hack", its POLL
// probe), and a server killed while it waits on a request of its own can
// never exit, nor its mount be used, until the connection is aborted.
func TestCLIServerStaysOutOfItsMount(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	s := newCLIStack(t)
	mnt := cliNewMountpoint(t)
	logFile := filepath.Join(t.TempDir(), "server.log")
	cliMountArgs(t, mnt, "mount", "--debug", "--log-file", logFile, "-l", s.a, mnt)
	if got, err := readString(filepath.Join(mnt, "only-a")); err != nil || got != "a" {
		t.Fatalf("read only-a: %q, %v", got, err)
	}
	unmountUnion(t, mnt, t.Fatalf)
	data, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	log := string(data)
	if !strings.Contains(log, "only-a") {
		t.Fatalf("the debug log shows no request for only-a; log:\n%s", log)
	}
	if strings.Contains(log, "epoll-hack") {
		t.Errorf("the server sent a request to its own mount at start:\n%s", log)
	}
}

// TestCLIDefaultLogGoesWithMount checks that a server logging to its
// default place (one file per mountpoint in the runtime directory) removes
// that log at a clean unmount when it holds nothing but "mounted" and
// "unmounted", and keeps it when it holds more (here, --debug's requests).
func TestCLIDefaultLogGoesWithMount(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	s := newCLIStack(t)
	for _, debug := range []bool{false, true} {
		mnt := cliNewMountpoint(t)
		args := []string{"mount", "-l", s.a, mnt}
		if debug {
			args = []string{"mount", "--debug", "-l", s.a, mnt}
		}
		cliMountArgs(t, mnt, args...)
		out, _, exit := runUnionfs(t, "inspect", mnt)
		var rec struct{ LogFile string }
		if exit != 0 || json.Unmarshal([]byte(out), &rec) != nil || rec.LogFile == "" {
			t.Fatalf("debug %v: inspect: exit %d, log file %q\n%s", debug, exit, rec.LogFile, out)
		}
		if _, err := os.Stat(rec.LogFile); err != nil {
			t.Fatalf("debug %v: the mount's log: %v", debug, err)
		}
		if got, err := readString(filepath.Join(mnt, "only-a")); err != nil || got != "a" {
			t.Fatalf("debug %v: read only-a: %q, %v", debug, got, err)
		}
		unmountUnion(t, mnt, t.Fatalf)
		data, err := os.ReadFile(rec.LogFile)
		switch {
		case !debug && !errors.Is(err, os.ErrNotExist):
			t.Errorf("after a clean unmount the routine log %s is still there (%v):\n%s", rec.LogFile, err, data)
		case debug && err != nil:
			t.Errorf("the log of a --debug mount is gone after unmount: %v", err)
		case debug && !strings.Contains(string(data), "only-a"):
			t.Errorf("the kept --debug log has no request for only-a:\n%s", data)
		}
		os.Remove(rec.LogFile)
	}
}

// TestCLIManyDirsLowFileLimit creates more directories in the upper than
// the server's descriptor limit allows it to hold open, and a chain of
// nested ones, and uses them all again: the server keeps a descriptor per
// upper directory it knows, and must close some rather than fail with
// EMFILE.
func TestCLIManyDirsLowFileLimit(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	s := newCLIStack(t)
	mnt := cliNewMountpoint(t)
	res, err := runCommand(commandTimeout, "sh", "-c", `ulimit -n 200 && exec "$0" mount -l "$1" -u "$2" -w "$3" "$4"`,
		requireBinary(t), s.a, s.upper, s.work, mnt)
	t.Cleanup(func() {
		if _, mounted := mountedFS(t, mnt); mounted {
			unmountUnion(t, mnt, t.Errorf)
		}
	})
	if err != nil || res.exit != 0 {
		t.Fatalf("unionfs mount under ulimit -n 200: exit %d, %v\nstderr:\n%s", res.exit, err, res.stderr)
	}
	deep := mnt
	for range 60 {
		deep = filepath.Join(deep, "n")
	}
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatalf("mkdir a chain of 60: %v", err)
	}
	if err := os.WriteFile(filepath.Join(deep, "f"), []byte("deep"), 0o644); err != nil {
		t.Fatal(err)
	}
	const dirs = 500
	for i := range dirs {
		d := filepath.Join(mnt, fmt.Sprintf("d%d", i))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("mkdir d%d: %v", i, err)
		}
		if err := os.WriteFile(filepath.Join(d, "f"), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatalf("write d%d/f: %v", i, err)
		}
	}
	for i := range dirs {
		p := filepath.Join(mnt, fmt.Sprintf("d%d", i), "g")
		if err := os.WriteFile(p, []byte("again"), 0o644); err != nil {
			t.Fatalf("write %s after %d others: %v", p, dirs, err)
		}
	}
	if err := os.WriteFile(filepath.Join(deep, "g"), []byte("deep"), 0o644); err != nil {
		t.Errorf("write at the bottom of the chain again: %v", err)
	}
	if got, err := readString(filepath.Join(deep, "f")); err != nil || got != "deep" {
		t.Errorf("read at the bottom of the chain: %q, %v", got, err)
	}
	pids := cliServerPIDs(t, mnt)
	if len(pids) != 1 {
		t.Fatalf("processes serving %s: %v", mnt, pids)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pids[0]))
	if err != nil {
		t.Fatal(err)
	}
	if len(fds) > 150 {
		t.Errorf("the server holds %d descriptors under a limit of 200", len(fds))
	}
	unmountUnion(t, mnt, t.Fatalf)
	for _, i := range []int{0, dirs - 1} {
		if got, err := readString(filepath.Join(s.upper, fmt.Sprintf("d%d", i), "g")); err != nil || got != "again" {
			t.Errorf("upper d%d/g: %q, %v", i, got, err)
		}
	}
}

// TestCLILowFileLimit mounts under descriptor limits too low for the
// server's usual start (a 1024-slot table, see TestCLIDaemonReturnsWhenLive):
// it must still start, with the largest table the limit allows.
func TestCLILowFileLimit(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	bin := requireBinary(t)
	for _, limit := range []int{64, 300} {
		s := newCLIStack(t)
		mnt := cliNewMountpoint(t)
		// ulimit -n sets the hard limit too: the program cannot raise it.
		res, err := runCommand(commandTimeout, "sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" mount -l "$1" "$2"`, limit), bin, s.a+":"+s.b, mnt)
		t.Cleanup(func() {
			if _, mounted := mountedFS(t, mnt); mounted {
				unmountUnion(t, mnt, t.Errorf)
			}
		})
		if err != nil || res.exit != 0 {
			t.Fatalf("limit %d: unionfs mount: exit %d, %v\nstderr:\n%s", limit, res.exit, err, res.stderr)
		}
		if got, err := readString(filepath.Join(mnt, "only-b")); err != nil || got != "b" {
			t.Errorf("limit %d: read only-b: %q, %v", limit, got, err)
		}
		pids := cliServerPIDs(t, mnt)
		if len(pids) != 1 {
			t.Fatalf("limit %d: processes serving %s: %v, want one", limit, mnt, pids)
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pids[0]))
		if err != nil {
			t.Fatal(err)
		}
		if limit == 300 && !strings.Contains(string(status), "FDSize:\t512\n") {
			t.Errorf("limit %d: server status has no FDSize 512 (a placeholder near the limit):\n%s", limit, status)
		}
	}
}

// TestCLIUmountWaitsForServer checks that `unionfs umount` returns only
// once the server process is gone, every thread of it, for both a
// read-only mount and one with an upper (whose state database must be
// flushed and closed). Repeated: the end of a process is a race.
func TestCLIUmountWaitsForServer(t *testing.T) {
	t.Parallel()
	for _, withUpper := range []bool{false, true} {
		t.Run(fmt.Sprintf("upper=%v", withUpper), func(t *testing.T) {
			t.Parallel()
			s := newCLIStack(t)
			args := []string{"-l", s.a + ":" + s.b}
			if withUpper {
				args = append(args, "-u", s.upper, "-w", s.work)
			}
			mnt := cliNewMountpoint(t)
			for round := range 10 {
				mountUnionAt(t, mnt, args...)
				if withUpper {
					name := fmt.Sprintf("file-%d", round)
					if err := os.WriteFile(filepath.Join(mnt, name), []byte(name), 0o644); err != nil {
						t.Fatalf("round %d: %v", round, err)
					}
					// Every earlier round's file is there: state survived.
					for r := range round {
						if got, err := readString(filepath.Join(mnt, fmt.Sprintf("file-%d", r))); err != nil || got != fmt.Sprintf("file-%d", r) {
							t.Errorf("round %d: file-%d = %q, %v", round, r, got, err)
						}
					}
				}
				pids := cliServerPIDs(t, mnt)
				if len(pids) != 1 {
					t.Fatalf("round %d: processes serving %s: %v, want exactly one", round, mnt, pids)
				}
				_, stderr, exit := runUnionfs(t, "umount", mnt)
				if exit != 0 {
					t.Fatalf("round %d: unionfs umount: exit %d\n%s", round, exit, stderr)
				}
				for _, pid := range pids {
					if !cliExited(pid) {
						t.Fatalf("round %d: unionfs umount returned while the server (pid %d) was still running: %s", round, pid, cliTaskStates(pid))
					}
				}
				if _, mounted := mountedFS(t, mnt); mounted {
					t.Fatalf("round %d: %s still mounted after unionfs umount", round, mnt)
				}
			}
		})
	}

	t.Run("not mounted", func(t *testing.T) {
		t.Parallel()
		mnt := cliNewMountpoint(t)
		_, stderr, exit := runUnionfs(t, "umount", mnt)
		if exit == 0 {
			t.Errorf("unionfs umount of a plain directory: exit 0")
		}
		cliAssertOneErrorLine(t, stderr, mnt)
	})
}

// ---------------------------------------------------------------------------
// mount(8) integration

// cliInstallHelper makes /sbin/mount.fuse.unionfs a link to the test
// binary for the test's duration; it skips the test when the path holds
// something else.
func cliInstallHelper(t *testing.T, bin string) {
	t.Helper()
	const helper = "/sbin/mount.fuse.unionfs"
	target, err := os.Readlink(helper)
	switch {
	case err == nil && target == bin:
		return // a leftover of an interrupted run
	case err == nil:
		t.Skipf("%s exists and points to %s, not the test binary; not replacing it", helper, target)
	case !errors.Is(err, os.ErrNotExist):
		t.Skipf("%s exists and is not a symlink (%v); not replacing it", helper, err)
	}
	if err := os.Symlink(bin, helper); err != nil {
		t.Fatalf("install %s: %v", helper, err)
	}
	t.Cleanup(func() {
		if err := os.Remove(helper); err != nil {
			t.Errorf("remove %s: %v", helper, err)
		}
	})
}

func TestCLIMountHelper(t *testing.T) {
	requireRoot(t)
	requireFUSE(t)
	if _, err := exec.LookPath("mount"); err != nil {
		skipOrFail(t, "mount(8) not found: %v", err)
	}
	cliInstallHelper(t, requireBinary(t))

	check := func(t *testing.T, s cliStack, mnt, source string, res cmdResult) {
		t.Helper()
		if res.exit != 0 {
			t.Fatalf("mount: exit %d\nstdout:\n%s\nstderr:\n%s", res.exit, res.stdout, res.stderr)
		}
		if res.stderr != "" {
			t.Errorf("mount printed on stderr:\n%s", res.stderr)
		}
		mi, ok := cliFindMount(t, mnt)
		if !ok {
			t.Fatalf("%s not mounted after mount(8) returned 0", mnt)
		}
		if mi.fstype != "fuse.unionfs" || mi.source != source {
			t.Errorf("mountinfo: type %q source %q, want fuse.unionfs %q", mi.fstype, mi.source, source)
		}
		cliAssertStackOrder(t, mnt, "a", "b")
		cliAssertWritable(t, mnt, s.upper)
		pids := cliServerPIDs(t, mnt)
		if len(pids) != 1 {
			t.Errorf("processes serving %s: %v, want exactly one", mnt, pids)
		}
		res, err := runCommand(commandTimeout, "umount", mnt)
		if err != nil || res.exit != 0 {
			t.Fatalf("umount %s: exit %d, %v\n%s", mnt, res.exit, err, res.stderr)
		}
		if _, mounted := mountedFS(t, mnt); mounted {
			t.Errorf("%s still mounted after umount(8)", mnt)
		}
		for _, pid := range pids {
			if !cliWaitExit(pid, 10*time.Second) {
				cliAbortFUSE(t, mi.dev, mnt)
				t.Errorf("server pid %d still running 10s after umount(8)", pid)
			}
		}
	}
	cleanup := func(t *testing.T, mnt string) {
		t.Cleanup(func() {
			if _, mounted := mountedFS(t, mnt); mounted {
				unmountUnion(t, mnt, t.Errorf)
			}
		})
	}

	t.Run("mount -t fuse.unionfs", func(t *testing.T) {
		s := newCLIStack(t)
		mnt := cliNewMountpoint(t)
		cleanup(t, mnt)
		opts := "lowerdir=" + s.a + ":" + s.b + ",upperdir=" + s.upper + ",workdir=" + s.work
		res, err := runCommand(commandTimeout, "mount", "-t", "fuse.unionfs", "-o", opts, "unionfs", mnt)
		if err != nil {
			t.Fatal(err)
		}
		check(t, s, mnt, "unionfs", res)
	})

	t.Run("fstab entry", func(t *testing.T) {
		s := newCLIStack(t)
		mnt := cliNewMountpoint(t)
		cleanup(t, mnt)
		fstab := filepath.Join(t.TempDir(), "fstab")
		line := fmt.Sprintf("# test fstab\nstack1 %s fuse.unionfs defaults,noauto,nofail,_netdev,lowerdir=%s:%s,upperdir=%s,workdir=%s 0 0\n",
			mnt, s.a, s.b, s.upper, s.work)
		if err := os.WriteFile(fstab, []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := runCommand(commandTimeout, "mount", "--fstab", fstab, mnt)
		if err != nil {
			t.Fatal(err)
		}
		check(t, s, mnt, "stack1", res)
	})
}

// ---------------------------------------------------------------------------
// Version and help

func TestCLIVersionAndHelp(t *testing.T) {
	t.Parallel()
	version := regexp.MustCompile(`^unionfs \S+\n$`)
	tests := []struct {
		args       []string
		wantExit0  bool
		wantStdout *regexp.Regexp // nil: stdout may be anything
		wantIn     []string       // substrings of stdout+stderr
	}{
		{args: []string{"--version"}, wantExit0: true, wantStdout: version},
		{args: []string{"version"}, wantExit0: true, wantStdout: version},
		{args: []string{"--help"}, wantExit0: true, wantIn: []string{"Usage", "mount", "umount"}},
		{args: []string{"-h"}, wantExit0: true, wantIn: []string{"Usage", "mount", "umount"}},
		{args: []string{"mount", "--help"}, wantExit0: true, wantIn: []string{"Usage", "--lower", "--upper", "--workdir", "--options", "--foreground"}},
		{args: []string{"frobnicate"}, wantIn: []string{"Usage", "frobnicate"}},
		{args: nil, wantIn: []string{"Usage"}},
		{args: []string{"mount", "--no-such-flag", "/x"}, wantIn: []string{"no-such-flag"}},
		{args: []string{"umount"}, wantIn: []string{"umount"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(append([]string{"unionfs"}, tc.args...), " "), func(t *testing.T) {
			t.Parallel()
			stdout, stderr, exit := runUnionfs(t, tc.args...)
			if tc.wantExit0 && exit != 0 {
				t.Errorf("exit %d, want 0\nstderr:\n%s", exit, stderr)
			}
			if !tc.wantExit0 && exit == 0 {
				t.Errorf("exit 0, want non-zero\nstdout:\n%s", stdout)
			}
			if tc.wantExit0 && stderr != "" {
				t.Errorf("unexpected stderr:\n%s", stderr)
			}
			if !tc.wantExit0 && stderr == "" {
				t.Errorf("nothing on stderr for a failure")
			}
			if tc.wantStdout != nil && !tc.wantStdout.MatchString(stdout) {
				t.Errorf("stdout %q does not match %v", stdout, tc.wantStdout)
			}
			for _, w := range tc.wantIn {
				if !strings.Contains(stdout+stderr, w) {
					t.Errorf("output does not mention %q:\nstdout:\n%s\nstderr:\n%s", w, stdout, stderr)
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Bad input

// cliBadDirs are the paths a bad-input case may use. All live under root;
// lower, lower2, upper, work and mnt exist as directories and file as a
// regular file.
type cliBadDirs struct {
	root, lower, lower2, upper, work, mnt, file, missing string
}

func newCLIBadDirs(t *testing.T) cliBadDirs {
	t.Helper()
	root := resolvePath(t, t.TempDir())
	d := cliBadDirs{
		root:    root,
		lower:   filepath.Join(root, "lower"),
		lower2:  filepath.Join(root, "lower2"),
		upper:   filepath.Join(root, "upper"),
		work:    filepath.Join(root, "work"),
		mnt:     filepath.Join(root, "mnt"),
		file:    filepath.Join(root, "file"),
		missing: filepath.Join(root, "missing"),
	}
	writeTree(t, root, tree{
		"lower/f":     file("lower"),
		"lower/sub/":  dir(0o755),
		"lower2/g":    file("lower2"),
		"upper/":      dir(0o755),
		"work/":       dir(0o755),
		"mnt/":        dir(0o755),
		"mnt/inside/": dir(0o755),
		"file":        file("not a dir"),
	})
	return d
}

// cliTmpfs mounts a fresh tmpfs on dir (root only), undone at cleanup.
func cliTmpfs(t *testing.T, dir string) {
	t.Helper()
	requireRoot(t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=16m,mode=0755"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { cliUnmountFixture(t, dir) })
}

// cliUnmountFixture unmounts a tmpfs or bind mount the test made. A
// process forked by a parallel test may hold it for a moment; that is
// retried and logged, with the holders. Still busy after 5s is an error.
func cliUnmountFixture(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := unix.Unmount(dir, 0)
		if err == nil {
			return
		}
		holders := cliHolders(dir)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			t.Errorf("unmount %s: %v; held by: %v", dir, err, holders)
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("lazy unmount %s: %v", dir, err)
			}
			return
		}
		t.Logf("unmount %s: busy, held by %v; retrying", dir, holders)
		time.Sleep(50 * time.Millisecond)
	}
}

// cliHolders lists the processes with an open file or cwd below dir, as
// "pid (comm): link".
func cliHolders(dir string) []string {
	var out []string
	links, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	cwds, _ := filepath.Glob("/proc/[0-9]*/cwd")
	for _, l := range append(links, cwds...) {
		target, err := os.Readlink(l)
		if err != nil || !cliHasPathPrefix(target, dir) {
			continue
		}
		pid := strings.Split(l, "/")[2]
		comm, _ := os.ReadFile("/proc/" + pid + "/comm")
		out = append(out, fmt.Sprintf("%s (%s): %s", pid, strings.TrimSpace(string(comm)), target))
	}
	return out
}

// cliReadOnlyBind bind-mounts dir on itself read-only (root only).
func cliReadOnlyBind(t *testing.T, dir string) {
	t.Helper()
	requireRoot(t)
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s: %v", dir, err)
	}
	t.Cleanup(func() { cliUnmountFixture(t, dir) })
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount %s read-only: %v", dir, err)
	}
}

func TestCLIBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// args returns the arguments after the binary's name; it may
		// prepare the case (mount a tmpfs, ...) first.
		args func(t *testing.T, d cliBadDirs) []string
		// want are substrings of the one error line, as functions of d.
		want func(d cliBadDirs) []string
	}{
		{
			name: "missing lower",
			args: func(t *testing.T, d cliBadDirs) []string { return []string{"mount", "-l", d.missing, d.mnt} },
			want: func(d cliBadDirs) []string { return []string{d.missing} },
		},
		{
			name: "missing lower, foreground",
			args: func(t *testing.T, d cliBadDirs) []string { return []string{"mount", "-f", "-l", d.missing, d.mnt} },
			want: func(d cliBadDirs) []string { return []string{d.missing} },
		},
		{
			name: "upper inside a lower, foreground",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-f", "-l", d.lower, "-u", filepath.Join(d.lower, "sub"), d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{filepath.Join(d.lower, "sub")} },
		},
		{
			name: "missing second lower",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower + ":" + d.missing, "-u", d.upper, d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{d.missing} },
		},
		{
			name: "lower is a file",
			args: func(t *testing.T, d cliBadDirs) []string { return []string{"mount", "-l", d.file, d.mnt} },
			want: func(d cliBadDirs) []string { return []string{d.file} },
		},
		{
			name: "missing upper",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower, "-u", d.missing, d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{d.missing} },
		},
		{
			name: "upper is a file",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower, "-u", d.file, d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{d.file} },
		},
		{
			name: "missing mountpoint",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower, "-u", d.upper, d.missing}
			},
			want: func(d cliBadDirs) []string { return []string{d.missing} },
		},
		{
			name: "mountpoint is a file",
			args: func(t *testing.T, d cliBadDirs) []string { return []string{"mount", "-l", d.lower, d.file} },
			want: func(d cliBadDirs) []string { return []string{d.file} },
		},
		{
			name: "mountpoint is a lower",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower2 + ":" + d.lower, d.lower}
			},
			want: func(d cliBadDirs) []string { return []string{d.lower} },
		},
		{
			name: "mountpoint is the upper",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower, "-u", d.upper, d.upper}
			},
			want: func(d cliBadDirs) []string { return []string{d.upper} },
		},
		{
			name: "upper inside a lower",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower, "-u", filepath.Join(d.lower, "sub"), d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{filepath.Join(d.lower, "sub")} },
		},
		{
			name: "upper is a lower",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower, "-u", d.lower, d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{d.lower} },
		},
		{
			name: "upper inside the mountpoint",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower, "-u", filepath.Join(d.mnt, "inside"), d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{filepath.Join(d.mnt, "inside")} },
		},
		{
			name: "workdir inside a lower",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower, "-u", d.upper, "-w", filepath.Join(d.lower, "sub"), d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{filepath.Join(d.lower, "sub")} },
		},
		{
			name: "workdir inside the mountpoint",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower, "-u", d.upper, "-w", filepath.Join(d.mnt, "inside"), d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{filepath.Join(d.mnt, "inside")} },
		},
		{
			name: "workdir via -o inside a lower",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"-o", "lowerdir=" + d.lower + ",upperdir=" + d.upper + ",workdir=" + filepath.Join(d.lower, "sub"), d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{filepath.Join(d.lower, "sub")} },
		},
		{
			name: "empty --lower",
			args: func(t *testing.T, d cliBadDirs) []string { return []string{"mount", "-l", "", d.mnt} },
			want: func(d cliBadDirs) []string { return []string{"lower"} },
		},
		{
			name: "empty --lower after a good one",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower, "-l", "", d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{"lower"} },
		},
		{
			name: "no lower at all",
			args: func(t *testing.T, d cliBadDirs) []string { return []string{"mount", "-u", d.upper, d.mnt} },
			want: func(d cliBadDirs) []string { return []string{"lower"} },
		},
		{
			name: "no mountpoint",
			args: func(t *testing.T, d cliBadDirs) []string { return []string{"mount", "-l", d.lower} },
			want: func(d cliBadDirs) []string { return []string{"mountpoint"} },
		},
		{
			name: "lowerdir=a::b",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-o", "lowerdir=" + d.lower + "::" + d.lower2, d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{"empty"} },
		},
		{
			name: "--lower a::b",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower + "::" + d.lower2, d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{"empty"} },
		},
		{
			name: "lowerdir with a trailing colon",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"-o", "lowerdir=" + d.lower + ":", d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{"empty"} },
		},
		{
			name: "lowerdir= empty",
			args: func(t *testing.T, d cliBadDirs) []string { return []string{"mount", "-o", "lowerdir=", d.mnt} },
			want: func(d cliBadDirs) []string { return []string{"lowerdir"} },
		},
		{
			name: "upperdir= empty",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-o", "lowerdir=" + d.lower + ",upperdir=", d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{"upperdir"} },
		},
		{
			name: "unbalanced quote",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-o", `lowerdir=` + d.lower + `,context="system_u:object_r:s0:c1,c2`, d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{"quote"} },
		},
		{
			name: "unbalanced quote, podman form",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"-o", `lowerdir="` + d.lower, d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{"quote"} },
		},
		{
			name: "workdir on another filesystem",
			args: func(t *testing.T, d cliBadDirs) []string {
				tmpfs := filepath.Join(d.root, "tmpfs")
				cliTmpfs(t, tmpfs)
				work := filepath.Join(tmpfs, "work")
				if err := os.Mkdir(work, 0o755); err != nil {
					t.Fatal(err)
				}
				return []string{"mount", "-l", d.lower, "-u", d.upper, "-w", work, d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{filepath.Join(d.root, "tmpfs", "work")} },
		},
		{
			name: "--upper and upperdir= disagree",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower, "-u", d.upper, "-o", "upperdir=" + d.work, d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{"upper"} },
		},
		{
			name: "workdir without an upper",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower, "-w", d.work, d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{"upper"} },
		},
		{
			name: "workdir is the upper",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower, "-u", d.upper, "-w", d.upper, d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{d.upper} },
		},
		{
			name: "missing workdir",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower, "-u", d.upper, "-w", d.missing, d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{d.missing} },
		},
		{
			name: "too many arguments",
			args: func(t *testing.T, d cliBadDirs) []string {
				return []string{"mount", "-l", d.lower, d.mnt, d.upper, d.work}
			},
			want: func(d cliBadDirs) []string { return []string{d.work} },
		},
		{
			name: "read-only upper",
			args: func(t *testing.T, d cliBadDirs) []string {
				cliReadOnlyBind(t, d.upper)
				return []string{"mount", "-l", d.lower, "-u", d.upper, d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{d.upper, "read-only"} },
		},
		{
			name: "read-only upper with a workdir",
			args: func(t *testing.T, d cliBadDirs) []string {
				cliReadOnlyBind(t, d.upper)
				return []string{"mount", "-l", d.lower, "-u", d.upper, "-w", d.work, d.mnt}
			},
			want: func(d cliBadDirs) []string { return []string{d.upper} },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			requireFUSE(t)
			d := newCLIBadDirs(t)
			args := tc.args(t, d)
			before := checksumTree(t, d.root)
			mountsBefore := cliMountsUnder(t, d.root)

			stdout, stderr, exit := runUnionfs(t, args...)
			if mounts := cliMountsUnder(t, d.root); !slices.Equal(mounts, mountsBefore) {
				for _, m := range mounts {
					if !slices.Contains(mountsBefore, m) {
						forceUnmount(m)
					}
				}
				t.Errorf("mounts under the test dir: %v, before the command: %v", mounts, mountsBefore)
			}
			if exit == 0 {
				t.Errorf("unionfs %s: exit 0, want an error", strings.Join(args, " "))
			}
			if stdout != "" {
				t.Errorf("stdout: %q, want nothing", stdout)
			}
			cliAssertOneErrorLine(t, stderr, tc.want(d)...)
			if pids := cliProcs(t, func(a string) bool { return cliHasPathPrefix(a, d.root) }); len(pids) > 0 {
				t.Errorf("unionfs processes left running: %v", pids)
			}
			assertUnchanged(t, before, d.root)
		})
	}
}

// TestCLISharedUpper mounts one upper twice at the same time: the second
// mount must fail fast and clearly, and the first keep working.
func TestCLISharedUpper(t *testing.T) {
	t.Parallel()
	s := newCLIStack(t)
	first := mountUnion(t, "-l", s.a, "-u", s.upper, "-w", s.work)
	cliAssertWritable(t, first, s.upper)

	work2 := t.TempDir()
	mnt2 := cliNewMountpoint(t)
	upperBefore := checksumTree(t, s.upper, skipStateDir())
	lowerBefore := checksumTree(t, s.b)
	start := time.Now()
	res, err := runCommand(30*time.Second, requireBinary(t), "mount", "-l", s.b, "-u", s.upper, "-w", work2, mnt2)
	elapsed := time.Since(start)
	if _, mounted := mountedFS(t, mnt2); mounted {
		forceUnmount(mnt2)
		t.Errorf("the second mount of %s succeeded: two servers share one upper", s.upper)
	}
	if err != nil {
		t.Fatalf("second mount: %v (it must fail within a few seconds, not hang)", err)
	}
	if elapsed > 10*time.Second {
		t.Errorf("second mount took %v to fail, want a few seconds", elapsed)
	}
	if res.exit == 0 {
		t.Errorf("second mount sharing upper %s: exit 0, want an error", s.upper)
	}
	cliAssertOneErrorLine(t, res.stderr, s.upper)
	if pids := cliServerPIDs(t, mnt2); len(pids) > 0 {
		t.Errorf("second server still running: %v", pids)
	}
	assertUnchanged(t, upperBefore, s.upper, skipStateDir())
	assertUnchanged(t, lowerBefore, s.b)
	if ents, err := os.ReadDir(work2); err != nil || len(ents) != 0 {
		t.Errorf("second mount's workdir: %v, %v; want it empty", ents, err)
	}

	// The first mount still answers and writes.
	if got, err := readString(filepath.Join(first, "new-file")); err != nil || got != "new" {
		t.Errorf("first mount: new-file = %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(first, "second-file"), []byte("2"), 0o644); err != nil {
		t.Errorf("first mount: write after the failed second mount: %v", err)
	}
}

// TestCLINoDevFuse runs the binary in a mount namespace whose /dev lacks
// the fuse device.
func TestCLINoDevFuse(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		skipOrFail(t, "unshare(1) not found: %v", err)
	}
	// A fresh /dev with only null and zero; exit 97 if /dev/fuse is still
	// there, so a broken setup cannot pass for a unionfs success.
	const script = `mount -t tmpfs -o mode=0755 none /dev || exit 96
mknod -m 666 /dev/null c 1 3 && mknod -m 666 /dev/zero c 1 5 || exit 96
test -e /dev/fuse && exit 97
exec "$@"`
	for _, foreground := range []bool{false, true} {
		t.Run(fmt.Sprintf("foreground=%v", foreground), func(t *testing.T) {
			t.Parallel()
			d := newCLIBadDirs(t)
			before := checksumTree(t, d.root)
			args := []string{"-m", "--propagation", "private", "sh", "-c", script, "sh", requireBinary(t), "mount"}
			if foreground {
				args = append(args, "-f")
			}
			args = append(args, "-l", d.lower, "-u", d.upper, d.mnt)
			res, err := runCommand(commandTimeout, unshare, args...)
			if err != nil {
				t.Fatalf("unshare: %v\n%s", err, res.stderr)
			}
			switch res.exit {
			case 96, 97:
				t.Fatalf("could not hide /dev/fuse in a new mount namespace (exit %d): %s", res.exit, res.stderr)
			case 0:
				t.Errorf("unionfs mount without /dev/fuse: exit 0, want an error")
			}
			if strings.Contains(res.stderr, "unshare:") {
				skipOrFail(t, "unshare -m failed: %s", res.stderr)
			}
			cliAssertOneErrorLine(t, res.stderr, "/dev/fuse")
			if pids := cliServerPIDs(t, d.mnt); len(pids) > 0 {
				t.Errorf("unionfs processes left running: %v", pids)
			}
			assertUnchanged(t, before, d.root)
		})
	}
}

// TestCLIPathForms mounts with relative paths, through symlinks and with
// spaces and commas in the names, and unmounts by another spelling of
// the mountpoint.
func TestCLIPathForms(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	bin := requireBinary(t)
	run := func(t *testing.T, dir string, args ...string) cmdResult {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = dir
		cmd.WaitDelay = 5 * time.Second // a server holding the pipes must not hang the test
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		res := cmdResult{stdout: stdout.String(), stderr: stderr.String()}
		var exitErr *exec.ExitError
		switch {
		case errors.As(err, &exitErr):
			res.exit = exitErr.ExitCode()
		case err != nil:
			t.Fatalf("unionfs %s: %v", strings.Join(args, " "), err)
		}
		return res
	}
	tests := []struct {
		name string
		// setup builds the layers under root and returns the mount
		// arguments, the real mountpoint, and the spelling to unmount by.
		setup func(t *testing.T, root string) (args []string, mnt, umountAs string)
	}{
		{
			name: "relative paths",
			setup: func(t *testing.T, root string) ([]string, string, string) {
				return []string{"mount", "-l", "a:./b", "-u", "up", "-w", "work/", "mnt"}, filepath.Join(root, "mnt"), "mnt/"
			},
		},
		{
			name: "symlinked layers and mountpoint",
			setup: func(t *testing.T, root string) ([]string, string, string) {
				for _, l := range [][2]string{{"a", "link-a"}, {"b", "link-b"}, {"up", "link-up"}, {"mnt", "link-mnt"}} {
					if err := os.Symlink(l[0], filepath.Join(root, l[1])); err != nil {
						t.Fatal(err)
					}
				}
				p := func(n string) string { return filepath.Join(root, n) }
				return []string{"mount", "-l", p("link-a") + ":" + p("link-b"), "-u", p("link-up"), p("link-mnt")}, p("mnt"), p("link-mnt")
			},
		},
		{
			name: "spaces and commas in names",
			setup: func(t *testing.T, root string) ([]string, string, string) {
				for _, n := range []string{"a", "b", "up", "mnt"} {
					if err := os.Rename(filepath.Join(root, n), filepath.Join(root, n+" x,y")); err != nil {
						t.Fatal(err)
					}
				}
				p := func(n string) string { return filepath.Join(root, n+" x,y") }
				return []string{"mount", "-l", p("a"), "-l", p("b"), "-u", p("up"), p("mnt")}, p("mnt"), p("mnt")
			},
		},
		{
			name: "spaces and quoted commas in -o",
			setup: func(t *testing.T, root string) ([]string, string, string) {
				for _, n := range []string{"a", "b", "up", "mnt"} {
					if err := os.Rename(filepath.Join(root, n), filepath.Join(root, n+" x,y")); err != nil {
						t.Fatal(err)
					}
				}
				p := func(n string) string { return filepath.Join(root, n+" x,y") }
				opts := `lowerdir="` + p("a") + ":" + p("b") + `",upperdir="` + p("up") + `"`
				return []string{"-o", opts, p("mnt")}, p("mnt"), p("mnt")
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := resolvePath(t, t.TempDir())
			for _, n := range []string{"a", "b", "up", "work", "mnt"} {
				if err := os.Mkdir(filepath.Join(root, n), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			writeTree(t, filepath.Join(root, "a"), cliLayer("a"))
			writeTree(t, filepath.Join(root, "b"), cliLayer("b"))
			args, mnt, umountAs := tc.setup(t, root)
			res := run(t, root, args...)
			t.Cleanup(func() {
				if _, mounted := mountedFS(t, mnt); mounted {
					unmountUnion(t, mnt, t.Errorf)
				}
			})
			if res.exit != 0 {
				t.Fatalf("unionfs %s (in %s): exit %d\n%s", strings.Join(args, " "), root, res.exit, res.stderr)
			}
			if mi, ok := cliFindMount(t, mnt); !ok || mi.fstype != "fuse.unionfs" {
				t.Fatalf("%s: mounted %v, type %q; want fuse.unionfs", mnt, ok, mi.fstype)
			}
			cliAssertStackOrder(t, mnt, "a", "b")
			// The upper is named like the mountpoint, with "up" for "mnt".
			cliAssertWritable(t, mnt, filepath.Join(root, strings.Replace(filepath.Base(mnt), "mnt", "up", 1)))
			// The server's arguments spell the mountpoint as given.
			given := args[len(args)-1]
			pids := cliProcs(t, func(a string) bool { return a == given || a == mnt })
			if res := run(t, root, "umount", umountAs); res.exit != 0 {
				t.Errorf("unionfs umount %s: exit %d\n%s", umountAs, res.exit, res.stderr)
			}
			if _, mounted := mountedFS(t, mnt); mounted {
				t.Errorf("%s still mounted after unionfs umount %s", mnt, umountAs)
			}
			if len(pids) != 1 {
				t.Errorf("processes serving %s before the unmount: %v, want one", mnt, pids)
			}
			for _, pid := range pids {
				if !cliExited(pid) {
					t.Errorf("server pid %d still running after umount returned: %s", pid, cliTaskStates(pid))
				}
			}
		})
	}
}

// TestCLIUmountBusy: an unmount refused because a file is open must say
// so, and leave the mount working.
func TestCLIUmountBusy(t *testing.T) {
	t.Parallel()
	requireRoot(t) // fusermount3 -u by a user reports busy differently; root uses umount2
	s := newCLIStack(t)
	mnt := mountUnion(t, "-l", s.a+":"+s.b)
	f, err := os.Open(filepath.Join(mnt, "who"))
	if err != nil {
		t.Fatal(err)
	}
	_, stderr, exit := runUnionfs(t, "umount", mnt)
	if exit == 0 {
		t.Errorf("unionfs umount with a file open in the mount: exit 0, want an error")
	}
	cliAssertOneErrorLine(t, stderr, mnt, "busy")
	if _, mounted := mountedFS(t, mnt); !mounted {
		t.Fatalf("%s unmounted although busy", mnt)
	}
	buf := make([]byte, 10)
	if n, err := f.ReadAt(buf, 0); string(buf[:n]) != "a" {
		t.Errorf("read of the open file after the refused unmount: %q, %v", buf[:n], err)
	}
	if len(cliServerPIDs(t, mnt)) != 1 {
		t.Errorf("server gone after a refused unmount")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	umountUnion(t, mnt)
}

// TestCLIDaemonSignal: the background server, too, unmounts and exits on
// SIGTERM, also when the signal comes right after `unionfs mount`
// returned (a service stopped as soon as it started), and logs to the
// --log-file it was given. Repeated, since the early signal is a race.
func TestCLIDaemonSignal(t *testing.T) {
	t.Parallel()
	s := newCLIStack(t)
	mnt := cliNewMountpoint(t)
	logDir := t.TempDir()
	const rounds = 20
	for round := range rounds {
		logFile := filepath.Join(logDir, fmt.Sprintf("server-%d.log", round))
		mountUnionAt(t, mnt, "-l", s.a+":"+s.b, "--log-file", logFile)
		pids := cliServerPIDs(t, mnt)
		if len(pids) != 1 {
			t.Fatalf("round %d: processes serving %s: %v, want one", round, mnt, pids)
		}
		mi, _ := cliFindMount(t, mnt)
		if err := unix.Kill(pids[0], unix.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if !cliWaitExit(pids[0], 20*time.Second) {
			cliAbortFUSE(t, mi.dev, mnt)
			t.Fatalf("round %d: server pid %d still not gone 20s after SIGTERM right after unionfs mount returned (wedged: its FUSE connection had to be aborted)", round, pids[0])
		}
		if _, mounted := mountedFS(t, mnt); mounted {
			_, err := os.ReadDir(mnt)
			cliAbortFUSE(t, mi.dev, mnt)
			t.Fatalf("round %d: SIGTERM right after unionfs mount returned: the server exited but left %s mounted (readdir: %v)", round, mnt, err)
		}
		if data, err := os.ReadFile(logFile); err != nil || len(data) == 0 {
			t.Errorf("round %d: --log-file %s after the server's life: %q, %v; want its log", round, logFile, data, err)
		}
	}

	// A server left alone a moment has the log open, and still obeys.
	logFile := filepath.Join(logDir, "server.log")
	mountUnionAt(t, mnt, "-l", s.a+":"+s.b, "--log-file", logFile)
	cliAssertStackOrder(t, mnt, "a", "b")
	pids := cliServerPIDs(t, mnt)
	if len(pids) != 1 {
		t.Fatalf("processes serving %s: %v, want one", mnt, pids)
	}
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pids[0]))
	hasLog := false
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil && target == logFile {
			hasLog = true
		}
	}
	if !hasLog {
		t.Errorf("the server does not have its --log-file %s open", logFile)
	}
	if err := unix.Kill(pids[0], unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	cliWaitServersExit(t, pids, 10*time.Second)
	if _, mounted := mountedFS(t, mnt); mounted {
		t.Errorf("%s still mounted after the server exited on SIGTERM", mnt)
	}
}

// TestCLIMountpointInsideLower mounts on a directory inside a lower layer.
// Refusing that is fine; if it mounts, the union must show that directory
// as the lower has it (empty, as kernel overlayfs does), and must never
// walk into its own mount: the server would wait on itself.
func TestCLIMountpointInsideLower(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	lower := resolvePath(t, t.TempDir())
	writeTree(t, lower, tree{"f": file("f"), "mnt/": dir(0o755), "sub/g": file("g")})
	mnt := filepath.Join(lower, "mnt")
	before := checksumTree(t, lower)

	res, err := runCommand(30*time.Second, requireBinary(t), "mount", "-l", lower, mnt)
	mi, mounted := cliFindMount(t, mnt)
	if err != nil {
		if mounted {
			cliAbortFUSE(t, mi.dev, mnt)
		}
		t.Fatalf("unionfs mount: %v", err)
	}
	if res.exit != 0 {
		// Refused: then as every other refusal.
		cliAssertOneErrorLine(t, res.stderr, mnt)
		if mounted {
			t.Errorf("%s mounted although the command failed", mnt)
			cliAbortFUSE(t, mi.dev, mnt)
		}
		assertUnchanged(t, before, lower)
		return
	}
	if !mounted {
		t.Fatalf("unionfs mount exited 0 but %s is not mounted", mnt)
	}
	hung := false
	t.Cleanup(func() {
		if hung {
			cliAbortFUSE(t, mi.dev, mnt)
		}
		if _, still := mountedFS(t, mnt); still {
			unmountUnion(t, mnt, t.Errorf)
		}
		assertUnchanged(t, before, lower)
	})

	type result struct {
		root, inner string
		err         error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		if r.root, r.err = listDir(mnt); r.err == nil {
			r.inner, r.err = listDir(filepath.Join(mnt, "mnt"))
		}
		done <- r
	}()
	select {
	case r := <-done:
		if r.err != nil || r.root != "f,mnt,sub" || r.inner != "" {
			t.Errorf("readdir %s = %q, readdir %s/mnt = %q, %v; want \"f,mnt,sub\" and an empty dir", mnt, r.root, mnt, r.inner, r.err)
		}
	case <-time.After(10 * time.Second):
		hung = true
		cliAbortFUSE(t, mi.dev, mnt)
		<-done
		t.Fatalf("readdir of a union mounted inside its own lower hung for 10s: the server deadlocked on its own mount (FUSE connection aborted to recover)")
	}
}

// TestCLIDaemonProcessGroup: the background server leads a process group
// of its own, so the terminal's job-control signals do not reach it, but
// stays in its caller's session, so that the scheduler groups it with the
// clients started from there (autogroup: a FUSE server in another group
// pays a cross-CPU wake-up on many requests); and a hang-up does not
// unmount it.
func TestCLIDaemonProcessGroup(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	s := newCLIStack(t)
	mnt := cliNewMountpoint(t)
	cliMountArgs(t, mnt, "mount", "-l", s.a, mnt)
	out, _, exit := runUnionfs(t, "inspect", mnt)
	var rec struct{ Pid int }
	if exit != 0 || json.Unmarshal([]byte(out), &rec) != nil || rec.Pid == 0 {
		t.Fatalf("inspect: exit %d\n%s", exit, out)
	}
	pgid, err := unix.Getpgid(rec.Pid)
	if err != nil {
		t.Fatal(err)
	}
	sid, err := unix.Getsid(rec.Pid)
	if err != nil {
		t.Fatal(err)
	}
	mySid, err := unix.Getsid(0)
	if err != nil {
		t.Fatal(err)
	}
	if pgid != rec.Pid {
		t.Errorf("server %d is in process group %d, want its own", rec.Pid, pgid)
	}
	if sid != mySid {
		t.Errorf("server %d is in session %d, want its caller's %d", rec.Pid, sid, mySid)
	}
	if err := unix.Kill(rec.Pid, unix.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got, err := readString(filepath.Join(mnt, "only-a")); err != nil || got != "a" {
		t.Errorf("after SIGHUP: read only-a: %q, %v", got, err)
	}
	if _, mounted := mountedFS(t, mnt); !mounted {
		t.Errorf("after SIGHUP %s is no longer mounted", mnt)
	}
}
