package copyup

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// skipOrFail skips the test on a developer machine but fails it in CI: a
// suite that silently skips in CI is a hidden red. (A copy of the helper in
// test/harness_test.go.)
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set, so this is a failure, not a skip)", msg)
	}
	t.Skip(msg)
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root (euid is %d)", os.Geteuid())
	}
}

// Times with nanoseconds that a copy rounding to microseconds or seconds
// would lose. The atime is an hour ahead, after any ctime the test makes,
// so that under relatime the test's own reads (readlink has no O_NOATIME)
// do not move it; oldAtime is one that relatime would update on a read.
var (
	testAtime = unix.NsecToTimespec(time.Now().Add(time.Hour).Truncate(time.Second).Add(123456789).UnixNano())
	testMtime = unix.NsecToTimespec(time.Date(2002, 3, 4, 5, 6, 7, 987654321, time.UTC).UnixNano())
	oldAtime  = unix.NsecToTimespec(time.Date(2001, 2, 3, 4, 5, 6, 123456789, time.UTC).UnixNano())
)

const testUID, testGID = 1234, 5678

// fixture is a lower directory and an upper and work directory on one
// filesystem, each with an O_PATH descriptor as Copy takes them.
type fixture struct {
	lower, upper, work       string
	lowerFd, upperFd, workFd int
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	root := t.TempDir()
	f := &fixture{
		lower: filepath.Join(root, "lower"),
		upper: filepath.Join(root, "upper"),
		work:  filepath.Join(root, "work"),
	}
	for _, d := range []string{f.lower, f.upper, f.work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f.lowerFd = openDir(t, f.lower)
	f.upperFd = openDir(t, f.upper)
	f.workFd = openDir(t, f.work)
	return f
}

func openDir(t *testing.T, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// checkWorkEmpty fails unless the work dir holds nothing: a copy leaves no
// temporary behind, whether it succeeded or failed.
func (f *fixture) checkWorkEmpty(t *testing.T) {
	t.Helper()
	ents, err := os.ReadDir(f.work)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("work dir holds %q, want nothing", names)
	}
}

// snapshot is everything about one entry that a copy must reproduce or
// leave alone.
type snapshot struct {
	Mode, UID, GID   uint32
	Rdev             uint64
	Size, Blocks     int64
	Ino, Nlink       uint64
	Atim, Mtim, Ctim unix.Timespec
	Xattrs           map[string]string
	Data             [32]byte // digest of the data segments (offset and bytes)
	Target           string   // symlink target
	Entries          []string // directory entries
}

func takeSnapshot(t *testing.T, p string) snapshot {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	s := snapshot{
		Mode: st.Mode, UID: st.Uid, GID: st.Gid, Rdev: st.Rdev, Size: st.Size, Blocks: st.Blocks,
		Ino: st.Ino, Nlink: st.Nlink, Atim: st.Atim, Mtim: st.Mtim, Ctim: st.Ctim,
		Xattrs: readXattrs(t, p),
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		s.Data = dataDigest(t, p)
	case unix.S_IFLNK:
		target, err := os.Readlink(p)
		if err != nil {
			t.Fatal(err)
		}
		s.Target = target
	case unix.S_IFDIR:
		f := openNoAtime(t, p, unix.O_DIRECTORY)
		defer f.Close()
		names, err := f.Readdirnames(-1)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(names)
		s.Entries = names
	}
	return s
}

// openNoAtime opens p for reading without moving its atime, so that
// looking at a file does not change what is being checked.
func openNoAtime(t *testing.T, p string, flags int) *os.File {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOATIME|flags, 0)
	if errors.Is(err, unix.EPERM) { // not the owner, without CAP_FOWNER
		fd, err = unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|flags, 0)
	}
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	return os.NewFile(uintptr(fd), p)
}

func readXattrs(t *testing.T, p string) map[string]string {
	t.Helper()
	m := make(map[string]string)
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ENOTSUP) {
		return m
	}
	if err != nil {
		t.Fatalf("llistxattr %s: %v", p, err)
	}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		val := make([]byte, 64<<10)
		k, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			t.Fatalf("lgetxattr %s %s: %v", p, name, err)
		}
		m[name] = string(val[:k])
	}
	return m
}

// dataDigest hashes a regular file's data segments with their offsets, and
// its size: two files with the same digest have the same content and the
// same holes. It reads only the data, so a 1 GiB sparse file is cheap.
func dataDigest(t *testing.T, p string) [32]byte {
	t.Helper()
	if unix.Access(p, unix.R_OK) != nil {
		// A source made unreadable on purpose: its mode and ctime still
		// show any change.
		return sha256.Sum256([]byte("unreadable"))
	}
	f := openNoAtime(t, p, 0)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	binary.Write(h, binary.BigEndian, fi.Size())
	fd := int(f.Fd())
	for off := int64(0); off < fi.Size(); {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			t.Fatalf("seek data %s: %v", p, err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			t.Fatalf("seek hole %s: %v", p, err)
		}
		buf := make([]byte, hole-data)
		if _, err := f.ReadAt(buf, data); err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		binary.Write(h, binary.BigEndian, data)
		binary.Write(h, binary.BigEndian, hole-data)
		h.Write(buf)
		off = hole
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// sameSource is the source-unchanged check. The atime is left out: reading
// the data may move it, which TestCopyLeavesSourceAtime checks on its own.
func sameSource(t *testing.T, before, after snapshot) {
	t.Helper()
	before.Atim, after.Atim = unix.Timespec{}, unix.Timespec{}
	if !equalSnapshots(before, after) {
		t.Errorf("source changed:\n before %+v\n after  %+v", before, after)
	}
}

func equalSnapshots(a, b snapshot) bool {
	ax, bx := a.Xattrs, b.Xattrs
	ae, be := a.Entries, b.Entries
	a.Xattrs, b.Xattrs, a.Entries, b.Entries = nil, nil, nil, nil
	return a.Mode == b.Mode && a.UID == b.UID && a.GID == b.GID && a.Rdev == b.Rdev &&
		a.Size == b.Size && a.Blocks == b.Blocks && a.Ino == b.Ino && a.Nlink == b.Nlink &&
		a.Atim == b.Atim && a.Mtim == b.Mtim && a.Ctim == b.Ctim && a.Data == b.Data &&
		a.Target == b.Target && maps.Equal(ax, bx) && slices.Equal(ae, be)
}

// copiedXattrs are the attributes a copy must carry: user.*, trusted.*
// and security.capability minus the layer markers. Others (an LSM's
// security.selinux) are the system's business.
func copiedXattrs(m map[string]string) map[string]string {
	out := make(map[string]string)
	for k, v := range m {
		if isMarkerForTest(k) {
			continue
		}
		if strings.HasPrefix(k, "user.") || strings.HasPrefix(k, "trusted.") || k == "security.capability" {
			out[k] = v
		}
	}
	return out
}

// isMarkerForTest spells the layer markers out rather than calling
// isLayerMarker, so that a wrong prefix there fails here.
func isMarkerForTest(name string) bool {
	for _, p := range []string{"trusted.overlay.", "user.overlay.", "user.fuseoverlayfs."} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// checkCopyOf checks that the entry at dst is a copy of the one src was:
// type, mode, owner, times to the nanosecond, xattrs, and data, target or
// (for a directory) no entries at all.
func checkCopyOf(t *testing.T, src snapshot, dst string) {
	t.Helper()
	got := takeSnapshot(t, dst)
	if got.Mode != src.Mode {
		t.Errorf("mode = %#o, want %#o", got.Mode, src.Mode)
	}
	if got.UID != src.UID || got.GID != src.GID {
		t.Errorf("owner = %d:%d, want %d:%d", got.UID, got.GID, src.UID, src.GID)
	}
	if got.Atim != src.Atim {
		t.Errorf("atime = %v, want %v", tsString(got.Atim), tsString(src.Atim))
	}
	if got.Mtim != src.Mtim {
		t.Errorf("mtime = %v, want %v", tsString(got.Mtim), tsString(src.Mtim))
	}
	if want, have := copiedXattrs(src.Xattrs), copiedXattrs(got.Xattrs); !maps.Equal(want, have) {
		t.Errorf("xattrs = %q, want %q", have, want)
	}
	for name := range got.Xattrs {
		if isMarkerForTest(name) {
			t.Errorf("layer marker %s was copied", name)
		}
	}
	switch src.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if got.Size != src.Size {
			t.Errorf("size = %d, want %d", got.Size, src.Size)
		}
		if got.Data != src.Data {
			t.Errorf("data (or its holes) differ from the source's")
		}
	case unix.S_IFLNK:
		if got.Target != src.Target {
			t.Errorf("target = %q, want %q", got.Target, src.Target)
		}
	case unix.S_IFDIR:
		if len(got.Entries) != 0 {
			t.Errorf("directory copy holds %q, want nothing (contents are not copied)", got.Entries)
		}
	case unix.S_IFCHR, unix.S_IFBLK:
		if got.Rdev != src.Rdev {
			t.Errorf("rdev = %d:%d, want %d:%d", unix.Major(got.Rdev), unix.Minor(got.Rdev), unix.Major(src.Rdev), unix.Minor(src.Rdev))
		}
	}
}

func tsString(ts unix.Timespec) string {
	return time.Unix(ts.Unix()).UTC().Format(time.RFC3339Nano)
}

func setTimes(t *testing.T, p string) {
	t.Helper()
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{testAtime, testMtime}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatalf("set times of %s: %v", p, err)
	}
}

func setXattr(t *testing.T, p, name, val string) {
	t.Helper()
	if err := unix.Lsetxattr(p, name, []byte(val), 0); err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			t.Skipf("%s: xattrs unsupported here", p)
		}
		t.Fatalf("setxattr %s %s: %v", p, name, err)
	}
}

func chown(t *testing.T, p string, uid, gid int) {
	t.Helper()
	if err := os.Lchown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
}

func chmod(t *testing.T, p string, mode uint32) {
	t.Helper()
	// os.Chmod maps Go's mode bits; the set-id and sticky bits are
	// simplest to pass through unix directly.
	if err := unix.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// capV2 is a valid VFS_CAP_REVISION_2 security.capability value:
// effective, permitted CAP_NET_BIND_SERVICE.
func capV2() string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|0x1) // revision 2 | effective
	binary.LittleEndian.PutUint32(b[4:], 1<<unix.CAP_NET_BIND_SERVICE)
	return string(b)
}

const (
	gib        = 1 << 30
	sparseOff2 = 600 << 20
)

func TestCopy(t *testing.T) {
	uid, gid := os.Getuid(), os.Getgid()
	// markers sets every layer marker this process may set.
	markers := func(t *testing.T, p string) {
		setXattr(t, p, "user.overlay.opaque", "y")
		setXattr(t, p, "user.overlay.redirect", "/elsewhere")
		setXattr(t, p, "user.fuseoverlayfs.opaque", "y")
		if os.Geteuid() == 0 {
			setXattr(t, p, "trusted.overlay.opaque", "y")
			setXattr(t, p, "trusted.overlay.redirect", "/elsewhere")
		}
	}
	tests := []struct {
		name string
		root bool
		// make creates the source at p.
		make   func(t *testing.T, p string)
		noData bool
		over   *Override
		// check, if set, replaces the default check that dst is a copy
		// of src.
		check func(t *testing.T, src snapshot, dst string)
	}{
		{
			name: "regular file",
			make: func(t *testing.T, p string) {
				writeFile(t, p, randomBytes(t, 3<<20+17))
				chmod(t, p, 0o640)
				setXattr(t, p, "user.a", "1")
				setXattr(t, p, "user.binary", "\x00\xff\x00")
				setTimes(t, p)
			},
		},
		{
			name: "regular file: set-id bits, owner and capability",
			root: true,
			make: func(t *testing.T, p string) {
				writeFile(t, p, []byte("#!/bin/sh\necho hi\n"))
				chown(t, p, testUID, testGID)
				setXattr(t, p, "security.capability", capV2())
				chmod(t, p, 0o6755)
				setXattr(t, p, "user.a", "1")
				setXattr(t, p, "trusted.other", "kept")
				setTimes(t, p)
			},
			check: func(t *testing.T, src snapshot, dst string) {
				if src.Mode != unix.S_IFREG|0o6755 || src.UID != testUID || src.Xattrs["security.capability"] != capV2() {
					t.Fatalf("fixture: source is %+v", src)
				}
				checkCopyOf(t, src, dst)
			},
		},
		{
			name: "sparse file",
			make: func(t *testing.T, p string) {
				f, err := os.Create(p)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.WriteAt(randomBytes(t, 5000), 0); err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteAt(randomBytes(t, 7000), sparseOff2); err != nil {
					t.Fatal(err)
				}
				if err := f.Truncate(gib); err != nil {
					t.Fatal(err)
				}
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
				setTimes(t, p)
			},
			check: func(t *testing.T, src snapshot, dst string) {
				if src.Blocks > 1024 {
					t.Skipf("the source is not sparse here (%d blocks)", src.Blocks)
				}
				checkCopyOf(t, src, dst)
				got := takeSnapshot(t, dst)
				if got.Size != gib {
					t.Errorf("size = %d, want 1 GiB", got.Size)
				}
				// Two data regions of a few blocks; a dense copy would
				// have 2 Mi 512-byte blocks.
				if got.Blocks > 1024 {
					t.Errorf("copy has %d blocks (source %d): the holes were filled", got.Blocks, src.Blocks)
				}
			},
		},
		{
			name: "empty file",
			make: func(t *testing.T, p string) {
				writeFile(t, p, nil)
				chmod(t, p, 0o600)
				setXattr(t, p, "user.e", "")
				setTimes(t, p)
			},
		},
		{
			name:   "NoData",
			noData: true,
			make: func(t *testing.T, p string) {
				writeFile(t, p, randomBytes(t, 100<<10))
				chmod(t, p, 0o751)
				setXattr(t, p, "user.a", "1")
				setTimes(t, p)
			},
			check: func(t *testing.T, src snapshot, dst string) {
				got := takeSnapshot(t, dst)
				if got.Size != 0 {
					t.Errorf("size = %d, want 0 (NoData)", got.Size)
				}
				// Everything else is the source's.
				src.Size, src.Data = 0, got.Data
				checkCopyOf(t, src, dst)
			},
		},
		{
			name: "symlink",
			make: func(t *testing.T, p string) {
				if err := os.Symlink("../some/target with spaces", p); err != nil {
					t.Fatal(err)
				}
				if os.Geteuid() == 0 {
					chown(t, p, testUID, testGID)
				}
				setTimes(t, p)
			},
		},
		{
			name: "directory, without its contents",
			make: func(t *testing.T, p string) {
				if err := os.Mkdir(p, 0o755); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(p, "child"), []byte("x"))
				if err := os.Mkdir(filepath.Join(p, "subdir"), 0o755); err != nil {
					t.Fatal(err)
				}
				if os.Geteuid() == 0 {
					chown(t, p, testUID, testGID)
					chmod(t, p, 0o3775)
				} else {
					chmod(t, p, 0o1751)
				}
				setXattr(t, p, "user.d", "dir")
				setTimes(t, p)
			},
		},
		{
			name: "fifo",
			make: func(t *testing.T, p string) {
				if err := unix.Mkfifo(p, 0o640); err != nil {
					t.Fatal(err)
				}
				chmod(t, p, 0o640)
				if os.Geteuid() == 0 {
					chown(t, p, testUID, testGID)
				}
				setTimes(t, p)
			},
		},
		{
			name: "socket node",
			make: func(t *testing.T, p string) {
				if err := unix.Mknod(p, unix.S_IFSOCK|0o600, 0); err != nil {
					t.Fatal(err)
				}
				setTimes(t, p)
			},
		},
		{
			name: "char device",
			root: true,
			make: func(t *testing.T, p string) {
				if err := unix.Mknod(p, unix.S_IFCHR|0o620, int(unix.Mkdev(1, 3))); err != nil {
					t.Fatal(err)
				}
				chmod(t, p, 0o620)
				chown(t, p, testUID, testGID)
				setXattr(t, p, "trusted.dev", "x")
				setTimes(t, p)
			},
		},
		{
			name: "layer markers on a directory are not copied",
			make: func(t *testing.T, p string) {
				if err := os.Mkdir(p, 0o755); err != nil {
					t.Fatal(err)
				}
				markers(t, p)
				setXattr(t, p, "user.keep", "k")
				setXattr(t, p, "user.overlayish", "not a marker")
				setTimes(t, p)
			},
			check: func(t *testing.T, src snapshot, dst string) {
				checkCopyOf(t, src, dst)
				got := readXattrs(t, dst)
				if got["user.keep"] != "k" || got["user.overlayish"] != "not a marker" {
					t.Errorf("xattrs = %q, want user.keep and user.overlayish kept", got)
				}
			},
		},
		{
			name: "layer markers on a file are not copied",
			make: func(t *testing.T, p string) {
				writeFile(t, p, []byte("data"))
				markers(t, p)
				setXattr(t, p, "user.keep", "k")
				setTimes(t, p)
			},
		},
		{
			name: "Override: mode and xattrs of a regular file",
			make: func(t *testing.T, p string) {
				writeFile(t, p, []byte("placeholder data"))
				chmod(t, p, 0o644)
				setXattr(t, p, "user.k", "from the layer")
				setTimes(t, p)
			},
			over: &Override{
				UID: uint32(uid), GID: uint32(gid), Mode: unix.S_IFREG | 0o751,
				Xattrs: map[string][]byte{
					"user.k":                    []byte("from the image"),
					"user.img":                  []byte("v"),
					"user.overlay.opaque":       []byte("y"),
					"user.fuseoverlayfs.opaque": []byte("y"),
				},
			},
			check: func(t *testing.T, src snapshot, dst string) {
				want := src
				want.Mode = unix.S_IFREG | 0o751
				want.Xattrs = map[string]string{"user.k": "from the image", "user.img": "v"}
				checkCopyOf(t, want, dst)
			},
		},
		{
			name: "Override: set-id root binary with a capability",
			root: true,
			make: func(t *testing.T, p string) {
				writeFile(t, p, []byte("binary"))
				chown(t, p, testUID, testGID)
				chmod(t, p, 0o644)
				setTimes(t, p)
			},
			over: &Override{
				UID: 0, GID: 0, Mode: unix.S_IFREG | 0o4755,
				Xattrs: map[string][]byte{"security.capability": []byte(capV2())},
			},
			check: func(t *testing.T, src snapshot, dst string) {
				want := src
				want.Mode, want.UID, want.GID = unix.S_IFREG|0o4755, 0, 0
				want.Xattrs = map[string]string{"security.capability": capV2()}
				checkCopyOf(t, want, dst)
			},
		},
		{
			name: "Override: placeholder file to char device 1:3",
			root: true,
			make: func(t *testing.T, p string) {
				writeFile(t, p, nil)
				chmod(t, p, 0o644)
				setTimes(t, p)
			},
			over: &Override{
				UID: testUID, GID: testGID, Mode: unix.S_IFCHR | 0o620, Rdev: unix.Mkdev(1, 3),
				Xattrs: map[string][]byte{
					"trusted.img":            []byte("v"),
					"trusted.overlay.opaque": []byte("y"),
				},
			},
			check: func(t *testing.T, src snapshot, dst string) {
				want := src
				want.Mode, want.Rdev, want.UID, want.GID = unix.S_IFCHR|0o620, unix.Mkdev(1, 3), testUID, testGID
				want.Xattrs = map[string]string{"trusted.img": "v"}
				checkCopyOf(t, want, dst)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root {
				requireRoot(t)
			}
			f := newFixture(t)
			if err := os.Mkdir(filepath.Join(f.lower, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			srcPath := filepath.Join(f.lower, "sub", "entry")
			tt.make(t, srcPath)
			before := takeSnapshot(t, srcPath)

			got, err := Copy(Source{Dirfd: f.lowerFd, Path: "sub/entry"}, Dest{Dirfd: f.upperFd, Name: "copy"},
				Options{WorkFd: f.workFd, NoData: tt.noData, NoSync: true, Override: tt.over})
			if err != nil {
				t.Fatalf("Copy: %v", err)
			}
			dst := filepath.Join(f.upper, "copy")
			if tt.check != nil {
				tt.check(t, before, dst)
			} else {
				checkCopyOf(t, before, dst)
			}
			var st unix.Stat_t
			if err := unix.Lstat(dst, &st); err != nil {
				t.Fatal(err)
			}
			if got.Ino != st.Ino || got.Mode != st.Mode || got.Uid != st.Uid || got.Gid != st.Gid ||
				got.Size != st.Size || got.Rdev != st.Rdev || got.Mtim != st.Mtim || got.Atim != st.Atim {
				t.Errorf("Copy returned stat %+v, but the copy's is %+v", got, st)
			}
			f.checkWorkEmpty(t)
			sameSource(t, before, takeSnapshot(t, srcPath))
		})
	}
}

// TestCopySync runs the default (fsyncing) path once: NoSync is what the
// table uses for speed.
func TestCopySync(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.lower, "file")
	writeFile(t, src, []byte("synced"))
	setTimes(t, src)
	before := takeSnapshot(t, src)
	if _, err := Copy(Source{f.lowerFd, "file"}, Dest{f.upperFd, "file"}, Options{WorkFd: f.workFd}); err != nil {
		t.Fatal(err)
	}
	checkCopyOf(t, before, filepath.Join(f.upper, "file"))
	f.checkWorkEmpty(t)
}

func TestCopyFails(t *testing.T) {
	longName := "user." + strings.Repeat("n", 300) // over XATTR_NAME_MAX: ERANGE
	tests := []struct {
		name string
		// make creates the source at lower/src and whatever else the
		// case needs; it returns the destination name.
		make    func(t *testing.T, f *fixture) string
		over    *Override
		wantErr error // nil: any error
		// keep is a path (relative to upper) that must be left as it was.
		keep string
	}{
		{
			name: "destination exists: file",
			make: func(t *testing.T, f *fixture) string {
				writeFile(t, filepath.Join(f.lower, "src"), []byte("new"))
				writeFile(t, filepath.Join(f.upper, "dst"), []byte("old"))
				return "dst"
			},
			wantErr: ErrExists,
			keep:    "dst",
		},
		{
			name: "destination exists: directory over directory",
			make: func(t *testing.T, f *fixture) string {
				if err := os.Mkdir(filepath.Join(f.lower, "src"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(filepath.Join(f.upper, "dst"), 0o700); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(f.upper, "dst", "inside"), []byte("x"))
				return "dst"
			},
			wantErr: ErrExists,
			keep:    "dst",
		},
		{
			name: "destination exists: dangling symlink",
			make: func(t *testing.T, f *fixture) string {
				writeFile(t, filepath.Join(f.lower, "src"), []byte("new"))
				if err := os.Symlink("nowhere", filepath.Join(f.upper, "dst")); err != nil {
					t.Fatal(err)
				}
				return "dst"
			},
			wantErr: ErrExists,
			keep:    "dst",
		},
		{
			name: "destination parent missing: file",
			make: func(t *testing.T, f *fixture) string {
				writeFile(t, filepath.Join(f.lower, "src"), []byte("data"))
				return "missing/dst"
			},
			wantErr: unix.ENOENT,
		},
		{
			name: "destination parent missing: directory",
			make: func(t *testing.T, f *fixture) string {
				if err := os.Mkdir(filepath.Join(f.lower, "src"), 0o755); err != nil {
					t.Fatal(err)
				}
				return "missing/dst"
			},
			wantErr: unix.ENOENT,
		},
		{
			name: "source missing",
			make: func(t *testing.T, f *fixture) string {
				return "dst"
			},
			wantErr: unix.ENOENT,
		},
		{
			name: "override xattr that cannot be set: file, after its data",
			make: func(t *testing.T, f *fixture) string {
				writeFile(t, filepath.Join(f.lower, "src"), randomBytes(t, 1<<20))
				return "dst"
			},
			over:    &Override{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), Mode: unix.S_IFREG | 0o644, Xattrs: map[string][]byte{longName: []byte("v")}},
			wantErr: unix.ERANGE,
		},
		{
			name: "override xattr that cannot be set: directory",
			make: func(t *testing.T, f *fixture) string {
				if err := os.Mkdir(filepath.Join(f.lower, "src"), 0o755); err != nil {
					t.Fatal(err)
				}
				return "dst"
			},
			over:    &Override{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), Mode: unix.S_IFDIR | 0o755, Xattrs: map[string][]byte{longName: []byte("v")}},
			wantErr: unix.ERANGE,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			dstName := tt.make(t, f)
			srcPath := filepath.Join(f.lower, "src")
			var before snapshot
			_, statErr := os.Lstat(srcPath)
			if statErr == nil {
				before = takeSnapshot(t, srcPath)
			}
			var keepBefore snapshot
			if tt.keep != "" {
				keepBefore = takeSnapshot(t, filepath.Join(f.upper, tt.keep))
			}

			_, err := Copy(Source{Dirfd: f.lowerFd, Path: "src"}, Dest{Dirfd: f.upperFd, Name: dstName},
				Options{WorkFd: f.workFd, NoSync: true, Override: tt.over})
			if err == nil {
				t.Fatal("Copy succeeded, want an error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Copy: %v, want %v", err, tt.wantErr)
			}
			if !errors.Is(tt.wantErr, ErrExists) && errors.Is(err, ErrExists) {
				t.Errorf("Copy: %v, not ErrExists", err)
			}
			f.checkWorkEmpty(t)
			if tt.keep != "" {
				after := takeSnapshot(t, filepath.Join(f.upper, tt.keep))
				keepBefore.Atim, after.Atim = unix.Timespec{}, unix.Timespec{}
				if !equalSnapshots(keepBefore, after) {
					t.Errorf("existing destination changed:\n before %+v\n after  %+v", keepBefore, after)
				}
			} else if _, err := os.Lstat(filepath.Join(f.upper, dstName)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a failed copy left %s: lstat: %v", dstName, err)
			}
			if statErr == nil {
				sameSource(t, before, takeSnapshot(t, srcPath))
			}
		})
	}
}

// TestCopyShortSource copies a source whose data ends before its stat size
// says: a sysfs attribute claims 4096 bytes and reads a few. The copy must
// fail and never be renamed into place half-written.
func TestCopyShortSource(t *testing.T) {
	const dir, name = "/sys/devices/system/cpu", "online"
	var st unix.Stat_t
	if err := unix.Stat(dir+"/"+name, &st); err != nil {
		t.Skipf("no sysfs attribute to read: %v", err)
	}
	data, err := os.ReadFile(dir + "/" + name)
	if err != nil {
		t.Skipf("read %s/%s: %v", dir, name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || int64(len(data)) >= st.Size {
		t.Skipf("%s/%s is not shorter than its size (%d bytes of %d)", dir, name, len(data), st.Size)
	}
	f := newFixture(t)
	srcFd := openDir(t, dir)
	_, err = Copy(Source{Dirfd: srcFd, Path: name}, Dest{Dirfd: f.upperFd, Name: "dst"}, Options{WorkFd: f.workFd, NoSync: true})
	if err == nil {
		got, _ := os.ReadFile(filepath.Join(f.upper, "dst"))
		t.Fatalf("Copy of a source that ends after %d of %d bytes succeeded (copy holds %d bytes)", len(data), st.Size, len(got))
	}
	t.Logf("Copy: %v", err)
	if _, err := os.Lstat(filepath.Join(f.upper, "dst")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed copy was renamed into place: lstat: %v", err)
	}
	f.checkWorkEmpty(t)
}

// TestCopyLeavesSourceAtime: a copy-up reads the lower file, and the lower
// layer is read-only to the union, so its atime must not move (kernel
// overlayfs opens the lower file with O_NOATIME for its copy-up). The
// times here are old enough that relatime would update the atime.
func TestCopyLeavesSourceAtime(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.lower, "file")
	writeFile(t, src, randomBytes(t, 64<<10))
	if err := unix.UtimesNano(src, []unix.Timespec{oldAtime, testMtime}); err != nil {
		t.Fatal(err)
	}
	if _, err := Copy(Source{f.lowerFd, "file"}, Dest{f.upperFd, "file"}, Options{WorkFd: f.workFd, NoSync: true}); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		t.Fatal(err)
	}
	if st.Atim != oldAtime {
		t.Errorf("source atime = %s after the copy, want %s (unchanged)", tsString(st.Atim), tsString(oldAtime))
	}
}

// TestCopyConcurrentSameDest: of two copies racing to one destination,
// exactly one wins and the other reports ErrExists; no temporary remains.
func TestCopyConcurrentSameDest(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.lower, "file")
	writeFile(t, src, randomBytes(t, 256<<10))
	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := Copy(Source{f.lowerFd, "file"}, Dest{f.upperFd, "file"}, Options{WorkFd: f.workFd, NoSync: true})
			errs <- err
		}()
	}
	var ok, exists int
	for range n {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, ErrExists):
			exists++
		default:
			t.Errorf("Copy: %v", err)
		}
	}
	if ok != 1 || exists != n-1 {
		t.Errorf("%d copies succeeded and %d reported ErrExists, want 1 and %d", ok, exists, n-1)
	}
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(f.upper, "file"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("the copy's data differ from the source's")
	}
	f.checkWorkEmpty(t)
}
