package fs

import (
	"encoding/binary"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

var noOpenat2 atomic.Bool

const openFlagsKnown = unix.O_ACCMODE | unix.O_APPEND | unix.O_TRUNC | unix.O_NONBLOCK |
	unix.O_DSYNC | unix.O_SYNC | unix.O_NOATIME | unix.O_LARGEFILE | unix.O_DIRECTORY |
	unix.O_CREAT | unix.O_EXCL | unix.O_PATH | unix.O_DIRECT | unix.O_NOCTTY

// openBeneath opens path relative to the layer root dirfd without following
// any symlink on the way and without leaving the layer: a symlink stored in a
// layer is content to serve, never a path for the server to walk.
func openBeneath(dirfd int, path string, flags int, mode uint32) (int, error) {
	// openat2 refuses bits it does not know, and file type bits in mode.
	flags = flags&openFlagsKnown | unix.O_CLOEXEC | unix.O_NOFOLLOW
	mode &= 0o7777
	if !noOpenat2.Load() {
		how := unix.OpenHow{
			Flags:   uint64(flags),
			Mode:    uint64(mode),
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		}
		for {
			fd, err := unix.Openat2(dirfd, relPath(path), &how)
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			if !errors.Is(err, unix.ENOSYS) {
				return fd, err
			}
			noOpenat2.Store(true)
			break
		}
	}
	return unix.Openat(dirfd, relPath(path), flags, mode)
}

// noFchmodat2 is set once the kernel has refused fchmodat2(2) (Linux 6.6).
var noFchmodat2 atomic.Bool

// fchmodAt changes the mode of name beneath dirfd as fchmodat2(2) with
// flags (AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH for name ""). Older kernels
// have no flags for it: there it opens name without following it and
// changes the mode through the descriptor's /proc path. A seccomp filter
// that predates fchmodat2 may answer EPERM rather than ENOSYS: an EPERM
// that the /proc path does not repeat turns fchmodat2 off too.
func fchmodAt(dirfd int, name string, mode uint32, flags int) error {
	if noFchmodat2.Load() {
		return fchmodProc(dirfd, name, mode)
	}
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	errno := unix.EINTR
	for errno == unix.EINTR {
		_, _, errno = unix.Syscall6(unix.SYS_FCHMODAT2, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
			uintptr(mode), uintptr(flags), 0, 0)
	}
	switch errno {
	case 0:
		return nil
	case unix.ENOSYS:
		noFchmodat2.Store(true)
		return fchmodProc(dirfd, name, mode)
	case unix.EPERM:
		if err := fchmodProc(dirfd, name, mode); err != nil {
			return err // a real EPERM: fchmodat2 stays on
		}
		noFchmodat2.Store(true)
		return nil
	}
	return errno
}

// fchmodProc changes the mode of name beneath dirfd (dirfd itself for
// name "") through a /proc path, without following a final symlink.
func fchmodProc(dirfd int, name string, mode uint32) error {
	if name == "" {
		return unix.Fchmodat(unix.AT_FDCWD, procPath(dirfd, ""), mode, 0)
	}
	fd, err := openBeneath(dirfd, name, unix.O_PATH, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fchmodat(unix.AT_FDCWD, procPath(fd, ""), mode, 0)
}

// procPath names path beneath dirfd for the calls that have no *at form
// (the xattr family): the /proc magic link pins the layer root.
func procPath(dirfd int, path string) string {
	p := "/proc/self/fd/" + strconv.Itoa(dirfd)
	if path == "" {
		return p
	}
	return p + "/" + path
}

// lstatAt stats path beneath dirfd without following a final symlink.
func lstatAt(dirfd int, path string, st *unix.Stat_t) error {
	for {
		err := unix.Fstatat(dirfd, relPath(path), st, unix.AT_SYMLINK_NOFOLLOW)
		if err != unix.EINTR {
			return err
		}
	}
}

// direntType turns a d_type into the S_IFMT bits; 0 means unknown.
func direntType(t uint8) uint32 {
	switch t {
	case unix.DT_REG:
		return unix.S_IFREG
	case unix.DT_DIR:
		return unix.S_IFDIR
	case unix.DT_LNK:
		return unix.S_IFLNK
	case unix.DT_CHR:
		return unix.S_IFCHR
	case unix.DT_BLK:
		return unix.S_IFBLK
	case unix.DT_FIFO:
		return unix.S_IFIFO
	case unix.DT_SOCK:
		return unix.S_IFSOCK
	}
	return 0
}

// rawDirent is one entry of a getdents64 listing.
type rawDirent struct {
	name string
	ino  uint64
	mode uint32 // S_IFMT bits
}

// direntBufs holds getdents buffers: a directory index of a deep stack
// reads thousands of small directories in a burst.
var direntBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// readDirAt lists path beneath dirfd (without . and ..), filling in types
// that the filesystem did not report with an lstat.
func readDirAt(dirfd int, path string) ([]rawDirent, error) {
	fd, err := openBeneath(dirfd, path, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []rawDirent
	bp := direntBufs.Get().(*[]byte)
	defer direntBufs.Put(bp)
	buf := *bp
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			break
		}
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				return nil, unix.EIO
			}
			ino := binary.NativeEndian.Uint64(b[0:8])
			typ := b[18]
			nameb := b[19:reclen]
			for i, c := range nameb {
				if c == 0 {
					nameb = nameb[:i]
					break
				}
			}
			b = b[reclen:]
			name := string(nameb)
			if name == "." || name == ".." {
				continue
			}
			out = append(out, rawDirent{name: name, ino: ino, mode: direntType(typ)})
		}
	}
	for i := range out {
		if out[i].mode == 0 {
			var st unix.Stat_t
			if err := unix.Fstatat(fd, out[i].name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return nil, err
			}
			out[i].mode = st.Mode & unix.S_IFMT
		}
	}
	return out, nil
}

// statAt is lstatAt that also returns a generation number for the inode:
// its birth time, which tells a file apart from an earlier one that had
// the same inode number (ext4 reuses numbers at once). It is 1 where the
// filesystem keeps no birth time.
//
// An empty path stats dirfd itself, which works even for a removed
// directory.
func statAt(dirfd int, path string, st *unix.Stat_t) (gen uint64, err error) {
	var sx unix.Statx_t
	flags := unix.AT_SYMLINK_NOFOLLOW | unix.AT_STATX_SYNC_AS_STAT
	if path == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	for {
		err = unix.Statx(dirfd, path, flags, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &sx)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return 0, err
	}
	*st = unix.Stat_t{
		Dev:     unix.Mkdev(sx.Dev_major, sx.Dev_minor),
		Ino:     sx.Ino,
		Nlink:   uint64(sx.Nlink),
		Mode:    uint32(sx.Mode),
		Uid:     sx.Uid,
		Gid:     sx.Gid,
		Rdev:    unix.Mkdev(sx.Rdev_major, sx.Rdev_minor),
		Size:    int64(sx.Size),
		Blksize: int64(sx.Blksize),
		Blocks:  int64(sx.Blocks),
		Atim:    unix.Timespec{Sec: sx.Atime.Sec, Nsec: int64(sx.Atime.Nsec)},
		Mtim:    unix.Timespec{Sec: sx.Mtime.Sec, Nsec: int64(sx.Mtime.Nsec)},
		Ctim:    unix.Timespec{Sec: sx.Ctime.Sec, Nsec: int64(sx.Ctime.Nsec)},
	}
	if sx.Mask&unix.STATX_BTIME == 0 || sx.Btime.Sec == 0 && sx.Btime.Nsec == 0 {
		return 1, nil
	}
	return uint64(sx.Btime.Sec)*1e9 + uint64(sx.Btime.Nsec), nil
}

// noXattrAt is set once the kernel has refused getxattrat(2) and
// listxattrat(2) (they came with Linux 6.13).
var noXattrAt atomic.Bool

// xattrArgs is the kernel's struct xattr_args. value is a real pointer, not
// an integer, so that the buffer stays alive and, should it live on a
// goroutine stack that moves, the field moves with it; that makes the
// layout right on 64-bit platforms only, where value is an __aligned_u64.
type xattrArgs struct {
	value *byte
	size  uint32
	flags uint32
}

// xattrAtWorks tells whether to try the *xattrat calls.
func xattrAtWorks() bool {
	return unsafe.Sizeof(uintptr(0)) == 8 && !noXattrAt.Load()
}

// xattrAtResult reads the outcome of a *xattrat call; ok is false when the
// kernel lacks them, or a seccomp filter that does not know them refuses
// them (EPERM, which a getxattr or listxattr never returns by itself).
func xattrAtResult(r uintptr, errno unix.Errno) (n int, ok bool, err error) {
	switch errno {
	case 0:
		return int(r), true, nil
	case unix.ENOSYS, unix.EPERM:
		noXattrAt.Store(true)
		return 0, false, nil
	}
	return 0, true, errno
}

// getxattrAt reads attribute attr of path beneath dirfd, not following a
// final symlink, into dest (or returns its size when dest is empty). It
// costs half of the /proc path's lookup on the kernels that have
// getxattrat(2), which a write's security.capability check and a
// directory's marker scan call often.
func getxattrAt(dirfd int, path, attr string, dest []byte) (int, error) {
	if path != "" && xattrAtWorks() {
		p, err := unix.BytePtrFromString(path)
		if err != nil {
			return 0, err
		}
		a, err := unix.BytePtrFromString(attr)
		if err != nil {
			return 0, err
		}
		args := xattrArgs{size: uint32(len(dest))}
		if len(dest) > 0 {
			args.value = &dest[0]
		}
		r, _, errno := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
			unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
		if n, ok, err := xattrAtResult(r, errno); ok {
			return n, err
		}
	}
	return unix.Lgetxattr(procPath(dirfd, path), attr, dest)
}

// listxattrAt lists the attributes of path beneath dirfd, not following a
// final symlink, as getxattrAt reads one.
func listxattrAt(dirfd int, path string, dest []byte) (int, error) {
	if path != "" && xattrAtWorks() {
		p, err := unix.BytePtrFromString(path)
		if err != nil {
			return 0, err
		}
		var buf *byte
		if len(dest) > 0 {
			buf = &dest[0]
		}
		r, _, errno := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
			unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(buf)), uintptr(len(dest)), 0)
		if n, ok, err := xattrAtResult(r, errno); ok {
			return n, err
		}
	}
	return unix.Llistxattr(procPath(dirfd, path), dest)
}
