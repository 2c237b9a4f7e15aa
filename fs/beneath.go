package fs

import (
	"golang.org/x/sys/unix"
)

// Calls on the upper (and on volumes, which other programs may change at
// any time) never follow a symlink on the way to the file they act on: the
// parent directory is opened beneath the layer root with openat2
// RESOLVE_NO_SYMLINKS, and the call works on the last element relative to
// it. A directory swapped for a symlink therefore gives ELOOP or ENOTDIR
// rather than reaching outside the layer.

// at calls fn with a descriptor of p's parent directory and p's last
// element ("." for the root itself).
func (l *layer) at(p string, fn func(dirfd int, name string) error) error {
	dir, name := splitPath(p)
	if p == "" {
		return fn(l.fd, ".")
	}
	if dir == "" {
		return fn(l.fd, name)
	}
	fd, err := openBeneath(l.fd, dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return fn(fd, name)
}

func (l *layer) stat(p string, st *unix.Stat_t) (gen uint64, err error) {
	err = l.at(p, func(fd int, name string) error {
		gen, err = statAt(fd, name, st)
		return err
	})
	return gen, err
}

func (l *layer) lstat(p string, st *unix.Stat_t) error {
	return l.at(p, func(fd int, name string) error { return lstatAt(fd, name, st) })
}

func (l *layer) unlink(p string, flags int) error {
	return l.at(p, func(fd int, name string) error { return unix.Unlinkat(fd, name, flags) })
}

func (l *layer) mkdir(p string, mode uint32) error {
	return l.at(p, func(fd int, name string) error { return unix.Mkdirat(fd, name, mode) })
}

func (l *layer) mknod(p string, mode uint32, dev int) error {
	return l.at(p, func(fd int, name string) error { return unix.Mknodat(fd, name, mode, dev) })
}

func (l *layer) symlink(target, p string) error {
	return l.at(p, func(fd int, name string) error { return unix.Symlinkat(target, fd, name) })
}

func (l *layer) chown(p string, uid, gid int) error {
	return l.at(p, func(fd int, name string) error {
		return unix.Fchownat(fd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
	})
}

func (l *layer) readlink(p string) ([]byte, error) {
	var out []byte
	err := l.at(p, func(fd int, name string) error {
		for size := 256; ; size *= 2 {
			buf := make([]byte, size)
			k, err := unix.Readlinkat(fd, name, buf)
			if err != nil {
				return err
			}
			if k < size {
				out = buf[:k]
				return nil
			}
		}
	})
	return out, err
}

// xattrPath calls fn with a path naming p for the xattr calls, which have
// no *at form: the /proc link of its parent's descriptor plus its name.
func (l *layer) xattrPath(p string, fn func(path string) error) error {
	return l.at(p, func(fd int, name string) error { return fn(procPath(fd, name)) })
}

func (l *layer) link(oldp, newp string) error {
	return l.at(oldp, func(ofd int, oname string) error {
		return l.at(newp, func(nfd int, nname string) error {
			return unix.Linkat(ofd, oname, nfd, nname, 0)
		})
	})
}

func (l *layer) rename(oldp, newp string, flags uint) error {
	return l.at(oldp, func(ofd int, oname string) error {
		return l.at(newp, func(nfd int, nname string) error {
			return unix.Renameat2(ofd, oname, nfd, nname, flags)
		})
	})
}
