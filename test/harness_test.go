package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unionfs/unionfs/whiteout"
)

// ---------------------------------------------------------------------------
// Environment requirements

// skipOrFail skips the test on a developer machine but fails it in CI: a
// suite that silently skips in CI is a hidden red.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set, so this is a failure, not a skip)", msg)
	}
	t.Skip(msg)
}

// noRingEnv set makes every mountUnion mount with -o noio_uring: `make
// test` runs this package once more with it where the kernel offers FUSE
// over io_uring, so that both transports run the suite.
const noRingEnv = "UNIONFS_TEST_NOIOURING"

// requireFUSE stops the test unless this process can mount a FUSE
// filesystem: /dev/fuse opens read-write, and we are root or have the
// setuid fusermount3 helper.
func requireFUSE(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no mounts (make test-short)")
	}
	if reason := fuseProblem(); reason != "" {
		skipOrFail(t, "FUSE unavailable: %s", reason)
	}
}

func fuseProblem() string {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Sprintf("open /dev/fuse: %v", err)
	}
	// Nothing was written, so a close error cannot lose data.
	f.Close()
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			return "not root and fusermount3 is not on PATH"
		}
	}
	return ""
}

// requireRoot stops the test unless it runs as root.
func requireRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no mounts or root-only tests (make test-short)")
	}
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root (euid is %d)", os.Geteuid())
	}
}

// requireKernelOverlay stops the test unless it can mount kernel overlayfs:
// root, and "overlay" in /proc/filesystems after one modprobe attempt.
func requireKernelOverlay(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no mounts or root-only tests (make test-short)")
	}
	requireRoot(t)
	if reason := overlayProblem(); reason != "" {
		skipOrFail(t, "kernel overlayfs unavailable: %s", reason)
	}
}

// overlayProblem is computed once: modprobe is slow and its answer fixed.
var overlayProblem = sync.OnceValue(func() string {
	if hasFilesystem("overlay") {
		return ""
	}
	out, err := exec.Command("modprobe", "overlay").CombinedOutput()
	if hasFilesystem("overlay") {
		return ""
	}
	if err != nil {
		return fmt.Sprintf("not in /proc/filesystems; modprobe overlay: %v: %s", err, bytes.TrimSpace(out))
	}
	return "not in /proc/filesystems, even after modprobe overlay"
})

func hasFilesystem(name string) bool {
	data, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(data)) {
		// Lines are "nodev\toverlay" or "\text4".
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == name {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------------------
// Running the binary

// commandTimeout bounds every unionfs invocation: a hung mount or umount
// must fail the test, not the whole run at go test's 10-minute timeout.
const commandTimeout = 60 * time.Second

type cmdResult struct {
	stdout, stderr string
	exit           int
}

// runCommand runs a command with stdin from /dev/null and a timeout. It
// returns an error only when the command could not run to completion
// (start failure, timeout); a non-zero exit is in the result.
func runCommand(timeout time.Duration, name string, args ...string) (cmdResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	// Temp files, not pipes: `unionfs mount` leaves a daemon behind that
	// inherits stdout and stderr, and with pipes Wait would block until that
	// daemon exits, i.e. until unmount.
	stdout, err := os.CreateTemp("", "unionfs-stdout-")
	if err != nil {
		return cmdResult{}, err
	}
	defer os.Remove(stdout.Name())
	defer stdout.Close()
	stderr, err := os.CreateTemp("", "unionfs-stderr-")
	if err != nil {
		return cmdResult{}, err
	}
	defer os.Remove(stderr.Name())
	defer stderr.Close()

	cmd := exec.CommandContext(ctx, name, args...)
	// cmd.Stdin stays nil: os/exec then reads from /dev/null.
	cmd.Stdout, cmd.Stderr = stdout, stderr
	runErr := cmd.Run()

	var res cmdResult
	res.stdout, err = readAll(stdout)
	if err != nil {
		return res, err
	}
	res.stderr, err = readAll(stderr)
	if err != nil {
		return res, err
	}

	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("timed out after %v", timeout)
	case runErr == nil:
		res.exit = 0
	case errors.As(runErr, &exitErr):
		res.exit = exitErr.ExitCode() // -1 if killed by a signal
	default:
		return res, runErr
	}
	return res, nil
}

func readAll(f *os.File) (string, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	b, err := io.ReadAll(f)
	return string(b), err
}

// requireBinary returns the unionfs binary TestMain built, or fails.
func requireBinary(t testing.TB) string {
	t.Helper()
	if unionfsBin == "" {
		t.Fatalf("unionfs binary not built: ../cmd/unionfs failed to compile and %s=1 was set (see the output before the first test)", skipBuildEnv)
	}
	return unionfsBin
}

// runUnionfs runs the unionfs binary and returns its output and exit code.
// It fails the test only if the binary could not run or timed out.
func runUnionfs(t testing.TB, args ...string) (stdout, stderr string, exit int) {
	t.Helper()
	res, err := runCommand(commandTimeout, requireBinary(t), args...)
	if err != nil {
		t.Fatalf("unionfs %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, res.stdout, res.stderr)
	}
	return res.stdout, res.stderr, res.exit
}

// mountUnion mounts unionfs with the given flags (e.g. "-l", lower, "-u",
// upper) on a fresh mountpoint in t.TempDir() and returns the mountpoint.
// It is unmounted when the test ends.
func mountUnion(t testing.TB, args ...string) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mountUnionAt(t, mnt, args...)
	return mnt
}

// mountUnionAt mounts unionfs on an existing directory mnt, e.g. to mount
// again after umountUnion. The unmount is a t.Cleanup, so it runs before
// the removal of every t.TempDir made before this call (lowers, upper).
func mountUnionAt(t testing.TB, mnt string, args ...string) {
	t.Helper()
	requireFUSE(t)
	bin := requireBinary(t)
	mnt = resolvePath(t, mnt)

	argv := append(append([]string{"mount"}, args...), mnt)
	if os.Getenv(noRingEnv) != "" {
		argv = append(append([]string{"mount", "-o", "noio_uring"}, args...), mnt)
	}
	res, err := runCommand(commandTimeout, bin, argv...)
	if err != nil || res.exit != 0 {
		// A mount that timed out or failed late may still be live.
		detail := fmt.Sprintf("exit %d", res.exit)
		if err != nil {
			detail = err.Error()
		}
		if _, mounted := mountedFS(t, mnt); mounted {
			if ferr := forceUnmount(mnt); ferr != nil {
				detail += fmt.Sprintf("; cleanup unmount failed: %v", ferr)
			}
		}
		t.Fatalf("unionfs %s: %s\nstderr:\n%s", strings.Join(argv, " "), detail, res.stderr)
	}

	// "mount returns once the mount is live" is part of the CLI contract.
	fstype, mounted := mountedFS(t, mnt)
	if !mounted {
		t.Fatalf("unionfs %s exited 0 but %s is not a mount point\nstderr:\n%s", strings.Join(argv, " "), mnt, res.stderr)
	}
	if !strings.HasPrefix(fstype, "fuse") {
		t.Fatalf("%s is mounted with type %q, want a fuse mount", mnt, fstype)
	}
	t.Cleanup(func() {
		if _, mounted := mountedFS(t, mnt); mounted {
			unmountUnion(t, mnt, t.Errorf)
		}
	})
}

// umountUnion runs `unionfs umount mnt` and fails the test unless the mount
// is gone afterwards. Tests call it to check what persists across a remount.
func umountUnion(t testing.TB, mnt string) {
	t.Helper()
	unmountUnion(t, resolvePath(t, mnt), t.Fatalf)
}

// unmountUnion unmounts via the binary, falling back to a lazy unmount so a
// broken umount cannot leave a mount behind for t.TempDir's RemoveAll to
// walk into. report is t.Errorf in cleanups and t.Fatalf elsewhere.
func unmountUnion(t testing.TB, mnt string, report func(string, ...any)) {
	t.Helper()
	res, err := runCommand(commandTimeout, requireBinary(t), "umount", mnt)
	_, stillMounted := mountedFS(t, mnt)
	if err == nil && res.exit == 0 && !stillMounted {
		return
	}
	msg := fmt.Sprintf("unionfs umount %s: exit %d, err %v, still mounted: %v\nstderr:\n%s", mnt, res.exit, err, stillMounted, res.stderr)
	if stillMounted {
		if ferr := forceUnmount(mnt); ferr != nil {
			msg += fmt.Sprintf("\nlazy unmount fallback failed too: %v", ferr)
		}
	}
	report("%s", msg)
}

// forceUnmount is `umount -l` for root and `fusermount3 -u -z` otherwise.
func forceUnmount(mnt string) error {
	if os.Geteuid() == 0 {
		return unix.Unmount(mnt, unix.MNT_DETACH)
	}
	res, err := runCommand(commandTimeout, "fusermount3", "-u", "-z", mnt)
	if err != nil {
		return err
	}
	if res.exit != 0 {
		return fmt.Errorf("fusermount3 -u -z: exit %d: %s", res.exit, strings.TrimSpace(res.stderr))
	}
	return nil
}

// resolvePath makes p absolute and symlink-free, as /proc/self/mountinfo
// shows it. Call it before mounting: resolving a mountpoint afterwards
// would ask the (possibly hung) filesystem.
func resolvePath(t testing.TB, p string) string {
	t.Helper()
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, filepath.Base(abs))
}

// mountedFS reports whether mnt is a mount point and the type of the
// topmost filesystem mounted there, from /proc/self/mountinfo. It does not
// touch mnt itself, so it works on a hung FUSE mount.
func mountedFS(t testing.TB, mnt string) (fstype string, mounted bool) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		point, typ, ok := parseMountinfoLine(line)
		if ok && point == mnt {
			fstype, mounted = typ, true // keep going: the last entry is on top
		}
	}
	return fstype, mounted
}

// parseMountinfoLine returns the mount point and filesystem type of one
// line of /proc/self/mountinfo (proc(5)):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
func parseMountinfoLine(line string) (mountPoint, fstype string, ok bool) {
	fields := strings.Fields(line)
	sep := slices.Index(fields, "-")
	if len(fields) < 5 || sep < 5 || sep+1 >= len(fields) {
		return "", "", false
	}
	return unescapeMountinfo(fields[4]), unescapeMountinfo(fields[sep+1]), true
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for space,
// \011, \012, \134) in mountinfo fields.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1:i+4]) {
			n, _ := strconv.ParseUint(s[i+1:i+4], 8, 8)
			b.WriteByte(byte(n))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	for _, c := range []byte(s) {
		if c < '0' || c > '7' {
			return false
		}
	}
	return len(s) == 3 && s[0] <= '3'
}

// ---------------------------------------------------------------------------
// Fixture trees

// fixtureTime is every fixture's atime and mtime, so that trees built at
// different moments compare equal.
var fixtureTime = time.Date(2021, 2, 3, 4, 5, 6, 0, time.UTC)

// tree describes a directory tree to build with writeTree. Keys are
// slash-separated paths relative to the root ("a/b.txt"; a trailing "/" is
// allowed for directories; "." is the root itself). Missing parent
// directories are created with mode 0755.
type tree map[string]entry

type entryKind int

const (
	kindFile entryKind = iota + 1
	kindDir
	kindSymlink
	kindHardlink
	kindFifo
	kindChardev
)

// entry is one node of a tree. Build it with file, dir, symlink, ... and
// refine it with withXattr, withOwner, withPerm.
type entry struct {
	kind    entryKind
	content string
	perm    uint32 // raw permission bits, including setuid/setgid/sticky
	target  string // symlink target, or the tree path a hardlink points to

	sparse bool
	size   int64
	chunks map[int64]string

	major, minor uint32

	xattrs map[string]string
	owner  *[2]int // uid, gid; nil leaves the creator's
}

// file is a regular file with mode 0644.
func file(content string) entry { return fileMode(content, 0o644) }

// fileMode is a regular file with the given raw mode bits (e.g. 0o4755).
func fileMode(content string, perm uint32) entry {
	return entry{kind: kindFile, content: content, perm: perm}
}

// dir is a directory with the given raw mode bits (e.g. 0o1777).
func dir(perm uint32) entry { return entry{kind: kindDir, perm: perm} }

// symlink is a symbolic link to target (not resolved or checked).
func symlink(target string) entry { return entry{kind: kindSymlink, target: target} }

// hardlink is another name for the tree entry at other. The inode's
// metadata comes from other's entry.
func hardlink(other string) entry { return entry{kind: kindHardlink, target: other} }

// fifo is a named pipe with mode 0644.
func fifo() entry { return entry{kind: kindFifo, perm: 0o644} }

// chardev is a character device with mode 0644 (needs root).
func chardev(major, minor uint32) entry {
	return entry{kind: kindChardev, perm: 0o644, major: major, minor: minor}
}

// overlayWhiteout is an overlayfs whiteout as the kernel makes it: a
// character device 0:0 with no permission bits (needs root).
func overlayWhiteout() entry {
	return withPerm(chardev(whiteout.OverlayWhiteoutDev, whiteout.OverlayWhiteoutDev), 0)
}

// opaqueDir is a directory marked opaque the overlayfs way (needs root).
func opaqueDir(perm uint32) entry {
	return withXattr(dir(perm), whiteout.TrustedOpaqueXattr, whiteout.OpaqueValue)
}

// sparse is a regular file of the given size that is a hole except for the
// strings at the given offsets.
func sparse(size int64, dataAt map[int64]string) entry {
	return entry{kind: kindFile, perm: 0o644, sparse: true, size: size, chunks: maps.Clone(dataAt)}
}

// withXattr returns e with one more extended attribute. Symlinks cannot
// carry user.* attributes (the kernel refuses them).
func withXattr(e entry, name, value string) entry {
	e.xattrs = maps.Clone(e.xattrs)
	if e.xattrs == nil {
		e.xattrs = map[string]string{}
	}
	e.xattrs[name] = value
	return e
}

// withOwner returns e owned by uid:gid (needs root).
func withOwner(e entry, uid, gid int) entry {
	e.owner = &[2]int{uid, gid}
	return e
}

// withPerm returns e with the given raw mode bits.
func withPerm(e entry, perm uint32) entry {
	e.perm = perm
	return e
}

// writeTree creates tr under root, which must exist. Order is fixed: parents
// before children, hardlink targets before links, and every directory's
// mode and mtime last, deepest first, since adding a child changes its
// parent's mtime and a read-only directory refuses children. All atimes and
// mtimes are set to fixtureTime.
func writeTree(t testing.TB, root string, tr tree) {
	t.Helper()
	entries := make(map[string]entry, len(tr))
	for key, e := range tr {
		p := cleanTreePath(t, key)
		if _, dup := entries[p]; dup {
			t.Fatalf("writeTree: %q given twice", p)
		}
		if p == "." && e.kind != kindDir {
			t.Fatalf("writeTree: the root %q can only be a dir entry", key)
		}
		entries[p] = e
	}
	paths := slices.Sorted(maps.Keys(entries)) // a parent sorts before its children

	// Every directory whose mtime we fix: the root, all ancestors, all dirs.
	dirs := map[string]bool{".": true}
	for _, p := range paths {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
		if entries[p].kind == kindDir {
			dirs[p] = true
		}
	}

	for _, p := range paths {
		e := entries[p]
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatalf("writeTree: %v", err)
		}
		switch e.kind {
		case kindHardlink:
			continue // below, once every target exists
		case kindDir:
			// Writable for now; the mode is set with the mtime at the end.
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatalf("writeTree %s: %v", p, err)
			}
			continue
		}
		if err := createEntry(full, e); err != nil {
			t.Fatalf("writeTree %s: %v", p, err)
		}
		if err := applyMeta(full, e); err != nil {
			t.Fatalf("writeTree %s: %v", p, err)
		}
	}

	for _, p := range paths {
		e := entries[p]
		if e.kind != kindHardlink {
			continue
		}
		if len(e.xattrs) > 0 || e.owner != nil || e.perm != 0 {
			t.Fatalf("writeTree %s: a hardlink shares its target's inode; set metadata on the target", p)
		}
		src := resolveHardlink(t, entries, p)
		if err := os.Link(filepath.Join(root, filepath.FromSlash(src)), filepath.Join(root, filepath.FromSlash(p))); err != nil {
			t.Fatalf("writeTree %s: %v", p, err)
		}
	}

	ts := []unix.Timespec{unix.NsecToTimespec(fixtureTime.UnixNano()), unix.NsecToTimespec(fixtureTime.UnixNano())}
	for _, p := range paths {
		if entries[p].kind == kindDir {
			continue
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, filepath.FromSlash(p)), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatalf("writeTree %s: set times: %v", p, err)
		}
	}

	// Deepest first, so a child's mtime is fixed before its parent's.
	depth := func(p string) int {
		if p == "." {
			return 0
		}
		return strings.Count(p, "/") + 1
	}
	dirList := slices.SortedFunc(maps.Keys(dirs), func(a, b string) int {
		if da, db := depth(a), depth(b); da != db {
			return db - da
		}
		return strings.Compare(a, b)
	})
	for _, p := range dirList {
		full := filepath.Join(root, filepath.FromSlash(p))
		if e, ok := entries[p]; ok {
			if err := applyMeta(full, e); err != nil {
				t.Fatalf("writeTree %s: %v", p, err)
			}
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, full, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatalf("writeTree %s: set times: %v", p, err)
		}
	}
}

// cleanTreePath validates a tree key and returns its clean form.
func cleanTreePath(t testing.TB, key string) string {
	t.Helper()
	p := path.Clean(key)
	if key == "" || path.IsAbs(p) || p == ".." || strings.HasPrefix(p, "../") {
		t.Fatalf("writeTree: bad path %q: want a relative path inside the root", key)
	}
	return p
}

// resolveHardlink follows hardlink entries to the entry that owns the inode.
func resolveHardlink(t testing.TB, entries map[string]entry, p string) string {
	t.Helper()
	seen := map[string]bool{}
	for {
		if seen[p] {
			t.Fatalf("writeTree: hardlink cycle at %q", p)
		}
		seen[p] = true
		e, ok := entries[p]
		if !ok || e.kind != kindHardlink {
			return p // not in the tree: assume it already exists under root
		}
		p = cleanTreePath(t, e.target)
	}
}

func createEntry(full string, e entry) error {
	switch e.kind {
	case kindFile:
		return createFile(full, e)
	case kindSymlink:
		return os.Symlink(e.target, full)
	case kindFifo:
		return unix.Mkfifo(full, 0o600)
	case kindChardev:
		return unix.Mknod(full, unix.S_IFCHR|0o600, int(unix.Mkdev(e.major, e.minor)))
	}
	return fmt.Errorf("unknown entry kind %d", e.kind)
}

func createFile(full string, e entry) (err error) {
	f, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	if !e.sparse {
		_, err = f.WriteString(e.content)
		return err
	}
	// Truncate first: the holes are whatever was never written.
	if err := f.Truncate(e.size); err != nil {
		return err
	}
	for off, data := range e.chunks {
		if off < 0 || off+int64(len(data)) > e.size {
			return fmt.Errorf("sparse data at %d (+%d) is outside size %d", off, len(data), e.size)
		}
		if _, err := f.WriteAt([]byte(data), off); err != nil {
			return err
		}
	}
	return nil
}

// applyMeta sets owner, then xattrs, then mode: chown clears setuid bits and
// security.capability, and a read-only mode would refuse user.* xattrs to a
// non-root creator.
func applyMeta(full string, e entry) error {
	if e.owner != nil {
		if err := os.Lchown(full, e.owner[0], e.owner[1]); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(e.xattrs)) {
		if err := unix.Lsetxattr(full, name, []byte(e.xattrs[name]), 0); err != nil {
			return fmt.Errorf("setxattr %s: %w", name, err)
		}
	}
	if e.kind == kindSymlink {
		return nil // symlink modes are always 0777 on Linux
	}
	// unix.Chmod, not os.Chmod: os.FileMode's setuid bit is not 0o4000.
	return unix.Chmod(full, e.perm)
}

// ---------------------------------------------------------------------------
// Walking and comparing trees

// node is what snapshot records for one path. Fields that do not apply to
// a file type are zero, so that comparing nodes compares only what matters.
type node struct {
	Type     string // file, dir, symlink, fifo, chardev, blockdev, socket
	Perm     uint32 // st_mode & 07777, including setuid/setgid/sticky
	UID, GID uint32
	Size     int64             // regular files
	SHA256   string            // regular files: of the content
	Target   string            // symlinks
	Nlink    uint64            // non-directories: directory link counts are fs-specific
	Rdev     string            // devices: "major:minor"
	Xattrs   map[string]string // user.* only
	Mtime    int64             // ns since the epoch, only with withMtime()
}

type walkConfig struct {
	skipStateDir bool
	mtime        bool
}

// walkOption adjusts snapshot, checksumTree and hardlinkGroups.
type walkOption func(*walkConfig)

// skipStateDir leaves out the reserved ".unionfs" directory at the root,
// for walking an upper directory.
func skipStateDir() walkOption { return func(c *walkConfig) { c.skipStateDir = true } }

// withMtime records mtimes in snapshot (off by default: operations set them
// from the clock, so two runs never agree).
func withMtime() walkOption { return func(c *walkConfig) { c.mtime = true } }

// stateDirName is the reserved directory at the root of every upper.
const stateDirName = ".unionfs"

// walk calls fn for root (as ".") and every path below it, parents first,
// in sorted order, never following symlinks.
func walk(root string, cfg walkConfig, fn func(rel, full string, st *unix.Stat_t) error) error {
	var visit func(rel string) error
	visit = func(rel string) error {
		full := filepath.Join(root, filepath.FromSlash(rel))
		var st unix.Stat_t
		if err := unix.Lstat(full, &st); err != nil {
			return fmt.Errorf("lstat %s: %w", full, err)
		}
		if err := fn(rel, full, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return nil
		}
		des, err := os.ReadDir(full) // getdents, sorted by name
		if err != nil {
			return err
		}
		for _, de := range des {
			if rel == "." && cfg.skipStateDir && de.Name() == stateDirName {
				continue
			}
			if err := visit(path.Join(rel, de.Name())); err != nil {
				return err
			}
		}
		return nil
	}
	return visit(".")
}

func newWalkConfig(opts []walkOption) walkConfig {
	var cfg walkConfig
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// snapshot records every path under root (root itself is ".") with plain
// syscalls, for comparing trees with diffSnapshots.
func snapshot(t testing.TB, root string, opts ...walkOption) map[string]node {
	t.Helper()
	cfg := newWalkConfig(opts)
	snap := map[string]node{}
	err := walk(root, cfg, func(rel, full string, st *unix.Stat_t) error {
		n := node{
			Type: fileType(st.Mode),
			Perm: st.Mode & 0o7777,
			UID:  st.Uid,
			GID:  st.Gid,
		}
		if n.Type != "dir" {
			n.Nlink = uint64(st.Nlink)
		}
		if cfg.mtime {
			n.Mtime = st.Mtim.Nano()
		}
		switch n.Type {
		case "file":
			n.Size = st.Size
			sum, err := fileSHA256(full)
			if err != nil {
				return err
			}
			n.SHA256 = sum
		case "symlink":
			target, err := os.Readlink(full)
			if err != nil {
				return err
			}
			n.Target = target
		case "chardev", "blockdev":
			n.Rdev = fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		xattrs, err := readXattrs(full, func(name string) bool { return strings.HasPrefix(name, "user.") })
		if err != nil {
			return err
		}
		n.Xattrs = xattrs
		snap[rel] = n
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return snap
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		return "chardev"
	case unix.S_IFBLK:
		return "blockdev"
	case unix.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("type(%#o)", mode&unix.S_IFMT)
}

func fileSHA256(full string) (string, error) {
	f, err := os.Open(full)
	if err != nil {
		return "", err
	}
	defer f.Close() // read-only: nothing to lose
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", full, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// readXattrs returns the xattrs of full (not following symlinks) whose
// names keep returns true; nil if there are none.
func readXattrs(full string, keep func(string) bool) (map[string]string, error) {
	names, err := xattrBuf(func(buf []byte) (int, error) { return unix.Llistxattr(full, buf) })
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listxattr %s: %w", full, err)
	}
	var out map[string]string
	for name := range strings.SplitSeq(string(names), "\x00") {
		if name == "" || !keep(name) {
			continue
		}
		val, err := xattrBuf(func(buf []byte) (int, error) { return unix.Lgetxattr(full, name, buf) })
		if err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", full, name, err)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = string(val)
	}
	return out, nil
}

// xattrBuf calls an xattr syscall with a big enough buffer, asking for the
// size first and retrying if the value grew in between (ERANGE).
func xattrBuf(call func([]byte) (int, error)) ([]byte, error) {
	for {
		n, err := call(nil)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, nil
		}
		buf := make([]byte, n)
		n, err = call(buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// diffSnapshots lists the differences between two snapshots, one per line,
// sorted by path; nil means equal.
func diffSnapshots(want, got map[string]node) []string {
	var diffs []string
	for _, p := range slices.Sorted(maps.Keys(unionKeys(want, got))) {
		w, inWant := want[p]
		g, inGot := got[p]
		switch {
		case !inGot:
			diffs = append(diffs, fmt.Sprintf("%s: missing (want %s)", p, w.Type))
		case !inWant:
			diffs = append(diffs, fmt.Sprintf("%s: unexpected %s", p, g.Type))
		default:
			diffs = append(diffs, diffNode(p, w, g)...)
		}
	}
	return diffs
}

func diffNode(p string, w, g node) []string {
	var diffs []string
	field := func(name string, want, got any) {
		if want != got {
			diffs = append(diffs, fmt.Sprintf("%s: %s: want %v, got %v", p, name, want, got))
		}
	}
	field("type", w.Type, g.Type)
	field("perm", fmt.Sprintf("%04o", w.Perm), fmt.Sprintf("%04o", g.Perm))
	field("owner", fmt.Sprintf("%d:%d", w.UID, w.GID), fmt.Sprintf("%d:%d", g.UID, g.GID))
	field("size", w.Size, g.Size)
	if w.Size == g.Size { // a size difference already implies this one
		field("content sha256", w.SHA256, g.SHA256)
	}
	field("symlink target", strconv.Quote(w.Target), strconv.Quote(g.Target))
	field("nlink", w.Nlink, g.Nlink)
	field("rdev", w.Rdev, g.Rdev)
	field("mtime", time.Unix(0, w.Mtime).UTC().Format(time.RFC3339Nano), time.Unix(0, g.Mtime).UTC().Format(time.RFC3339Nano))
	for _, name := range slices.Sorted(maps.Keys(unionKeys(w.Xattrs, g.Xattrs))) {
		wv, inW := w.Xattrs[name]
		gv, inG := g.Xattrs[name]
		switch {
		case !inG:
			diffs = append(diffs, fmt.Sprintf("%s: xattr %s: missing (want %q)", p, name, wv))
		case !inW:
			diffs = append(diffs, fmt.Sprintf("%s: xattr %s: unexpected (got %q)", p, name, gv))
		case wv != gv:
			diffs = append(diffs, fmt.Sprintf("%s: xattr %s: want %q, got %q", p, name, wv, gv))
		}
	}
	return diffs
}

func unionKeys[V any](a, b map[string]V) map[string]bool {
	keys := make(map[string]bool, len(a)+len(b))
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	return keys
}

// assertSameTree fails the test with every difference between two
// snapshots.
func assertSameTree(t testing.TB, want, got map[string]node) {
	t.Helper()
	if diffs := diffSnapshots(want, got); len(diffs) > 0 {
		t.Errorf("trees differ (%d differences):\n%s", len(diffs), formatDiffs(diffs))
	}
}

// formatDiffs indents diff lines and caps them: a wholly wrong tree would
// otherwise bury the first, most useful lines.
func formatDiffs(diffs []string) string {
	const maxLines = 60
	shown := diffs
	if len(shown) > maxLines {
		shown = shown[:maxLines]
	}
	s := "\t" + strings.Join(shown, "\n\t")
	if len(diffs) > maxLines {
		s += fmt.Sprintf("\n\t... and %d more", len(diffs)-maxLines)
	}
	return s
}

// hardlinkGroups maps each set of two or more non-directory paths that share
// one (st_dev, st_ino) to its members, keyed by the first member in sort
// order. Comparing it between two trees checks that hard links stayed one
// file.
func hardlinkGroups(t testing.TB, root string, opts ...walkOption) map[string][]string {
	t.Helper()
	type devIno struct{ dev, ino uint64 }
	byInode := map[devIno][]string{}
	err := walk(root, newWalkConfig(opts), func(rel, _ string, st *unix.Stat_t) error {
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			k := devIno{uint64(st.Dev), st.Ino}
			byInode[k] = append(byInode[k], rel) // walk order is sorted
		}
		return nil
	})
	if err != nil {
		t.Fatalf("hardlinkGroups %s: %v", root, err)
	}
	groups := map[string][]string{}
	for _, paths := range byInode {
		if len(paths) > 1 {
			groups[paths[0]] = paths
		}
	}
	return groups
}

// checksumTree describes every path under root (root is ".") in one line
// covering type, mode, owner, size, link count, mtime, ctime, content,
// symlink target, device number and ALL xattrs, so that assertUnchanged can
// prove a lower layer was not touched in any way. The ctime catches even a
// change that was reverted. Lines rather than bare hashes make a failure
// say what changed.
func checksumTree(t testing.TB, root string, opts ...walkOption) map[string]string {
	t.Helper()
	sums := map[string]string{}
	err := walk(root, newWalkConfig(opts), func(rel, full string, st *unix.Stat_t) error {
		var b strings.Builder
		fmt.Fprintf(&b, "%s perm=%04o owner=%d:%d size=%d nlink=%d mtime=%d ctime=%d",
			fileType(st.Mode), st.Mode&0o7777, st.Uid, st.Gid, st.Size, st.Nlink, st.Mtim.Nano(), st.Ctim.Nano())
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			sum, err := fileSHA256(full)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " sha256=%s", sum)
		case unix.S_IFLNK:
			target, err := os.Readlink(full)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " target=%q", target)
		case unix.S_IFCHR, unix.S_IFBLK:
			fmt.Fprintf(&b, " rdev=%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		xattrs, err := readXattrs(full, func(string) bool { return true })
		if err != nil {
			return err
		}
		for _, name := range slices.Sorted(maps.Keys(xattrs)) {
			fmt.Fprintf(&b, " xattr:%s=%q", name, xattrs[name])
		}
		sums[rel] = b.String()
		return nil
	})
	if err != nil {
		t.Fatalf("checksumTree %s: %v", root, err)
	}
	return sums
}

// assertUnchanged fails the test if root differs in any way from before,
// a checksumTree of it taken earlier.
func assertUnchanged(t testing.TB, before map[string]string, root string, opts ...walkOption) {
	t.Helper()
	after := checksumTree(t, root, opts...)
	if diffs := diffChecksums(before, after); len(diffs) > 0 {
		t.Errorf("%s was modified (%d differences):\n%s", root, len(diffs), formatDiffs(diffs))
	}
}

func diffChecksums(before, after map[string]string) []string {
	var diffs []string
	for _, p := range slices.Sorted(maps.Keys(unionKeys(before, after))) {
		b, inBefore := before[p]
		a, inAfter := after[p]
		switch {
		case !inAfter:
			diffs = append(diffs, fmt.Sprintf("%s: removed (was %s)", p, b))
		case !inBefore:
			diffs = append(diffs, fmt.Sprintf("%s: added (%s)", p, a))
		case a != b:
			diffs = append(diffs, fmt.Sprintf("%s: changed\n\t\tbefore: %s\n\t\tafter:  %s", p, b, a))
		}
	}
	return diffs
}

// ---------------------------------------------------------------------------
// Self-tests of the harness pieces that need no mount.

func TestHarnessWriteTreeSnapshot(t *testing.T) {
	root := t.TempDir()
	tr := tree{
		"a/b.txt":  file("hello"),
		"d/":       dir(0o750),
		"d/sticky": dir(0o1777),
		"ro/":      dir(0o555),
		"ro/f":     fileMode("x", 0o4755),
		"l":        symlink("a/b.txt"),
		"h1":       file("shared"),
		"h2":       hardlink("h1"),
		"h3":       hardlink("h2"),
		"p":        fifo(),
		"s":        sparse(1<<20, map[int64]string{0: "head", 1<<20 - 4: "tail"}),
		"x":        withXattr(file(""), "user.k", "v"),
	}
	writeTree(t, root, tr)
	snap := snapshot(t, root)

	sparseContent := make([]byte, 1<<20)
	copy(sparseContent, "head")
	copy(sparseContent[1<<20-4:], "tail")
	want := map[string]node{
		".":        {Type: "dir", Perm: permOf(t, root)},
		"a":        {Type: "dir", Perm: 0o755},
		"a/b.txt":  {Type: "file", Perm: 0o644, Size: 5, SHA256: sha256Hex("hello"), Nlink: 1},
		"d":        {Type: "dir", Perm: 0o750},
		"d/sticky": {Type: "dir", Perm: 0o1777},
		"ro":       {Type: "dir", Perm: 0o555},
		"ro/f":     {Type: "file", Perm: 0o4755, Size: 1, SHA256: sha256Hex("x"), Nlink: 1},
		"l":        {Type: "symlink", Perm: 0o777, Target: "a/b.txt", Nlink: 1},
		"h1":       {Type: "file", Perm: 0o644, Size: 6, SHA256: sha256Hex("shared"), Nlink: 3},
		"h2":       {Type: "file", Perm: 0o644, Size: 6, SHA256: sha256Hex("shared"), Nlink: 3},
		"h3":       {Type: "file", Perm: 0o644, Size: 6, SHA256: sha256Hex("shared"), Nlink: 3},
		"p":        {Type: "fifo", Perm: 0o644, Nlink: 1},
		"s":        {Type: "file", Perm: 0o644, Size: 1 << 20, SHA256: sha256Hex(string(sparseContent)), Nlink: 1},
		"x":        {Type: "file", Perm: 0o644, SHA256: sha256Hex(""), Nlink: 1, Xattrs: map[string]string{"user.k": "v"}},
	}
	uid, gid := uint32(os.Geteuid()), uint32(os.Getegid())
	for p, n := range want {
		n.UID, n.GID = uid, gid
		want[p] = n
	}
	if !xattrsSupported(t, t.TempDir()) {
		n := want["x"]
		n.Xattrs = nil
		want["x"] = n
		t.Log("no user xattrs on this filesystem; not checking them")
	}
	assertSameTree(t, want, snap)

	// Every mtime is the fixture time, directories included.
	for p, n := range snapshot(t, root, withMtime()) {
		if n.Mtime != fixtureTime.UnixNano() {
			t.Errorf("%s: mtime %v, want %v", p, time.Unix(0, n.Mtime).UTC(), fixtureTime)
		}
	}

	// The same tree built again compares equal.
	again := t.TempDir()
	writeTree(t, again, tr)
	assertSameTree(t, snapshot(t, root, withMtime()), snapshot(t, again, withMtime()))

	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(root, "s"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 >= 1<<20 {
		t.Errorf("sparse file uses %d bytes of blocks: not sparse", st.Blocks*512)
	}
}

func TestHarnessWriteTreeRootOnly(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	writeTree(t, root, tree{
		"wh":      overlayWhiteout(),
		"dev":     chardev(1, 3),
		"o/":      opaqueDir(0o755),
		"owned":   withOwner(fileMode("x", 0o2750), 1234, 5678),
		"own-dir": withOwner(dir(0o700), 42, 43),
	})
	snap := snapshot(t, root)
	if n := snap["wh"]; n.Type != "chardev" || n.Rdev != "0:0" || n.Perm != 0 {
		t.Errorf("wh = %+v, want chardev 0:0 perm 0", n)
	}
	if n := snap["dev"]; n.Rdev != "1:3" {
		t.Errorf("dev = %+v, want rdev 1:3", n)
	}
	if n := snap["owned"]; n.UID != 1234 || n.GID != 5678 || n.Perm != 0o2750 {
		t.Errorf("owned = %+v, want 1234:5678 perm 2750 (setgid kept after chown)", n)
	}
	if n := snap["own-dir"]; n.UID != 42 || n.GID != 43 {
		t.Errorf("own-dir = %+v", n)
	}
	// snapshot records user.* only; the opaque marker is trusted.*.
	if n := snap["o"]; n.Xattrs != nil {
		t.Errorf("o xattrs = %v, want none (trusted.* is not recorded)", n.Xattrs)
	}
	val := make([]byte, 8)
	n, err := unix.Lgetxattr(filepath.Join(root, "o"), whiteout.TrustedOpaqueXattr, val)
	if err != nil || !whiteout.IsOpaqueXattr(whiteout.TrustedOpaqueXattr, val[:n]) {
		t.Errorf("o: %s = %q, %v; want y", whiteout.TrustedOpaqueXattr, val[:n], err)
	}
	if !strings.Contains(checksumTree(t, root)["o"], whiteout.TrustedOpaqueXattr) {
		t.Errorf("checksumTree ignores trusted xattrs: %s", checksumTree(t, root)["o"])
	}
}

func TestHarnessWriteTreeRejectsBadPaths(t *testing.T) {
	for _, key := range []string{"/abs", "..", "../x", "a/../../x"} {
		ft := &fatalRecorder{TB: t}
		runCatchingFatal(ft, func() { writeTree(ft, t.TempDir(), tree{key: file("x")}) })
		if !ft.failed {
			t.Errorf("writeTree accepted %q", key)
		}
	}
}

func TestHarnessDiffSnapshots(t *testing.T) {
	base := map[string]node{
		".":   {Type: "dir", Perm: 0o755},
		"a":   {Type: "file", Perm: 0o644, Size: 1, SHA256: "aa", Nlink: 1, Xattrs: map[string]string{"user.k": "v"}},
		"l":   {Type: "symlink", Perm: 0o777, Target: "a", Nlink: 1},
		"old": {Type: "file", Perm: 0o644, Nlink: 1},
	}
	if d := diffSnapshots(base, base); d != nil {
		t.Fatalf("diff of a snapshot with itself: %q", d)
	}
	changed := maps.Clone(base)
	changed["a"] = node{Type: "file", Perm: 0o4644, Size: 1, SHA256: "bb", Nlink: 2, Xattrs: map[string]string{"user.k": "w", "user.new": "1"}}
	changed["l"] = node{Type: "symlink", Perm: 0o777, Target: "b", Nlink: 1}
	delete(changed, "old")
	changed["new"] = node{Type: "dir", Perm: 0o755}
	want := []string{
		"a: perm: want 0644, got 4644",
		"a: content sha256: want aa, got bb",
		"a: nlink: want 1, got 2",
		`a: xattr user.k: want "v", got "w"`,
		`a: xattr user.new: unexpected (got "1")`,
		`l: symlink target: want "a", got "b"`,
		"new: unexpected dir",
		"old: missing (want file)",
	}
	if got := diffSnapshots(base, changed); !slices.Equal(got, want) {
		t.Errorf("diffSnapshots:\n got %q\nwant %q", got, want)
	}
}

func TestHarnessChecksumDetectsChanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(root string) error
	}{
		{"content", func(r string) error { return os.WriteFile(filepath.Join(r, "f"), []byte("HELLO"), 0o644) }},
		{"mode", func(r string) error { return unix.Chmod(filepath.Join(r, "f"), 0o600) }},
		{"chmod and back", func(r string) error {
			if err := unix.Chmod(filepath.Join(r, "f"), 0o600); err != nil {
				return err
			}
			return unix.Chmod(filepath.Join(r, "f"), 0o644)
		}},
		{"mtime", func(r string) error {
			return os.Chtimes(filepath.Join(r, "f"), fixtureTime, fixtureTime.Add(time.Second))
		}},
		{"new file", func(r string) error { return os.WriteFile(filepath.Join(r, "d", "n"), nil, 0o644) }},
		{"remove", func(r string) error { return os.Remove(filepath.Join(r, "l")) }},
		{"hardlink", func(r string) error { return os.Link(filepath.Join(r, "f"), filepath.Join(r, "f2")) }},
		{"xattr", func(r string) error {
			if !xattrsSupported(t, t.TempDir()) {
				return unix.Chmod(filepath.Join(r, "d"), 0o700) // still a change to detect
			}
			return unix.Lsetxattr(filepath.Join(r, "d"), "user.x", []byte("1"), 0)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, tree{"f": file("hello"), "d/": dir(0o755), "l": symlink("f")})
			before := checksumTree(t, root)
			if d := diffChecksums(before, checksumTree(t, root)); d != nil {
				t.Fatalf("unchanged tree differs from itself: %q", d)
			}
			if err := tc.change(root); err != nil {
				t.Fatal(err)
			}
			if d := diffChecksums(before, checksumTree(t, root)); d == nil {
				t.Errorf("change %q not detected", tc.name)
			}
		})
	}
}

func TestHarnessChecksumIgnoresReads(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, tree{"a/f": file("hello"), "l": symlink("a/f")})
	before := checksumTree(t, root)
	snapshot(t, root) // reads every file, lists every dir
	if _, err := os.ReadFile(filepath.Join(root, "l")); err != nil {
		t.Fatal(err)
	}
	assertUnchanged(t, before, root)
}

func TestHarnessHardlinkGroups(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, tree{
		"a":     file("1"),
		"sub/b": hardlink("a"),
		"c":     hardlink("sub/b"),
		"d":     file("1"),
		"e":     file("2"),
		"f":     hardlink("e"),
		"dir/":  dir(0o755),
	})
	want := map[string][]string{"a": {"a", "c", "sub/b"}, "e": {"e", "f"}}
	if got := hardlinkGroups(t, root); !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("hardlinkGroups = %v, want %v", got, want)
	}
}

func TestHarnessSkipStateDir(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, tree{".unionfs/db": file("x"), "a/.unionfs": file("kept: only the root one is reserved")})
	snap := snapshot(t, root, skipStateDir())
	if _, ok := snap[".unionfs"]; ok {
		t.Error("skipStateDir kept .unionfs")
	}
	if _, ok := snap["a/.unionfs"]; !ok {
		t.Error("skipStateDir dropped a/.unionfs")
	}
	if _, ok := snapshot(t, root)[".unionfs/db"]; !ok {
		t.Error("snapshot without skipStateDir dropped .unionfs/db")
	}
}

func TestHarnessMountinfo(t *testing.T) {
	tests := []struct {
		line, point, fstype string
		ok                  bool
	}{
		{"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n", "/mnt2", "ext3", true},
		{"40 30 0:50 / /tmp/a\\040b\\134c rw - fuse.unionfs unionfs rw,user_id=0\n", `/tmp/a b\c`, "fuse.unionfs", true},
		{"41 30 0:51 / /x rw shared:5 master:2 - overlay overlay rw,lowerdir=/l\n", "/x", "overlay", true},
		{"garbage\n", "", "", false},
		{"1 2 3 4 5 6\n", "", "", false},
	}
	for _, tt := range tests {
		point, fstype, ok := parseMountinfoLine(tt.line)
		if point != tt.point || fstype != tt.fstype || ok != tt.ok {
			t.Errorf("parseMountinfoLine(%q) = %q, %q, %v; want %q, %q, %v", tt.line, point, fstype, ok, tt.point, tt.fstype, tt.ok)
		}
	}
	// The root filesystem is always mounted; a fresh temp dir never is.
	if _, mounted := mountedFS(t, "/"); !mounted {
		t.Error("mountedFS(/) = not mounted")
	}
	if _, mounted := mountedFS(t, resolvePath(t, t.TempDir())); mounted {
		t.Error("mountedFS(fresh temp dir) = mounted")
	}
}

// TestHarnessRunCommandDaemon pins the reason runCommand uses files: a
// command that leaves a child holding stdout (as `unionfs mount` leaves its
// daemon) must return when the command exits, not when the child does.
func TestHarnessRunCommandDaemon(t *testing.T) {
	start := time.Now()
	res, err := runCommand(10*time.Second, "sh", "-c", "sleep 5 & echo out; echo err >&2; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("runCommand waited %v for the background child", elapsed)
	}
	if res.stdout != "out\n" || res.stderr != "err\n" || res.exit != 3 {
		t.Errorf("runCommand = %+v", res)
	}
	if _, err := runCommand(200*time.Millisecond, "sleep", "5"); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("runCommand(sleep 5) with a short timeout: err = %v, want a timeout", err)
	}
	res, err = runCommand(10*time.Second, "cat")
	if err != nil || res.stdout != "" {
		t.Errorf("cat with stdin from /dev/null: %+v, %v", res, err)
	}
}

// ---------------------------------------------------------------------------
// Small helpers for the self-tests.

func permOf(t testing.TB, p string) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Mode & 0o7777
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// xattrsSupported reports whether dir's filesystem takes user.* xattrs.
func xattrsSupported(t testing.TB, dir string) bool {
	t.Helper()
	probe := filepath.Join(dir, ".xattr-probe")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(probe)
	return unix.Lsetxattr(probe, "user.probe", []byte("1"), 0) == nil
}

// fatalRecorder is a testing.TB whose Fatalf records the failure instead of
// failing the real test, for checking that a helper rejects bad input.
type fatalRecorder struct {
	testing.TB
	failed bool
	msg    string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.failed = true
	f.msg = fmt.Sprintf(format, args...)
	panic(f)
}

func (f *fatalRecorder) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }

// runCatchingFatal runs fn, stopping at the first fatalRecorder.Fatalf.
func runCatchingFatal(f *fatalRecorder, fn func()) {
	defer func() {
		if r := recover(); r != nil && r != f {
			panic(r)
		}
	}()
	fn()
}
