package test

// End-to-end tests of volumes, inspect, ps and info (issue 5): host
// directories and named volumes served at a path inside the union, and the
// commands that show what a live mount stacks.

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ---------------------------------------------------------------------------
// Helpers (prefixed vol: other test files share the package).

// volInspectMount is one entry of `unionfs inspect`'s Mounts, in the shape
// of docker inspect's.
type volInspectMount struct {
	Type        string `json:"Type"`
	Name        string `json:"Name"`
	Source      string `json:"Source"`
	Destination string `json:"Destination"`
	Driver      string `json:"Driver"`
	Mode        string `json:"Mode"`
	RW          bool   `json:"RW"`
}

// volInspectOut is `unionfs inspect MNT`.
type volInspectOut struct {
	Mountpoint   string            `json:"Mountpoint"`
	Pid          int               `json:"Pid"`
	Lowers       []string          `json:"Lowers"`
	Upper        string            `json:"Upper"`
	Workdir      string            `json:"Workdir"`
	ReadOnly     bool              `json:"ReadOnly"`
	Options      []string          `json:"Options"`
	Mounts       []volInspectMount `json:"Mounts"`
	StartedAt    time.Time         `json:"StartedAt"`
	FUSEProtocol string            `json:"FUSEProtocol"`
}

// volVolumeOut is one element of `unionfs volume inspect`.
type volVolumeOut struct {
	Name       string            `json:"Name"`
	Driver     string            `json:"Driver"`
	Mountpoint string            `json:"Mountpoint"`
	CreatedAt  time.Time         `json:"CreatedAt"`
	Labels     map[string]string `json:"Labels"`
	Scope      string            `json:"Scope"`
}

// volInfoOut is `unionfs info --format json`.
type volInfoOut struct {
	Version            string            `json:"Version"`
	FUSEProtocol       string            `json:"FUSEProtocol"`
	StorageRoot        string            `json:"StorageRoot"`
	StorageFilesystem  string            `json:"StorageFilesystem"`
	Images             int               `json:"Images"`
	Layers             int               `json:"Layers"`
	Volumes            int               `json:"Volumes"`
	Mounts             int               `json:"Mounts"`
	UpperFilesystems   map[string]string `json:"UpperFilesystems"`
	PassthroughCapable bool              `json:"PassthroughCapable"`
	ReflinksAvailable  bool              `json:"ReflinksAvailable"`
}

// volNameRE is what a generated (anonymous) volume name must look like: a
// valid volume name.
var volNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// volProtoRE is a FUSE protocol version as the kernel offers it.
var volProtoRE = regexp.MustCompile(`^7\.[0-9]+$`)

// volUniqueName is a volume name no other test uses: `volume rm` and
// `prune` look at every live mount of the user, so names must not collide
// between parallel tests (or parallel runs).
func volUniqueName(t testing.TB, base string) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return base + "-" + hex.EncodeToString(b[:])
}

// volRun runs unionfs and fails the test unless it exits 0.
func volRun(t testing.TB, args ...string) string {
	t.Helper()
	stdout, stderr, exit := runUnionfs(t, args...)
	if exit != 0 {
		t.Fatalf("unionfs %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), exit, stdout, stderr)
	}
	return stdout
}

// volRefused runs unionfs expecting a refusal: non-zero exit and exactly
// one "unionfs: ..." line on stderr mentioning each of want.
func volRefused(t testing.TB, want []string, args ...string) {
	t.Helper()
	stdout, stderr, exit := runUnionfs(t, args...)
	if exit == 0 {
		t.Errorf("unionfs %s: exit 0, want a refusal\nstdout:\n%s", strings.Join(args, " "), stdout)
		return
	}
	volAssertOneErrorLine(t, stderr, want...)
}

// volAssertOneErrorLine checks the shape of a refusal: one line on stderr,
// starting "unionfs: ", mentioning each of want.
func volAssertOneErrorLine(t testing.TB, stderr string, want ...string) {
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

// volLs is `unionfs volume ls -q --root root`.
func volLs(t testing.TB, root string) []string {
	t.Helper()
	names := strings.Fields(volRun(t, "volume", "ls", "-q", "--root", root))
	slices.Sort(names)
	return names
}

// volInspectVolume is `unionfs volume inspect NAME` for one name.
func volInspectVolume(t testing.TB, root, name string) volVolumeOut {
	t.Helper()
	out := volRun(t, "volume", "inspect", "--root", root, name)
	var vs []volVolumeOut
	if err := json.Unmarshal([]byte(out), &vs); err != nil {
		t.Fatalf("volume inspect %s: not a JSON array of volumes: %v\n%s", name, err, out)
	}
	if len(vs) != 1 {
		t.Fatalf("volume inspect %s: %d elements, want 1\n%s", name, len(vs), out)
	}
	return vs[0]
}

// volInspect is `unionfs inspect MNT`, decoded; raw is the same output as
// generic JSON, for checking key names exactly (encoding/json matches
// struct fields case-insensitively).
func volInspect(t testing.TB, mnt string) (out volInspectOut, raw map[string]any) {
	t.Helper()
	stdout := volRun(t, "inspect", mnt)
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("inspect %s: output does not parse: %v\n%s", mnt, err, stdout)
	}
	if err := json.Unmarshal([]byte(stdout), &raw); err != nil {
		t.Fatalf("inspect %s: output does not parse: %v\n%s", mnt, err, stdout)
	}
	return out, raw
}

// volAssertErrno checks that err is the errno want.
func volAssertErrno(t testing.TB, op string, err error, want unix.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: err = %v, want %v (%s)", op, err, want, unix.ErrnoName(want))
	}
}

// volAssertFile checks that p is a regular file holding want.
func volAssertFile(t testing.TB, p, want string) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("read %s: %v, want %q", p, err, want)
		return
	}
	if string(got) != want {
		t.Errorf("%s = %q, want %q", p, got, want)
	}
}

// volAssertMissing checks that p does not exist (lstat says ENOENT).
func volAssertMissing(t testing.TB, p string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); !errors.Is(err, unix.ENOENT) {
		t.Errorf("lstat %s: err = %v (mode %o), want ENOENT", p, err, st.Mode)
	}
}

// volNames lists directory p, without . and .., sorted.
func volNames(t testing.TB, p string) []string {
	t.Helper()
	ents, err := os.ReadDir(p)
	if err != nil {
		t.Errorf("readdir %s: %v", p, err)
		return nil
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// volAssertNames checks the listing of directory p.
func volAssertNames(t testing.TB, p string, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := volNames(t, p); !slices.Equal(got, want) {
		t.Errorf("ls %s = %q, want %q", p, got, want)
	}
}

// volNothingUnder fails if the upper holds anything strictly below the
// union path dst: a volume keeps no state in the upper.
func volNothingUnder(t testing.TB, upper, dst string) {
	t.Helper()
	prefix := strings.Trim(dst, "/") + "/"
	for p, n := range snapshot(t, upper, skipStateDir()) {
		if strings.HasPrefix(p, prefix) {
			t.Errorf("upper has %s (%s) under the volume destination %s", p, n.Type, dst)
		}
	}
}

// volEventually retries check for up to timeout: for what the documented
// 1 s entry and attribute cache of a volume may delay in another mount.
func volEventually(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// volReadEquals is a check for volEventually.
func volReadEquals(p, want string) func() error {
	return func() error {
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if string(got) != want {
			return fmt.Errorf("%s = %q, want %q", p, got, want)
		}
		return nil
	}
}

// volMountFails runs a mount that must be refused: non-zero exit, one
// "unionfs: " line, and nothing mounted at the mountpoint.
func volMountFails(t *testing.T, mnt string, want []string, args ...string) {
	t.Helper()
	requireFUSE(t)
	mnt = resolvePath(t, mnt)
	argv := append(append([]string{"mount"}, args...), mnt)
	stdout, stderr, exit := runUnionfs(t, argv...)
	if _, mounted := mountedFS(t, mnt); mounted {
		t.Errorf("unionfs %s: %s is mounted, want nothing mounted", strings.Join(argv, " "), mnt)
		if err := forceUnmount(mnt); err != nil {
			t.Errorf("cleanup: lazy unmount of %s: %v", mnt, err)
		}
	}
	if exit == 0 {
		t.Errorf("unionfs %s: exit 0, want a refusal\nstdout:\n%s\nstderr:\n%s", strings.Join(argv, " "), stdout, stderr)
		return
	}
	volAssertOneErrorLine(t, stderr, want...)
	for _, line := range strings.Split(strings.TrimSpace(volRun(t, "ps", "-q")), "\n") {
		if strings.TrimSpace(line) == mnt {
			t.Errorf("unionfs ps lists %s after a refused mount", mnt)
		}
	}
}

// volAppend appends s to the file p, creating it.
func volAppend(p, s string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// volNewMountpoint is an empty directory to mount on.
func volNewMountpoint(t testing.TB) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	return resolvePath(t, mnt)
}

// volStack is a fresh lower (with a marker file) and upper.
func volStack(t testing.TB) (lower, upper string) {
	t.Helper()
	lower, upper = resolvePath(t, t.TempDir()), resolvePath(t, t.TempDir())
	writeTree(t, lower, tree{"etc/os-release": file("ID=test\n"), "bin/sh": fileMode("#!", 0o755)})
	return lower, upper
}

// ---------------------------------------------------------------------------
// Bind volumes: data path

// TestVolumeBindWritesGoToSource: writes under DST land in SRC the moment
// write(2) returns, deletions delete from SRC, the upper gains nothing under
// DST, and everything stays in SRC after unmount.
func TestVolumeBindWritesGoToSource(t *testing.T) {
	t.Parallel()
	lower, upper := volStack(t)
	src := resolvePath(t, t.TempDir())
	writeTree(t, src, tree{"existing.txt": file("old data"), "doomed.txt": file("bye"), "d/": dir(0o755)})
	lowerSum := checksumTree(t, lower)

	mnt := mountUnion(t, "-l", lower, "-u", upper, "-v", src+":/data", "--root", t.TempDir())
	data := filepath.Join(mnt, "data")

	volAssertFile(t, filepath.Join(data, "existing.txt"), "old data")
	volAssertNames(t, data, "existing.txt", "doomed.txt", "d")

	// The data is in SRC as soon as write returns: no close, no fsync.
	f, err := os.OpenFile(filepath.Join(data, "new.txt"), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o640)
	if err != nil {
		t.Fatalf("create through the volume: %v", err)
	}
	if _, err := f.Write([]byte("hello")); err != nil {
		t.Fatalf("write through the volume: %v", err)
	}
	volAssertFile(t, filepath.Join(src, "new.txt"), "hello")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := permOf(t, filepath.Join(src, "new.txt")); got != 0o640 {
		t.Errorf("src/new.txt mode %o, want 640", got)
	}

	// An existing SRC file is written in place, not copied anywhere.
	var before unix.Stat_t
	if err := unix.Lstat(filepath.Join(src, "existing.txt"), &before); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "existing.txt"), []byte("new data"), 0o644); err != nil {
		t.Fatalf("overwrite through the volume: %v", err)
	}
	volAssertFile(t, filepath.Join(src, "existing.txt"), "new data")
	var after unix.Stat_t
	if err := unix.Lstat(filepath.Join(src, "existing.txt"), &after); err != nil {
		t.Fatal(err)
	}
	if after.Ino != before.Ino {
		t.Errorf("src/existing.txt was replaced (inode %d -> %d), want it written in place", before.Ino, after.Ino)
	}

	// Directories, symlinks and renames inside the volume are SRC's too.
	if err := os.MkdirAll(filepath.Join(data, "d", "sub"), 0o755); err != nil {
		t.Fatalf("mkdir through the volume: %v", err)
	}
	if err := os.WriteFile(filepath.Join(data, "d", "sub", "f"), []byte("deep"), 0o644); err != nil {
		t.Fatal(err)
	}
	volAssertFile(t, filepath.Join(src, "d", "sub", "f"), "deep")
	if err := os.Symlink("new.txt", filepath.Join(data, "link")); err != nil {
		t.Fatalf("symlink through the volume: %v", err)
	}
	if got, err := os.Readlink(filepath.Join(src, "link")); err != nil || got != "new.txt" {
		t.Errorf("src/link -> %q, %v; want new.txt", got, err)
	}
	if err := os.Rename(filepath.Join(data, "new.txt"), filepath.Join(data, "d", "renamed.txt")); err != nil {
		t.Fatalf("rename inside the volume: %v", err)
	}
	volAssertMissing(t, filepath.Join(src, "new.txt"))
	volAssertFile(t, filepath.Join(src, "d", "renamed.txt"), "hello")

	// A file deleted under DST is deleted from SRC.
	if err := os.Remove(filepath.Join(data, "doomed.txt")); err != nil {
		t.Fatalf("unlink through the volume: %v", err)
	}
	volAssertMissing(t, filepath.Join(src, "doomed.txt"))
	volAssertMissing(t, filepath.Join(data, "doomed.txt"))

	volNothingUnder(t, upper, "/data")

	umountUnion(t, mnt)
	volAssertFile(t, filepath.Join(src, "d", "renamed.txt"), "hello")
	volAssertFile(t, filepath.Join(src, "existing.txt"), "new data")
	volAssertFile(t, filepath.Join(src, "d", "sub", "f"), "deep")
	volAssertMissing(t, filepath.Join(src, "doomed.txt"))
	volNothingUnder(t, upper, "/data")
	assertUnchanged(t, lowerSum, lower)

	// No state in the upper: without the volume, nothing is left at /data
	// (no copy, no whiteout, no directory made for it).
	mountUnionAt(t, mnt, "-l", lower, "-u", upper)
	volAssertMissing(t, filepath.Join(mnt, "data"))
	volAssertFile(t, filepath.Join(mnt, "etc", "os-release"), "ID=test\n")
}

// TestVolumeRelativeSource: -v ./REL:DST is a host directory relative to
// the caller's working directory.
func TestVolumeRelativeSource(t *testing.T) {
	t.Parallel()
	lower, upper := volStack(t)
	src := resolvePath(t, t.TempDir())
	writeTree(t, src, tree{"hello": file("relative")})
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(cwd, src)
	if err != nil {
		t.Fatal(err)
	}
	spec := "./" + rel + ":/data"

	mnt := mountUnion(t, "-l", lower, "-u", upper, "-v", spec, "--root", t.TempDir())
	volAssertFile(t, filepath.Join(mnt, "data", "hello"), "relative")
	if err := os.WriteFile(filepath.Join(mnt, "data", "w"), []byte("x"), 0o644); err != nil {
		t.Fatalf("write through the volume: %v", err)
	}
	volAssertFile(t, filepath.Join(src, "w"), "x")
	out, _ := volInspect(t, mnt)
	if len(out.Mounts) != 1 || out.Mounts[0].Source != src || out.Mounts[0].Type != "bind" {
		t.Errorf("inspect Mounts = %+v, want one bind mount of %s", out.Mounts, src)
	}
}

// TestVolumeOptionForm: volume=SRC:DST in -o, and a colon in SRC escaped
// as \: (in -o and in -v).
func TestVolumeOptionForm(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args func(src string) []string
	}{
		{"-o volume=", func(src string) []string {
			return []string{"-o", `volume=` + strings.ReplaceAll(src, ":", `\:`) + ":/data"}
		}},
		{"-o volume= with other options", func(src string) []string {
			return []string{"-o", `noatime,volume=` + strings.ReplaceAll(src, ":", `\:`) + ":/data:rw,nodev"}
		}},
		{"-v", func(src string) []string {
			return []string{"-v", strings.ReplaceAll(src, ":", `\:`) + ":/data"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lower, upper := volStack(t)
			src := filepath.Join(resolvePath(t, t.TempDir()), "with:colon")
			if err := os.Mkdir(src, 0o755); err != nil {
				t.Fatal(err)
			}
			writeTree(t, src, tree{"in-src": file("colon")})

			args := append([]string{"-l", lower, "-u", upper, "--root", t.TempDir()}, tc.args(src)...)
			mnt := mountUnion(t, args...)
			volAssertFile(t, filepath.Join(mnt, "data", "in-src"), "colon")
			if err := os.WriteFile(filepath.Join(mnt, "data", "w"), []byte("via option"), 0o644); err != nil {
				t.Fatalf("write through the volume: %v", err)
			}
			volAssertFile(t, filepath.Join(src, "w"), "via option")
			volNothingUnder(t, upper, "/data")
			out, _ := volInspect(t, mnt)
			if len(out.Mounts) != 1 {
				t.Fatalf("inspect Mounts = %+v, want one", out.Mounts)
			}
			if m := out.Mounts[0]; m.Type != "bind" || m.Source != src || m.Destination != "/data" || !m.RW {
				t.Errorf("inspect Mounts[0] = %+v, want bind %s -> /data rw", m, src)
			}
		})
	}
}

// TestVolumeReadOnlyVolume: SRC:DST:ro serves reads and refuses every
// write with EROFS; the rest of the union stays writable.
func TestVolumeReadOnlyVolume(t *testing.T) {
	t.Parallel()
	lower, upper := volStack(t)
	src := resolvePath(t, t.TempDir())
	writeTree(t, src, tree{"f": file("read me"), "d/": dir(0o755), "d/g": file("g"), "empty/": dir(0o755)})
	srcSum := checksumTree(t, src)

	mnt := mountUnion(t, "-l", lower, "-u", upper, "-v", src+":/data:ro", "--root", t.TempDir())
	data := filepath.Join(mnt, "data")

	volAssertFile(t, filepath.Join(data, "f"), "read me")
	volAssertFile(t, filepath.Join(data, "d", "g"), "g")
	volAssertNames(t, data, "f", "d", "empty")

	p := func(rel string) string { return filepath.Join(data, rel) }
	volAssertErrno(t, "create", os.WriteFile(p("new"), []byte("x"), 0o644), unix.EROFS)
	volAssertErrno(t, "unlink", os.Remove(p("f")), unix.EROFS)
	volAssertErrno(t, "mkdir", os.Mkdir(p("newdir"), 0o755), unix.EROFS)
	volAssertErrno(t, "rmdir", unix.Rmdir(p("empty")), unix.EROFS)
	volAssertErrno(t, "chmod", os.Chmod(p("f"), 0o600), unix.EROFS)
	volAssertErrno(t, "truncate", os.Truncate(p("f"), 0), unix.EROFS)
	_, err := os.OpenFile(p("f"), os.O_WRONLY, 0)
	volAssertErrno(t, "open O_WRONLY", err, unix.EROFS)
	volAssertErrno(t, "symlink", os.Symlink("f", p("l")), unix.EROFS)
	volAssertErrno(t, "rename", os.Rename(p("f"), p("f2")), unix.EROFS)
	volAssertErrno(t, "utimes", os.Chtimes(p("f"), fixtureTime, fixtureTime), unix.EROFS)
	volAssertErrno(t, "link", os.Link(p("f"), p("f3")), unix.EROFS)

	// The union around it is still writable.
	if err := os.WriteFile(filepath.Join(mnt, "outside"), []byte("ok"), 0o644); err != nil {
		t.Errorf("write outside the read-only volume: %v", err)
	}
	volAssertFile(t, filepath.Join(upper, "outside"), "ok")

	out, _ := volInspect(t, mnt)
	if len(out.Mounts) != 1 || out.Mounts[0].RW || out.Mounts[0].Mode != "ro" {
		t.Errorf("inspect Mounts = %+v, want one with RW false, Mode ro", out.Mounts)
	}
	volNothingUnder(t, upper, "/data")
	assertUnchanged(t, srcSum, src)
}

// TestVolumeReadOnlyUnion: a mount without an upper is read-only, but its
// volumes are not (as docker run --read-only -v): they stay writable
// unless :ro.
func TestVolumeReadOnlyUnion(t *testing.T) {
	t.Parallel()
	lower, _ := volStack(t)
	rw := resolvePath(t, t.TempDir())
	ro := resolvePath(t, t.TempDir())
	writeTree(t, ro, tree{"f": file("ro")})
	lowerSum, roSum := checksumTree(t, lower), checksumTree(t, ro)

	mnt := mountUnion(t, "-l", lower, "-v", rw+":/data", "-v", ro+":/srv/ro:ro", "--root", t.TempDir())

	volAssertErrno(t, "create in the read-only union", os.WriteFile(filepath.Join(mnt, "x"), nil, 0o644), unix.EROFS)
	volAssertErrno(t, "mkdir in the read-only union", os.Mkdir(filepath.Join(mnt, "etc", "x"), 0o755), unix.EROFS)

	if err := os.WriteFile(filepath.Join(mnt, "data", "w"), []byte("writable"), 0o644); err != nil {
		t.Errorf("write into a rw volume of a read-only union: %v, want success", err)
	} else {
		volAssertFile(t, filepath.Join(rw, "w"), "writable")
	}
	if err := os.Mkdir(filepath.Join(mnt, "data", "sub"), 0o755); err != nil {
		t.Errorf("mkdir in a rw volume of a read-only union: %v, want success", err)
	}

	volAssertFile(t, filepath.Join(mnt, "srv", "ro", "f"), "ro")
	volAssertErrno(t, "create in the :ro volume", os.WriteFile(filepath.Join(mnt, "srv", "ro", "n"), nil, 0o644), unix.EROFS)

	out, _ := volInspect(t, mnt)
	if !out.ReadOnly || out.Upper != "" {
		t.Errorf("inspect: ReadOnly %v, Upper %q; want true and none", out.ReadOnly, out.Upper)
	}
	assertUnchanged(t, lowerSum, lower)
	assertUnchanged(t, roSum, ro)
}

// ---------------------------------------------------------------------------
// Bind volumes: where they appear

// TestVolumeShadowsLayers: DST hides whatever the layers have at that path;
// listing DST shows SRC's entries only, and the layers are left alone.
func TestVolumeShadowsLayers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		lower tree
		upper tree
		hide  []string // union paths the volume must hide
	}{
		{"lower dir", tree{"data/lower-file": file("L"), "data/lower-dir/x": file("x")}, nil,
			[]string{"data/lower-file", "data/lower-dir"}},
		{"upper dir", nil, tree{"data/upper-file": file("U")},
			[]string{"data/upper-file"}},
		{"lower and upper dir", tree{"data/lower-file": file("L"), "data/same": file("lower")},
			tree{"data/upper-file": file("U"), "data/same": file("upper")},
			[]string{"data/lower-file", "data/upper-file"}},
		{"lower file", tree{"data": file("not a dir")}, nil, nil},
		{"lower symlink", tree{"data": symlink("/etc")}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lower, upper := resolvePath(t, t.TempDir()), resolvePath(t, t.TempDir())
			writeTree(t, lower, tc.lower)
			writeTree(t, upper, tc.upper)
			src := resolvePath(t, t.TempDir())
			writeTree(t, src, tree{"vol-file": file("V"), "same": file("volume")})
			lowerSum := checksumTree(t, lower)

			mnt := mountUnion(t, "-l", lower, "-u", upper, "-v", src+":/data", "--root", t.TempDir())
			upperSum := checksumTree(t, upper, skipStateDir())
			data := filepath.Join(mnt, "data")

			var st unix.Stat_t
			if err := unix.Lstat(data, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
				t.Fatalf("lstat %s: mode %o, %v; want the volume's directory", data, st.Mode, err)
			}
			volAssertNames(t, data, "vol-file", "same")
			volAssertFile(t, filepath.Join(data, "same"), "volume")
			volAssertFile(t, filepath.Join(data, "vol-file"), "V")
			for _, h := range tc.hide {
				volAssertMissing(t, filepath.Join(mnt, h))
			}
			// The root listing shows data once, as a directory.
			ents, err := os.ReadDir(mnt)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, e := range ents {
				if e.Name() == "data" {
					n++
					if !e.IsDir() {
						t.Errorf("readdir %s: data has type %v, want a directory", mnt, e.Type())
					}
				}
			}
			if n != 1 {
				t.Errorf("readdir %s: data listed %d times, want once", mnt, n)
			}

			// Writes go to SRC; the shadowed layer dirs are not touched.
			if err := os.WriteFile(filepath.Join(data, "lower-file"), []byte("new"), 0o644); err != nil {
				t.Errorf("create a name the volume shadows: %v", err)
			}
			volAssertFile(t, filepath.Join(src, "lower-file"), "new")
			if err := os.Remove(filepath.Join(data, "same")); err != nil {
				t.Errorf("unlink in the volume: %v", err)
			}
			volAssertMissing(t, filepath.Join(src, "same"))

			umountUnion(t, mnt)
			assertUnchanged(t, lowerSum, lower)
			assertUnchanged(t, upperSum, upper, skipStateDir())
		})
	}
}

// TestVolumeDestinationParents: DST need not exist in any layer: its
// parents appear, made in the upper when there is one.
func TestVolumeDestinationParents(t *testing.T) {
	t.Parallel()
	t.Run("with upper", func(t *testing.T) {
		t.Parallel()
		lower, upper := volStack(t)
		src := resolvePath(t, t.TempDir())
		writeTree(t, src, tree{"v": file("deep volume")})
		lowerSum := checksumTree(t, lower)

		mnt := mountUnion(t, "-l", lower, "-u", upper, "-v", src+":/a/b/data", "-v", src+":/etc/app/data", "--root", t.TempDir())
		volAssertFile(t, filepath.Join(mnt, "a", "b", "data", "v"), "deep volume")
		volAssertFile(t, filepath.Join(mnt, "etc", "app", "data", "v"), "deep volume")
		volAssertNames(t, mnt, "a", "bin", "etc")
		volAssertNames(t, filepath.Join(mnt, "a"), "b")
		volAssertNames(t, filepath.Join(mnt, "a", "b"), "data")
		volAssertNames(t, filepath.Join(mnt, "etc"), "app", "os-release")
		volAssertFile(t, filepath.Join(mnt, "etc", "os-release"), "ID=test\n")
		for _, d := range []string{"a", "a/b", "etc/app"} {
			if fi, err := os.Lstat(filepath.Join(upper, d)); err != nil || !fi.IsDir() {
				t.Errorf("upper/%s: %v; want a directory made for the volume's parents", d, err)
			}
		}
		// Parents are ordinary union directories: a file next to the volume
		// goes to the upper.
		if err := os.WriteFile(filepath.Join(mnt, "a", "b", "sibling"), []byte("s"), 0o644); err != nil {
			t.Errorf("create next to the volume: %v", err)
		}
		volAssertFile(t, filepath.Join(upper, "a", "b", "sibling"), "s")
		volNothingUnder(t, upper, "/a/b/data")
		volNothingUnder(t, upper, "/etc/app/data")
		assertUnchanged(t, lowerSum, lower)
	})
	t.Run("read-only", func(t *testing.T) {
		t.Parallel()
		lower, _ := volStack(t)
		src := resolvePath(t, t.TempDir())
		writeTree(t, src, tree{"v": file("deep volume")})
		lowerSum := checksumTree(t, lower)

		mnt := mountUnion(t, "-l", lower, "-v", src+":/a/b/data", "--root", t.TempDir())
		volAssertFile(t, filepath.Join(mnt, "a", "b", "data", "v"), "deep volume")
		volAssertNames(t, mnt, "a", "bin", "etc")
		volAssertNames(t, filepath.Join(mnt, "a"), "b")
		volAssertNames(t, filepath.Join(mnt, "a", "b"), "data")
		for _, d := range []string{"a", "a/b"} {
			if fi, err := os.Lstat(filepath.Join(mnt, d)); err != nil || !fi.IsDir() {
				t.Errorf("%s: %v; want a directory leading to the volume", d, err)
			}
		}
		umountUnion(t, mnt)
		assertUnchanged(t, lowerSum, lower)
	})
}

// ---------------------------------------------------------------------------
// Bind volumes: isolation

// TestVolumeSymlinksServedNotFollowed: symlinks in SRC pointing out of it
// are served as symlinks; ".." at DST's root is the union's directory.
func TestVolumeSymlinksServedNotFollowed(t *testing.T) {
	t.Parallel()
	lower, upper := volStack(t)
	parent := resolvePath(t, t.TempDir())
	writeTree(t, parent, tree{
		"src-sibling-marker": file("must not be reachable through the volume"),
		"src/etc-link":       symlink("/etc"),
		"src/passwd-link":    symlink("/etc/passwd"),
		"src/up-link":        symlink("../src-sibling-marker"),
		"src/deep-up":        symlink("../../../../../../.."),
		"src/plain":          file("plain"),
	})
	src := filepath.Join(parent, "src")

	mnt := mountUnion(t, "-l", lower, "-u", upper, "-v", src+":/a/data", "--root", t.TempDir())
	data := filepath.Join(mnt, "a", "data")

	for name, target := range map[string]string{
		"etc-link":    "/etc",
		"passwd-link": "/etc/passwd",
		"up-link":     "../src-sibling-marker",
		"deep-up":     "../../../../../../..",
	} {
		p := filepath.Join(data, name)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK {
			t.Errorf("lstat %s: mode %o, %v; want a symlink", p, st.Mode, err)
		}
		if got, err := os.Readlink(p); err != nil || got != target {
			t.Errorf("readlink %s = %q, %v; want %q", p, got, err, target)
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err == nil {
			unix.Close(fd)
		}
		volAssertErrno(t, "open O_NOFOLLOW "+name, err, unix.ELOOP)
	}
	ents, err := os.ReadDir(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == "etc-link" && e.Type() != os.ModeSymlink {
			t.Errorf("readdir: etc-link has type %v, want a symlink", e.Type())
		}
	}
	// The kernel, on the client's side, resolves "../src-sibling-marker"
	// against the union's /a, where there is no such file.
	_, err = os.ReadFile(filepath.Join(data, "up-link"))
	volAssertErrno(t, "read through up-link", err, unix.ENOENT)

	// ".." at DST's root is the union's /a, not SRC's parent.
	var dotdot, a unix.Stat_t
	if err := unix.Stat(filepath.Join(data, ".."), &dotdot); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(filepath.Join(mnt, "a"), &a); err != nil {
		t.Fatal(err)
	}
	if dotdot.Dev != a.Dev || dotdot.Ino != a.Ino {
		t.Errorf("stat data/..: dev %d ino %d; want the union's /a, dev %d ino %d", dotdot.Dev, dotdot.Ino, a.Dev, a.Ino)
	}
	volAssertNames(t, filepath.Join(data, ".."), "data")
	volAssertMissing(t, filepath.Join(data, "..", "src-sibling-marker"))
	volAssertNames(t, filepath.Join(data, "..", ".."), "a", "bin", "etc")
	volAssertFile(t, filepath.Join(data, "..", "..", "etc", "os-release"), "ID=test\n")
}

// TestVolumeHostSymlinkSwapDoesNotEscape: a directory of SRC that the host
// replaces by a symlink to elsewhere, while the kernel still has it cached
// as a directory, must not let operations through the volume reach the
// symlink's target: the server never follows symlinks in SRC.
func TestVolumeHostSymlinkSwapDoesNotEscape(t *testing.T) {
	t.Parallel()
	lower, upper := volStack(t)
	src := resolvePath(t, t.TempDir())
	writeTree(t, src, tree{"sub/victim": file("inside"), "sub/secret": file("inside")})
	outside := resolvePath(t, t.TempDir())
	writeTree(t, outside, tree{"victim": file("outside victim"), "secret": file("outside secret")})
	outsideSum := checksumTree(t, outside)

	mnt := mountUnion(t, "-l", lower, "-u", upper, "-v", src+":/data", "--root", t.TempDir())
	sub := filepath.Join(mnt, "data", "sub")

	// Let the kernel cache data/sub as a directory (1 s), then swap it.
	var st unix.Stat_t
	if err := unix.Lstat(sub, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Fatalf("lstat %s: mode %o, %v", sub, st.Mode, err)
	}
	if err := os.Rename(filepath.Join(src, "sub"), filepath.Join(src, "sub.moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(src, "sub")); err != nil {
		t.Fatal(err)
	}

	// Whatever each of these returns, none may touch or read outside.
	if got, err := os.ReadFile(filepath.Join(sub, "secret")); err == nil && string(got) == "outside secret" {
		t.Errorf("read data/sub/secret through the volume returned the file outside SRC")
	}
	err1 := os.Remove(filepath.Join(sub, "victim"))
	err2 := os.Mkdir(filepath.Join(sub, "made"), 0o755)
	err3 := os.WriteFile(filepath.Join(sub, "created"), []byte("x"), 0o644)
	t.Logf("after the swap: unlink %v, mkdir %v, create %v", err1, err2, err3)
	assertUnchanged(t, outsideSum, outside)
}

// TestVolumeRenameLinkAcrossIsEXDEV: a volume is another filesystem for
// rename and link; inside it both work.
func TestVolumeRenameLinkAcrossIsEXDEV(t *testing.T) {
	t.Parallel()
	lower, upper := volStack(t)
	writeTree(t, lower, tree{"lower-file": file("L"), "lower-dir/x": file("x")})
	writeTree(t, upper, tree{"upper-file": file("U")})
	src := resolvePath(t, t.TempDir())
	writeTree(t, src, tree{"vfile": file("V"), "vdir/": dir(0o755)})

	mnt := mountUnion(t, "-l", lower, "-u", upper, "-v", src+":/data", "--root", t.TempDir())
	m := func(rel string) string { return filepath.Join(mnt, rel) }
	srcSum := checksumTree(t, src)

	volAssertErrno(t, "rename volume file -> union", unix.Rename(m("data/vfile"), m("moved")), unix.EXDEV)
	volAssertErrno(t, "rename volume dir -> union", unix.Rename(m("data/vdir"), m("moved-dir")), unix.EXDEV)
	volAssertErrno(t, "rename upper file -> volume", unix.Rename(m("upper-file"), m("data/moved")), unix.EXDEV)
	volAssertErrno(t, "rename lower file -> volume", unix.Rename(m("lower-file"), m("data/moved")), unix.EXDEV)
	volAssertErrno(t, "rename lower dir -> volume", unix.Rename(m("lower-dir"), m("data/moved-dir")), unix.EXDEV)
	volAssertErrno(t, "rename upper file over volume file", unix.Rename(m("upper-file"), m("data/vfile")), unix.EXDEV)
	volAssertErrno(t, "RENAME_EXCHANGE union <-> volume",
		unix.Renameat2(unix.AT_FDCWD, m("upper-file"), unix.AT_FDCWD, m("data/vfile"), unix.RENAME_EXCHANGE), unix.EXDEV)
	volAssertErrno(t, "link volume file -> union", os.Link(m("data/vfile"), m("linked")), unix.EXDEV)
	volAssertErrno(t, "link upper file -> volume", os.Link(m("upper-file"), m("data/linked")), unix.EXDEV)
	volAssertErrno(t, "link lower file -> volume", os.Link(m("lower-file"), m("data/linked")), unix.EXDEV)

	assertUnchanged(t, srcSum, src)
	volAssertFile(t, m("upper-file"), "U")
	volAssertFile(t, m("lower-file"), "L")
	for _, p := range []string{"moved", "moved-dir", "linked"} {
		volAssertMissing(t, m(p))
		volAssertMissing(t, filepath.Join(upper, p))
	}

	// Inside the volume, rename and link work and act on SRC.
	if err := os.Link(m("data/vfile"), m("data/vdir/hard")); err != nil {
		t.Errorf("link inside the volume: %v", err)
	}
	if err := unix.Rename(m("data/vfile"), m("data/vdir/vfile")); err != nil {
		t.Errorf("rename inside the volume: %v", err)
	}
	volAssertFile(t, filepath.Join(src, "vdir", "vfile"), "V")
	volAssertFile(t, filepath.Join(src, "vdir", "hard"), "V")
	volAssertMissing(t, filepath.Join(src, "vfile"))
	var a, b unix.Stat_t
	if err := unix.Lstat(filepath.Join(src, "vdir", "vfile"), &a); err == nil {
		if err := unix.Lstat(filepath.Join(src, "vdir", "hard"), &b); err == nil && (a.Ino != b.Ino || a.Nlink != 2) {
			t.Errorf("src/vdir/hard is not a hard link of vfile: inodes %d, %d, nlink %d", a.Ino, b.Ino, a.Nlink)
		}
	}
	volNothingUnder(t, upper, "/data")
}

// TestVolumeDestinationIsBusy: DST itself cannot be removed or renamed, nor
// renamed over, as a mountpoint cannot.
func TestVolumeDestinationIsBusy(t *testing.T) {
	t.Parallel()
	lower, upper := volStack(t)
	writeTree(t, lower, tree{"empty-dir/": dir(0o755), "data/shadowed": file("x")})
	src := resolvePath(t, t.TempDir())
	writeTree(t, src, tree{"keep": file("K")})

	mnt := mountUnion(t, "-l", lower, "-u", upper, "-v", src+":/data", "-v", t.TempDir()+":/x/nested", "--root", t.TempDir())
	m := func(rel string) string { return filepath.Join(mnt, rel) }
	srcSum := checksumTree(t, src)

	// unix.Rename, not os.Rename: os.Rename itself refuses a directory
	// over an existing directory with EEXIST, before any syscall.
	volAssertErrno(t, "rmdir DST", unix.Rmdir(m("data")), unix.EBUSY)
	volAssertErrno(t, "rmdir nested DST", unix.Rmdir(m("x/nested")), unix.EBUSY)
	volAssertErrno(t, "rename DST", unix.Rename(m("data"), m("elsewhere")), unix.EBUSY)
	volAssertErrno(t, "rename nested DST", unix.Rename(m("x/nested"), m("x/other")), unix.EBUSY)
	volAssertErrno(t, "rename a dir over DST", unix.Rename(m("empty-dir"), m("data")), unix.EBUSY)
	volAssertErrno(t, "RENAME_EXCHANGE dir <-> DST",
		unix.Renameat2(unix.AT_FDCWD, m("empty-dir"), unix.AT_FDCWD, m("data"), unix.RENAME_EXCHANGE), unix.EBUSY)

	volAssertNames(t, m("data"), "keep")
	volAssertMissing(t, m("elsewhere"))
	if fi, err := os.Lstat(m("empty-dir")); err != nil || !fi.IsDir() {
		t.Errorf("empty-dir: %v, want it still there", err)
	}
	assertUnchanged(t, srcSum, src)
	volAssertMissing(t, filepath.Join(upper, "elsewhere"))
}

// TestVolumeSharedBetweenMounts: two live mounts of one SRC see each
// other's writes. New names may take the documented 1 s entry cache to
// show; new data in an existing file must show on the next open.
func TestVolumeSharedBetweenMounts(t *testing.T) {
	t.Parallel()
	src := resolvePath(t, t.TempDir())
	writeTree(t, src, tree{"grow": file("old"), "same-size": file("old1"), "shrink": file("a longer old text")})
	lowerA, upperA := volStack(t)
	lowerB, upperB := volStack(t)
	mntA := mountUnion(t, "-l", lowerA, "-u", upperA, "-v", src+":/data", "--root", t.TempDir())
	mntB := mountUnion(t, "-l", lowerB, "-u", upperB, "-v", src+":/shared", "--root", t.TempDir())
	a := func(rel string) string { return filepath.Join(mntA, "data", rel) }
	b := func(rel string) string { return filepath.Join(mntB, "shared", rel) }
	const wait = 2 * time.Second

	// A new file, which B had looked for before it existed.
	volAssertMissing(t, b("polled"))
	if err := os.WriteFile(a("polled"), []byte("from A"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := volEventually(wait, volReadEquals(b("polled"), "from A")); err != nil {
		t.Errorf("a file created through mount A, looked up in B before: not visible in B within %v: %v", wait, err)
	}

	// A new file B never looked up, both ways.
	if err := os.WriteFile(a("fresh"), []byte("fresh from A"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := volEventually(wait, volReadEquals(b("fresh"), "fresh from A")); err != nil {
		t.Errorf("a file created through mount A: not visible in B within %v: %v", wait, err)
	}
	if err := os.WriteFile(b("from-b"), []byte("from B"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := volEventually(wait, volReadEquals(a("from-b"), "from B")); err != nil {
		t.Errorf("a file created through mount B: not visible in A within %v: %v", wait, err)
	}
	if err := volEventually(wait, func() error {
		if got := volNames(t, b(".")); !slices.Contains(got, "fresh") {
			return fmt.Errorf("ls = %q, no fresh", got)
		}
		return nil
	}); err != nil {
		t.Errorf("listing B after A created a file: %v", err)
	}

	// New data in existing files: B has read (and cached) the old data;
	// opening again after A's write returned must show the new data.
	for name, content := range map[string]string{
		"grow":      "new, longer content than before",
		"same-size": "new1",
		"shrink":    "short",
	} {
		if _, err := os.ReadFile(b(name)); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(a(name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		volAssertFile(t, filepath.Join(src, name), content)
		if err := volReadEquals(b(name), content)(); err != nil {
			t.Errorf("%s rewritten through A, then opened again in B: %v", name, err)
		}
	}

	// An appending writer in each mount, one after the other.
	if err := volAppend(a("log"), "A1\n"); err != nil {
		t.Fatal(err)
	}
	if err := volEventually(wait, volReadEquals(b("log"), "A1\n")); err != nil {
		t.Fatalf("log: %v", err)
	}
	if err := volAppend(b("log"), "B1\n"); err != nil {
		t.Fatal(err)
	}
	volAssertFile(t, filepath.Join(src, "log"), "A1\nB1\n")
	if err := volReadEquals(a("log"), "A1\nB1\n")(); err != nil {
		t.Errorf("log appended through B, opened again in A: %v", err)
	}

	// A deletion through A shows in B.
	if err := os.Remove(a("polled")); err != nil {
		t.Fatal(err)
	}
	volAssertMissing(t, filepath.Join(src, "polled"))
	if err := volEventually(wait, func() error {
		if _, err := os.Lstat(b("polled")); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("lstat: %v, want ENOENT", err)
		}
		return nil
	}); err != nil {
		t.Errorf("a file removed through A: still in B after %v: %v", wait, err)
	}

	volNothingUnder(t, upperA, "/data")
	volNothingUnder(t, upperB, "/shared")
	umountUnion(t, mntA)
	umountUnion(t, mntB)
	volAssertFile(t, filepath.Join(src, "fresh"), "fresh from A")
	volAssertFile(t, filepath.Join(src, "from-b"), "from B")
}

// ---------------------------------------------------------------------------
// Named and anonymous volumes

// TestVolumeNamedLifecycle: create, ls, inspect, use by name, rm refused
// while mounted and allowed after.
func TestVolumeNamedLifecycle(t *testing.T) {
	t.Parallel()
	root := resolvePath(t, t.TempDir())
	name := volUniqueName(t, "appdata")

	if got := volLs(t, root); len(got) != 0 {
		t.Errorf("volume ls in a fresh root = %q, want none", got)
	}
	start := time.Now().UTC().Truncate(time.Second)
	out := volRun(t, "volume", "create", "--root", root, "--label", "env=test", "--label", "team=storage", name)
	end := time.Now().UTC()
	if strings.TrimSpace(out) != name {
		t.Errorf("volume create printed %q, want the name %q", out, name)
	}
	if got := volLs(t, root); !slices.Equal(got, []string{name}) {
		t.Errorf("volume ls -q = %q, want [%s]", got, name)
	}
	table := volRun(t, "volume", "ls", "--root", root)
	if lines := strings.Split(strings.TrimSpace(table), "\n"); len(lines) != 2 || !strings.Contains(lines[1], name) || !strings.Contains(lines[1], "local") {
		t.Errorf("volume ls = %q, want a header and one line with local and %s", table, name)
	}

	dataDir := filepath.Join(root, "volumes", name, "_data")
	v := volInspectVolume(t, root, name)
	if v.Name != name || v.Driver != "local" || v.Mountpoint != dataDir || v.Scope != "local" {
		t.Errorf("volume inspect = %+v, want Name %s, Driver local, Mountpoint %s, Scope local", v, name, dataDir)
	}
	if v.CreatedAt.Before(start) || v.CreatedAt.After(end) {
		t.Errorf("volume inspect CreatedAt %v, want between %v and %v", v.CreatedAt, start, end)
	}
	if want := map[string]string{"env": "test", "team": "storage"}; !maps.Equal(v.Labels, want) {
		t.Errorf("volume inspect Labels %v, want %v", v.Labels, want)
	}
	var raw []map[string]any
	if err := json.Unmarshal([]byte(volRun(t, "volume", "inspect", "--root", root, name)), &raw); err != nil || len(raw) != 1 {
		t.Fatalf("volume inspect: %v", err)
	}
	for _, k := range []string{"Name", "Driver", "Mountpoint", "CreatedAt", "Labels"} {
		if _, ok := raw[0][k]; !ok {
			t.Errorf("volume inspect has no key %q: %v", k, raw[0])
		}
	}
	if fi, err := os.Stat(dataDir); err != nil || !fi.IsDir() {
		t.Fatalf("%s: %v; want the volume's data directory", dataDir, err)
	}
	volRefused(t, []string{"no-such-volume"}, "volume", "inspect", "--root", root, "no-such-volume")

	// Use it by name.
	lower, upper := volStack(t)
	mnt := mountUnion(t, "-l", lower, "-u", upper, "-v", name+":/var/lib/app", "--root", root)
	if err := os.WriteFile(filepath.Join(mnt, "var", "lib", "app", "db"), []byte("rows"), 0o644); err != nil {
		t.Fatalf("write into the named volume: %v", err)
	}
	volAssertFile(t, filepath.Join(dataDir, "db"), "rows")
	volNothingUnder(t, upper, "/var/lib/app")
	ins, _ := volInspect(t, mnt)
	if len(ins.Mounts) != 1 {
		t.Fatalf("inspect Mounts = %+v, want one", ins.Mounts)
	}
	if m := ins.Mounts[0]; m.Type != "volume" || m.Name != name || m.Source != dataDir || m.Destination != "/var/lib/app" || m.Driver != "local" || !m.RW {
		t.Errorf("inspect Mounts[0] = %+v, want volume %s from %s at /var/lib/app, driver local, rw", m, name, dataDir)
	}

	// rm is refused while the mount uses it.
	volRefused(t, []string{name}, "volume", "rm", "--root", root, name)
	if got := volLs(t, root); !slices.Equal(got, []string{name}) {
		t.Errorf("after a refused rm: volume ls = %q, want [%s]", got, name)
	}
	volAssertFile(t, filepath.Join(dataDir, "db"), "rows")
	volAssertFile(t, filepath.Join(mnt, "var", "lib", "app", "db"), "rows")

	// The data outlives the mount; rm is allowed once unmounted.
	umountUnion(t, mnt)
	volAssertFile(t, filepath.Join(dataDir, "db"), "rows")
	if out := volRun(t, "volume", "rm", "--root", root, name); strings.TrimSpace(out) != name {
		t.Errorf("volume rm printed %q, want %q", out, name)
	}
	if got := volLs(t, root); len(got) != 0 {
		t.Errorf("volume ls after rm = %q, want none", got)
	}
	if _, err := os.Lstat(filepath.Join(root, "volumes", name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("volume dir after rm: %v, want it gone", err)
	}
	volRefused(t, []string{name}, "volume", "rm", "--root", root, name)
}

// TestVolumeNamedCreatedByMount: --volume NAME:DST creates NAME if missing,
// and a second mount by the same name sees the same data.
func TestVolumeNamedCreatedByMount(t *testing.T) {
	t.Parallel()
	root := resolvePath(t, t.TempDir())
	name := volUniqueName(t, "cache")
	lower, upper := volStack(t)

	mnt := mountUnion(t, "-l", lower, "-u", upper, "-v", name+":/cache", "--root", root)
	if got := volLs(t, root); !slices.Equal(got, []string{name}) {
		t.Errorf("volume ls after mounting -v %s:/cache = %q, want [%s]", name, got, name)
	}
	v := volInspectVolume(t, root, name)
	dataDir := filepath.Join(root, "volumes", name, "_data")
	if v.Name != name || v.Driver != "local" || v.Mountpoint != dataDir {
		t.Errorf("volume inspect = %+v, want Name %s, Driver local, Mountpoint %s", v, name, dataDir)
	}
	volAssertNames(t, filepath.Join(mnt, "cache"))
	if err := os.WriteFile(filepath.Join(mnt, "cache", "k"), []byte("v"), 0o644); err != nil {
		t.Fatalf("write into the new volume: %v", err)
	}
	volAssertFile(t, filepath.Join(dataDir, "k"), "v")
	umountUnion(t, mnt)

	lower2, upper2 := volStack(t)
	mnt2 := mountUnion(t, "-l", lower2, "-u", upper2, "-v", name+":/again:ro", "--root", root)
	volAssertFile(t, filepath.Join(mnt2, "again", "k"), "v")
	if got := volLs(t, root); !slices.Equal(got, []string{name}) {
		t.Errorf("volume ls after the second mount = %q, want [%s]", got, name)
	}
}

// TestVolumeAnonymous: --volume DST alone makes one volume with a generated
// name, listed, inspectable and holding the data.
func TestVolumeAnonymous(t *testing.T) {
	t.Parallel()
	root := resolvePath(t, t.TempDir())
	lower, upper := volStack(t)

	mnt := mountUnion(t, "-l", lower, "-u", upper, "-v", "/scratch", "--root", root)
	names := volLs(t, root)
	if len(names) != 1 {
		t.Errorf("volume ls after mounting one anonymous volume = %q, want exactly one volume", names)
	}
	ins, _ := volInspect(t, mnt)
	if len(ins.Mounts) != 1 {
		t.Fatalf("inspect Mounts = %+v, want one", ins.Mounts)
	}
	m := ins.Mounts[0]
	if m.Type != "volume" || m.Destination != "/scratch" || !m.RW || m.Driver != "local" {
		t.Errorf("inspect Mounts[0] = %+v, want a local rw volume at /scratch", m)
	}
	if !volNameRE.MatchString(m.Name) || len(m.Name) < 12 {
		t.Errorf("anonymous volume name %q: want a generated valid name", m.Name)
	}
	if !slices.Contains(names, m.Name) {
		t.Errorf("the mount uses volume %q, but volume ls lists %q", m.Name, names)
	}
	dataDir := filepath.Join(root, "volumes", m.Name, "_data")
	if m.Source != dataDir {
		t.Errorf("inspect Mounts[0].Source = %q, want %q", m.Source, dataDir)
	}
	if err := os.WriteFile(filepath.Join(mnt, "scratch", "tmp"), []byte("anon"), 0o644); err != nil {
		t.Fatalf("write into the anonymous volume: %v", err)
	}
	volAssertFile(t, filepath.Join(dataDir, "tmp"), "anon")
	volNothingUnder(t, upper, "/scratch")
	if v := volInspectVolume(t, root, m.Name); v.Mountpoint != dataDir || v.Driver != "local" {
		t.Errorf("volume inspect %s = %+v", m.Name, v)
	}
	volRefused(t, []string{m.Name}, "volume", "rm", "--root", root, m.Name)

	// It outlives the mount, like docker's anonymous volumes without --rm.
	umountUnion(t, mnt)
	volAssertFile(t, filepath.Join(dataDir, "tmp"), "anon")
}

// TestVolumePrune: prune removes the volumes no live mount uses, and only
// those.
func TestVolumePrune(t *testing.T) {
	t.Parallel()
	root := resolvePath(t, t.TempDir())
	unused := volUniqueName(t, "unused")
	used := volUniqueName(t, "used")
	volRun(t, "volume", "create", "--root", root, unused)
	volRun(t, "volume", "create", "--root", root, used)
	if err := os.WriteFile(filepath.Join(root, "volumes", used, "_data", "keep"), []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	lower, upper := volStack(t)
	mnt := mountUnion(t, "-l", lower, "-u", upper, "-v", used+":/data", "--root", root)

	out := volRun(t, "volume", "prune", "--root", root)
	if got := strings.Fields(out); !slices.Equal(got, []string{unused}) {
		t.Errorf("volume prune printed %q, want [%s]", got, unused)
	}
	if got := volLs(t, root); !slices.Equal(got, []string{used}) {
		t.Errorf("volume ls after prune = %q, want [%s]", got, used)
	}
	volAssertFile(t, filepath.Join(mnt, "data", "keep"), "k")
	volAssertFile(t, filepath.Join(root, "volumes", used, "_data", "keep"), "k")

	umountUnion(t, mnt)
	out = volRun(t, "volume", "prune", "--root", root)
	if got := strings.Fields(out); !slices.Equal(got, []string{used}) {
		t.Errorf("volume prune after unmount printed %q, want [%s]", got, used)
	}
	if got := volLs(t, root); len(got) != 0 {
		t.Errorf("volume ls after the second prune = %q, want none", got)
	}
}

// TestVolumeInUseIsPerRoot: a live mount uses the volume NAME of its own
// store root; the same name in another root is not in use.
func TestVolumeInUseIsPerRoot(t *testing.T) {
	t.Parallel()
	rootA, rootB := resolvePath(t, t.TempDir()), resolvePath(t, t.TempDir())
	name := volUniqueName(t, "twin")
	volRun(t, "volume", "create", "--root", rootA, name)
	volRun(t, "volume", "create", "--root", rootB, name)
	lower, upper := volStack(t)
	mountUnion(t, "-l", lower, "-u", upper, "-v", name+":/data", "--root", rootA)

	volRefused(t, []string{name}, "volume", "rm", "--root", rootA, name)
	stdout, stderr, exit := runUnionfs(t, "volume", "rm", "--root", rootB, name)
	if exit != 0 {
		t.Errorf("volume rm %s in root B, used only by a mount of root A: exit %d, want 0\nstdout: %sstderr: %s", name, exit, stdout, stderr)
	}
	if got := volLs(t, rootB); len(got) != 0 {
		t.Errorf("volume ls in root B = %q, want none", got)
	}
	if got := volLs(t, rootA); !slices.Equal(got, []string{name}) {
		t.Errorf("volume ls in root A = %q, want [%s]", got, name)
	}
}

// ---------------------------------------------------------------------------
// inspect, ps, info

// TestVolumeInspectJSON: `unionfs inspect MNT` parses and matches the mount.
func TestVolumeInspectJSON(t *testing.T) {
	t.Parallel()
	root := resolvePath(t, t.TempDir())
	top, bottom := resolvePath(t, t.TempDir()), resolvePath(t, t.TempDir())
	writeTree(t, top, tree{"top": file("t")})
	writeTree(t, bottom, tree{"bottom": file("b")})
	upperParent := resolvePath(t, t.TempDir())
	upper, work := filepath.Join(upperParent, "upper"), filepath.Join(upperParent, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bindRW, bindRO := resolvePath(t, t.TempDir()), resolvePath(t, t.TempDir())
	name := volUniqueName(t, "named")

	before := time.Now()
	mnt := mountUnion(t, "-l", top+":"+bottom, "-u", upper, "-w", work, "--root", root,
		"-v", bindRW+":/rw", "-v", bindRO+":/srv/ro:ro", "-v", name+":/named")
	after := time.Now()

	out, raw := volInspect(t, mnt)
	for _, k := range []string{"Mountpoint", "Pid", "Lowers", "Upper", "Workdir", "ReadOnly", "Options", "Mounts", "StartedAt", "FUSEProtocol"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("inspect JSON has no key %q", k)
		}
	}
	if out.Mountpoint != mnt {
		t.Errorf("Mountpoint %q, want %q", out.Mountpoint, mnt)
	}
	if out.Pid <= 0 || unix.Kill(out.Pid, 0) != nil {
		t.Errorf("Pid %d is not a live process", out.Pid)
	}
	if want := []string{top, bottom}; !slices.Equal(out.Lowers, want) {
		t.Errorf("Lowers %q, want %q", out.Lowers, want)
	}
	if out.Upper != upper || out.Workdir != work || out.ReadOnly {
		t.Errorf("Upper %q, Workdir %q, ReadOnly %v; want %q, %q, false", out.Upper, out.Workdir, out.ReadOnly, upper, work)
	}
	if out.StartedAt.Before(before.Add(-time.Second)) || out.StartedAt.After(after.Add(time.Second)) {
		t.Errorf("StartedAt %v, want between %v and %v", out.StartedAt, before, after)
	}
	if !volProtoRE.MatchString(out.FUSEProtocol) {
		t.Errorf("FUSEProtocol %q, want 7.N", out.FUSEProtocol)
	}

	want := map[string]volInspectMount{
		"/rw":     {Type: "bind", Source: bindRW, Destination: "/rw", RW: true},
		"/srv/ro": {Type: "bind", Source: bindRO, Destination: "/srv/ro", Mode: "ro", RW: false},
		"/named": {Type: "volume", Name: name, Source: filepath.Join(root, "volumes", name, "_data"),
			Destination: "/named", Driver: "local", RW: true},
	}
	if len(out.Mounts) != len(want) {
		t.Errorf("Mounts has %d entries, want %d: %+v", len(out.Mounts), len(want), out.Mounts)
	}
	for _, m := range out.Mounts {
		w, ok := want[m.Destination]
		if !ok {
			t.Errorf("unexpected Mounts entry %+v", m)
			continue
		}
		if w.Mode == "" {
			w.Mode = m.Mode // docker leaves Mode free-form for rw mounts
		}
		if m != w {
			t.Errorf("Mounts entry for %s = %+v, want %+v", m.Destination, m, w)
		}
	}
	rawMounts, _ := raw["Mounts"].([]any)
	for _, rm := range rawMounts {
		e, _ := rm.(map[string]any)
		for _, k := range []string{"Type", "Source", "Destination", "Mode", "RW"} {
			if _, ok := e[k]; !ok {
				t.Errorf("Mounts entry %v has no key %q", e, k)
			}
		}
		if e["Type"] == "volume" {
			for _, k := range []string{"Name", "Driver"} {
				if _, ok := e[k]; !ok {
					t.Errorf("volume Mounts entry %v has no key %q", e, k)
				}
			}
		}
	}

	// The default workdir is shown too: a mount with an upper has one.
	t.Run("default workdir", func(t *testing.T) {
		lower2, upper2 := volStack(t)
		mnt2 := mountUnion(t, "-l", lower2, "-u", upper2, "--root", root)
		out2, _ := volInspect(t, mnt2)
		if out2.Upper != upper2 {
			t.Errorf("Upper %q, want %q", out2.Upper, upper2)
		}
		if out2.Workdir == "" {
			t.Errorf("Workdir is empty for a mount with an upper and the default work dir")
		} else if fi, err := os.Stat(out2.Workdir); err != nil || !fi.IsDir() {
			t.Errorf("Workdir %s: %v, want an existing directory", out2.Workdir, err)
		}
		if out2.Mounts == nil {
			t.Errorf("Mounts is null for a mount without volumes, want []")
		}
	})

	volRefused(t, []string{"not a live unionfs mount"}, "inspect", t.TempDir())
}

// TestVolumePs: `unionfs ps` (and `unionfs mounts`) lists each live mount
// on one line, and forgets it after unmount.
func TestVolumePs(t *testing.T) {
	t.Parallel()
	lower, upper := volStack(t)
	src := resolvePath(t, t.TempDir())
	mnt := mountUnion(t, "-l", lower, "-u", upper, "-v", src+":/data", "--root", t.TempDir())
	ins, _ := volInspect(t, mnt)

	lineFor := func(out string) []string {
		var hits []string
		for line := range strings.Lines(out) {
			if f := strings.Fields(line); len(f) > 0 && f[0] == mnt {
				hits = append(hits, line)
			}
		}
		return hits
	}
	for _, cmd := range []string{"ps", "mounts"} {
		out := volRun(t, cmd)
		hits := lineFor(out)
		if len(hits) != 1 {
			t.Errorf("unionfs %s: %d lines for %s, want 1:\n%s", cmd, len(hits), mnt, out)
			continue
		}
		if f := strings.Fields(hits[0]); !slices.Contains(f, fmt.Sprint(ins.Pid)) {
			t.Errorf("unionfs %s line %q does not show the server pid %d", cmd, hits[0], ins.Pid)
		}
	}
	if hits := lineFor(volRun(t, "ps", "-q")); len(hits) != 1 {
		t.Errorf("unionfs ps -q: %d lines for %s, want 1", len(hits), mnt)
	}

	umountUnion(t, mnt)
	if hits := lineFor(volRun(t, "ps")); len(hits) != 0 {
		t.Errorf("unionfs ps after unmount still lists %s: %q", mnt, hits)
	}
}

// TestVolumeInfo: `unionfs info --format json` parses and counts the
// root's volumes and the live mounts.
func TestVolumeInfo(t *testing.T) {
	t.Parallel()
	root := resolvePath(t, t.TempDir())
	created := volUniqueName(t, "created")
	byMount := volUniqueName(t, "bymount")
	volRun(t, "volume", "create", "--root", root, created)

	var info volInfoOut
	if err := json.Unmarshal([]byte(volRun(t, "info", "--format", "json", "--root", root)), &info); err != nil {
		t.Fatalf("info --format json does not parse: %v", err)
	}
	if info.Volumes != 1 || info.StorageRoot != root {
		t.Errorf("info before mounting: Volumes %d, StorageRoot %q; want 1, %q", info.Volumes, info.StorageRoot, root)
	}

	lower, upper := volStack(t)
	src := resolvePath(t, t.TempDir())
	mnt := mountUnion(t, "-l", lower, "-u", upper, "--root", root, "-v", byMount+":/cache", "-v", src+":/data")
	lower2, _ := volStack(t)
	mountUnion(t, "-l", lower2, "--root", root)
	ins, _ := volInspect(t, mnt)

	stdout := volRun(t, "info", "--format", "json", "--root", root)
	var raw map[string]any
	if err := json.Unmarshal([]byte(stdout), &raw); err != nil {
		t.Fatalf("info --format json does not parse: %v\n%s", err, stdout)
	}
	for _, k := range []string{"Version", "StorageRoot", "StorageFilesystem", "Images", "Layers", "Volumes", "Mounts",
		"UpperFilesystems", "FUSEProtocol", "PassthroughCapable", "ReflinksAvailable"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("info JSON has no key %q", k)
		}
	}
	info = volInfoOut{}
	if err := json.Unmarshal([]byte(stdout), &info); err != nil {
		t.Fatal(err)
	}
	if info.Volumes != 2 {
		t.Errorf("info Volumes %d, want 2 (one created, one made by a mount; bind volumes are not named volumes)", info.Volumes)
	}
	// Other test processes may have mounts of their own: at least ours.
	if info.Mounts < 2 {
		t.Errorf("info Mounts %d with two live mounts, want at least 2", info.Mounts)
	}
	if info.StorageRoot != root || info.StorageFilesystem == "" || info.Version == "" {
		t.Errorf("info StorageRoot %q, StorageFilesystem %q, Version %q", info.StorageRoot, info.StorageFilesystem, info.Version)
	}
	if _, ok := info.UpperFilesystems[upper]; !ok {
		t.Errorf("info UpperFilesystems %v has no entry for the live upper %s", info.UpperFilesystems, upper)
	}
	if !volProtoRE.MatchString(info.FUSEProtocol) || info.FUSEProtocol != ins.FUSEProtocol {
		t.Errorf("info FUSEProtocol %q with a live mount, want the mount's %q", info.FUSEProtocol, ins.FUSEProtocol)
	}

	text := volRun(t, "info", "--root", root)
	if !regexp.MustCompile(`(?m)^Volumes:\s+2$`).MatchString(text) {
		t.Errorf("info text output has no \"Volumes: 2\" line:\n%s", text)
	}
	if !strings.Contains(text, root) {
		t.Errorf("info text output does not show the storage root %s:\n%s", root, text)
	}
}

// ---------------------------------------------------------------------------
// Bad input

// TestVolumeBadInput: each bad volume is refused with one "unionfs:" line
// and a non-zero exit, and nothing is mounted.
func TestVolumeBadInput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// args returns the volume arguments and what the error must
		// mention, given a fresh source dir and the mountpoint.
		args func(t *testing.T, src, mnt string) (args, want []string)
	}{
		{"missing source", func(t *testing.T, src, mnt string) ([]string, []string) {
			missing := filepath.Join(src, "does-not-exist")
			return []string{"-v", missing + ":/data"}, []string{missing}
		}},
		{"source is a file", func(t *testing.T, src, mnt string) ([]string, []string) {
			f := filepath.Join(src, "file")
			if err := os.WriteFile(f, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return []string{"-v", f + ":/data"}, []string{f}
		}},
		{"relative destination", func(t *testing.T, src, mnt string) ([]string, []string) {
			return []string{"-v", src + ":data"}, []string{"data"}
		}},
		{"destination /", func(t *testing.T, src, mnt string) ([]string, []string) {
			return []string{"-v", src + ":/"}, []string{"/"}
		}},
		{"same destination twice", func(t *testing.T, src, mnt string) ([]string, []string) {
			return []string{"-v", src + ":/data", "-v", t.TempDir() + ":/data"}, []string{"/data"}
		}},
		{"nested destinations", func(t *testing.T, src, mnt string) ([]string, []string) {
			return []string{"-v", src + ":/data", "-v", t.TempDir() + ":/data/sub"}, []string{"/data", "/data/sub"}
		}},
		{"nested destinations inner first via -o", func(t *testing.T, src, mnt string) ([]string, []string) {
			return []string{"-v", t.TempDir() + ":/data/sub", "-o", "volume=" + src + ":/data"}, []string{"/data", "/data/sub"}
		}},
		{"source is the mountpoint", func(t *testing.T, src, mnt string) ([]string, []string) {
			return []string{"-v", mnt + ":/data"}, []string{mnt}
		}},
		{"source inside the mountpoint", func(t *testing.T, src, mnt string) ([]string, []string) {
			inner := filepath.Join(mnt, "inner")
			if err := os.Mkdir(inner, 0o755); err != nil {
				t.Fatal(err)
			}
			return []string{"-v", inner + ":/data"}, []string{inner}
		}},
		{"source contains the mountpoint", func(t *testing.T, src, mnt string) ([]string, []string) {
			return []string{"-v", filepath.Dir(mnt) + ":/data"}, []string{filepath.Dir(mnt)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lower, upper := volStack(t)
			src := resolvePath(t, t.TempDir())
			mnt := volNewMountpoint(t)
			vargs, want := tc.args(t, src, mnt)
			upperSum := checksumTree(t, upper)
			args := append([]string{"-l", lower, "-u", upper, "--root", t.TempDir()}, vargs...)
			volMountFails(t, mnt, want, args...)
			assertUnchanged(t, upperSum, upper)
		})
	}
}
