package fs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

func (n *node) Setattr(h *fileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := n.u.writable(); errno != 0 {
		return errno
	}
	if h == nil || !h.upper {
		size, truncating := in.GetSize()
		if errno := n.copyUpOpt(truncating && size == 0); errno != 0 {
			return errno
		}
	}
	if in.Valid&(fuse.FATTR_MODE|fuse.FATTR_UID|fuse.FATTR_GID|fuse.FATTR_SIZE) != 0 {
		n.metadataChanged()
	}
	// Work through an open descriptor where there is one: the file may have
	// no name left. Otherwise by name, beneath the parent's upper
	// descriptor: a chmod, chown or utimes opens nothing (tar makes three
	// such calls per file).
	noTruncate := n.isDir() || n.fileType() == syscall.S_IFLNK
	var st unix.Stat_t
	var err error
	if h != nil && h.upper {
		err = setattrAt(h.getFd(), "", noTruncate, in, &st)
	} else {
		err = n.selfAt(func(dirfd int, name string) error {
			return setattrAt(dirfd, name, noTruncate, in, &st)
		})
	}
	if err != nil {
		return toErrno(err)
	}
	n.fillAttr(&st, &out.Attr)
	if n.u.volume {
		out.SetTimeout(volumeTimeout)
	}
	return 0
}

// metadataChanged notes that the node's upper copy now differs from its
// lower entry in more than times (see dirState.timesOnly). Callers call
// it after the copy-up and before the change.
func (n *node) metadataChanged() {
	if d := n.dir; d != nil {
		d.timesOnly.Store(false)
	}
}

// setattrAt applies a SETATTR to name beneath dirfd, a single component
// that is not followed if it is a symlink, or with name "" to the file
// open as dirfd (possibly O_PATH), and stats the result into st.
func setattrAt(dirfd int, name string, noTruncate bool, in *fuse.SetAttrIn, st *unix.Stat_t) error {
	flags := unix.AT_SYMLINK_NOFOLLOW
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	if mode, ok := in.GetMode(); ok {
		if err := fchmodAt(dirfd, name, mode, flags); err != nil {
			return err
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		u, g := -1, -1
		if uok {
			u = int(uid)
		}
		if gok {
			g = int(gid)
		}
		if err := unix.Fchownat(dirfd, name, u, g, flags); err != nil {
			return err
		}
	}
	// Truncate before setting times, so an explicit mtime survives.
	if size, ok := in.GetSize(); ok {
		if noTruncate {
			return syscall.EISDIR
		}
		if err := truncateAt(dirfd, name, int64(size)); err != nil {
			return err
		}
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if in.Valid&fuse.FATTR_ATIME != 0 {
			ts[0] = unix.Timespec{Sec: int64(in.Atime), Nsec: int64(in.Atimensec)}
			if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
				ts[0] = unix.Timespec{Nsec: unix.UTIME_NOW}
			}
		}
		if in.Valid&fuse.FATTR_MTIME != 0 {
			ts[1] = unix.Timespec{Sec: int64(in.Mtime), Nsec: int64(in.Mtimensec)}
			if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
				ts[1] = unix.Timespec{Nsec: unix.UTIME_NOW}
			}
		}
		if err := unix.UtimesNanoAt(dirfd, name, ts, flags); err != nil {
			if name != "" {
				return err
			}
			// utimensat has no AT_EMPTY_PATH before Linux 6.x on some
			// filesystems: go through /proc instead.
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, procPath(dirfd, ""), ts, 0); err != nil {
				return err
			}
		}
	}
	return unix.Fstatat(dirfd, name, st, flags)
}

// truncateAt truncates name beneath dirfd, or with name "" the file open as
// dirfd.
func truncateAt(dirfd int, name string, size int64) error {
	if name == "" {
		return truncateFd(dirfd, size)
	}
	fd, err := openBeneath(dirfd, name, unix.O_PATH, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return truncateFd(fd, size)
}

// truncateFd truncates the file behind fd, which may be an O_PATH
// descriptor that ftruncate(2) refuses.
func truncateFd(fd int, size int64) error {
	if err := unix.Ftruncate(fd, size); err == nil {
		return nil
	}
	wfd, err := unix.Open(procPath(fd, ""), unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(wfd)
	return unix.Ftruncate(wfd, size)
}

func (n *node) Setxattr(attr string, data []byte, flags uint32) syscall.Errno {
	if isPrivateXattr(attr) {
		return syscall.EOPNOTSUPP
	}
	if errno := n.copyUp(); errno != 0 {
		return errno
	}
	n.metadataChanged()
	return toErrno(n.withXattrPath(func(p string) error {
		return unix.Lsetxattr(p, attr, data, int(flags))
	}))
}

func (n *node) Removexattr(attr string) syscall.Errno {
	if isPrivateXattr(attr) {
		return syscall.EOPNOTSUPP
	}
	// Removing an attribute the file does not have changes nothing and
	// needs no copy-up.
	if _, errno := n.Getxattr(attr, nil); errno != 0 {
		return errno
	}
	if errno := n.copyUp(); errno != 0 {
		return errno
	}
	n.metadataChanged()
	return toErrno(n.withXattrPath(func(p string) error {
		return unix.Lremovexattr(p, attr)
	}))
}

// copyFileRange copies between two open files of the union.
func copyFileRange(hin *fileHandle, offIn uint64, hout *fileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	inFd, errno := hin.readFd()
	if errno != 0 {
		return 0, errno
	}
	ioff, ooff := int64(offIn), int64(offOut)
	k, err := unix.CopyFileRange(inFd, &ioff, hout.getFd(), &ooff, int(length), int(flags))
	if err != nil {
		return 0, toErrno(err)
	}
	return uint32(k), 0
}
