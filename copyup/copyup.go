package copyup

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/unionfs/unionfs/whiteout"
)

// Source is the lower entry to copy: a path beneath a layer root descriptor.
type Source struct {
	Dirfd int
	Path  string
}

// Dest is where the copy goes: a name in an upper directory (an open
// descriptor, so that a concurrent rename of the directory is harmless).
type Dest struct {
	Dirfd int
	Name  string
}

// Options tune one copy.
type Options struct {
	// WorkFd is the work directory, on the same filesystem as Dest.
	WorkFd int
	// NoData skips the file's contents (for an open with O_TRUNC): the copy
	// is an empty file with the lower file's metadata.
	NoData bool
	// NoSync skips the fsync of the copied data.
	NoSync bool
	// Override, if set, is what the source really is where its layer
	// could not show it (an image unpacked without privilege): owner, mode
	// (a device's type included: its layer holds an empty placeholder)
	// and extended attributes.
	Override *Override
}

// Override describes a lower file as its image has it.
type Override struct {
	UID, GID uint32
	Mode     uint32 // st_mode with the file type
	Rdev     uint64
	Xattrs   map[string][]byte
}

// ErrExists is returned when Dest already has an entry; the copy is dropped.
var ErrExists = errors.New("copy-up destination exists")

// Copy copies src to dst and returns the new upper entry's stat.
func Copy(src Source, dst Dest, opt Options) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(src.Dirfd, src.Path, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, fmt.Errorf("stat %s: %w", src.Path, err)
	}
	if o := opt.Override; o != nil {
		st.Uid, st.Gid, st.Mode, st.Rdev = o.UID, o.GID, o.Mode, o.Rdev
	}
	tmp := tempName()
	var err error
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		err = copyFile(src, &st, opt, tmp)
	case unix.S_IFDIR:
		err = copyDir(src, &st, opt.WorkFd, tmp)
	case unix.S_IFLNK:
		err = copySymlink(src, &st, opt.WorkFd, tmp)
	default:
		err = copySpecial(src, &st, opt.WorkFd, tmp)
	}
	if err == nil && opt.Override != nil {
		err = setXattrs(procFd(opt.WorkFd)+"/"+tmp, opt.Override.Xattrs)
	}
	if err != nil {
		removeTemp(opt.WorkFd, tmp, st.Mode)
		return st, fmt.Errorf("copy up %s: %w", src.Path, err)
	}
	var out unix.Stat_t
	if err := unix.Fstatat(opt.WorkFd, tmp, &out, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		removeTemp(opt.WorkFd, tmp, st.Mode)
		return st, fmt.Errorf("copy up %s: %w", src.Path, err)
	}
	if err := unix.Renameat2(opt.WorkFd, tmp, dst.Dirfd, dst.Name, unix.RENAME_NOREPLACE); err != nil {
		removeTemp(opt.WorkFd, tmp, st.Mode)
		if errors.Is(err, unix.EEXIST) {
			return st, ErrExists
		}
		return st, fmt.Errorf("copy up %s: rename into place: %w", src.Path, err)
	}
	return out, nil
}

func tempName() string {
	var b [8]byte
	rand.Read(b[:])
	return "copyup-" + hex.EncodeToString(b[:])
}

func removeTemp(workFd int, name string, mode uint32) {
	flags := 0
	if mode&unix.S_IFMT == unix.S_IFDIR {
		flags = unix.AT_REMOVEDIR
	}
	unix.Unlinkat(workFd, name, flags)
}

func copyFile(src Source, st *unix.Stat_t, opt Options, tmp string) error {
	out, err := unix.Openat(opt.WorkFd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer unix.Close(out)
	if !opt.NoData && st.Size > 0 {
		// O_NOATIME: copying up must not change the lower file, not even
		// its access time (as overlayfs); only the owner or root may ask.
		flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		in, err := unix.Openat(src.Dirfd, src.Path, flags|unix.O_NOATIME, 0)
		if errors.Is(err, unix.EPERM) {
			in, err = unix.Openat(src.Dirfd, src.Path, flags, 0)
		}
		if err != nil {
			return err
		}
		err = copyData(in, out, st.Size)
		unix.Close(in)
		if err != nil {
			return err
		}
	}
	if err := copyMeta(src, st, opt.WorkFd, tmp); err != nil {
		return err
	}
	if !opt.NoSync {
		if err := unix.Fsync(out); err != nil {
			return err
		}
	}
	return nil
}

// copyData copies size bytes: a reflink when the filesystem shares extents,
// else data segment by data segment so that holes stay holes.
func copyData(in, out int, size int64) error {
	if err := unix.IoctlFileClone(out, in); err == nil {
		return nil
	}
	for off := int64(0); off < size; {
		data, err := unix.Seek(in, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			// No SEEK_DATA support: copy everything.
			data = off
		}
		hole, err := unix.Seek(in, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if err := copyRange(in, out, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	// A trailing hole: set the size.
	return unix.Ftruncate(out, size)
}

// copyRange copies n bytes at off, in the kernel where it can.
func copyRange(in, out int, off, n int64) error {
	inOff, outOff := off, off
	for n > 0 {
		k, err := unix.CopyFileRange(in, &inOff, out, &outOff, int(min(n, 1<<30)), 0)
		if err != nil {
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
				return copyLoop(in, out, inOff, n)
			}
			return err
		}
		if k == 0 {
			return io.ErrUnexpectedEOF
		}
		n -= int64(k)
	}
	return nil
}

func copyLoop(in, out int, off, n int64) error {
	buf := make([]byte, 1<<20)
	for n > 0 {
		k, err := unix.Pread(in, buf[:min(n, int64(len(buf)))], off)
		if err != nil {
			return err
		}
		if k == 0 {
			return io.ErrUnexpectedEOF
		}
		if _, err := unix.Pwrite(out, buf[:k], off); err != nil {
			return err
		}
		off += int64(k)
		n -= int64(k)
	}
	return nil
}

func copyDir(src Source, st *unix.Stat_t, workFd int, tmp string) error {
	if err := unix.Mkdirat(workFd, tmp, 0o700); err != nil {
		return err
	}
	return copyMeta(src, st, workFd, tmp)
}

func copySymlink(src Source, st *unix.Stat_t, workFd int, tmp string) error {
	target, err := readlinkat(src.Dirfd, src.Path)
	if err != nil {
		return err
	}
	if err := unix.Symlinkat(target, workFd, tmp); err != nil {
		return err
	}
	return copyMeta(src, st, workFd, tmp)
}

func copySpecial(src Source, st *unix.Stat_t, workFd int, tmp string) error {
	if err := unix.Mknodat(workFd, tmp, st.Mode&(unix.S_IFMT|0o600), int(st.Rdev)); err != nil {
		return err
	}
	return copyMeta(src, st, workFd, tmp)
}

// copyMeta gives the copy (name in the work dir) the source's owner,
// xattrs, mode and times, in the order that keeps each one: chown clears
// set-id bits and security.capability, so it goes first.
func copyMeta(src Source, st *unix.Stat_t, workFd int, name string) error {
	err := unix.Fchownat(workFd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW)
	if err != nil && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("chown: %w", err)
	}
	if err := CopyXattrs(procFd(src.Dirfd)+"/"+src.Path, procFd(workFd)+"/"+name); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Fchmodat(workFd, name, st.Mode&0o7777, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(workFd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// CopyXattrs copies every extended attribute of from to to (both paths,
// symlinks not followed). Attributes the server may not set (trusted.* or
// security.* without privilege, or any on a filesystem without support)
// are skipped, as a copy by an unprivileged user would.
func CopyXattrs(from, to string) error {
	names, err := listXattrs(from)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		return fmt.Errorf("list xattrs: %w", err)
	}
	for _, name := range names {
		if isLayerMarker(name) {
			continue
		}
		val, err := getXattr(from, name)
		if err != nil {
			if errors.Is(err, unix.ENODATA) {
				continue
			}
			return fmt.Errorf("get xattr %s: %w", name, err)
		}
		if err := unix.Lsetxattr(to, name, val, 0); err != nil {
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EACCES) {
				continue
			}
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	return nil
}

// setXattrs sets extended attributes on p, skipping those the server may
// not set, as CopyXattrs does.
func setXattrs(p string, xattrs map[string][]byte) error {
	for name, val := range xattrs {
		if isLayerMarker(name) {
			continue
		}
		if err := unix.Lsetxattr(p, name, val, 0); err != nil {
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EACCES) {
				continue
			}
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	return nil
}

// isLayerMarker reports the xattrs by which overlayfs and fuse-overlayfs
// mark a layer's directories (opaque, redirect): they describe the lower
// layer, and a copy carrying them would mean something else in the upper.
func isLayerMarker(name string) bool {
	return strings.HasPrefix(name, whiteout.TrustedPrefix) || strings.HasPrefix(name, whiteout.UserPrefix) ||
		strings.HasPrefix(name, whiteout.FuseOverlayfsPrefix)
}

func listXattrs(p string) ([]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil || size == 0 {
		return nil, err
	}
	for {
		buf := make([]byte, size)
		k, err := unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			size *= 2
			continue
		}
		if err != nil {
			return nil, err
		}
		var names []string
		for _, b := range splitNul(buf[:k]) {
			names = append(names, string(b))
		}
		return names, nil
	}
}

func getXattr(p, name string) ([]byte, error) {
	size, err := unix.Lgetxattr(p, name, nil)
	if err != nil {
		return nil, err
	}
	for {
		buf := make([]byte, size)
		k, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			size *= 2
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:k], nil
	}
}

func splitNul(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != 0 {
			i++
		}
		if i > 0 {
			out = append(out, b[:i])
		}
		if i < len(b) {
			i++
		}
		b = b[i:]
	}
	return out
}

func readlinkat(dirfd int, p string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		k, err := unix.Readlinkat(dirfd, p, buf)
		if err != nil {
			return "", err
		}
		if k < size {
			return string(buf[:k]), nil
		}
	}
}

func procFd(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }
