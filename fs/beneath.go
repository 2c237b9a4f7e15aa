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

func (l *layer) mkdir(p string, mode uint32) error {
	return l.at(p, func(fd int, name string) error { return unix.Mkdirat(fd, name, mode) })
}
