package fs

import (
	"sync"

	"golang.org/x/sys/unix"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

var _ = (gofs.NodeOnForgetter)((*node)(nil))

// A directory node that exists in the upper keeps an O_PATH descriptor of
// its upper directory, opened on first use from its parent's. Operations on
// a child then take the descriptor and the child's name: no path is walked,
// a rename of any ancestor is harmless, a path longer than PATH_MAX works
// as on a local filesystem, and no symlink is ever followed on the way.
// The descriptor is closed when the kernel forgets the node.

// withUpperDir calls fn with the descriptor of the directory's upper copy.
func (n *node) withUpperDir(fn func(fd int) error) error {
	if n == n.u.root {
		return fn(n.u.upper.fd)
	}
	d := n.dir
	if d == nil {
		return unix.ENOTDIR
	}
	for {
		d.ufdMu.RLock()
		if d.ufd > 0 {
			defer d.ufdMu.RUnlock()
			return fn(d.ufd)
		}
		d.ufdMu.RUnlock()
		fd, err := n.openUpperDir()
		if err != nil {
			return err
		}
		d.ufdMu.Lock()
		if d.ufd > 0 {
			unix.Close(fd) // another caller was quicker
		} else {
			d.ufd = fd
		}
		d.ufdMu.Unlock()
	}
}

// openUpperDir opens the directory's upper copy through its parent's, and
// checks that what it opened is this directory.
func (n *node) openUpperDir() (int, error) {
	if !n.hasUpper() {
		return -1, unix.ENOENT
	}
	var fd int
	err := n.selfAt(func(pfd int, name string) error {
		var err error
		fd, err = openBeneath(pfd, name, unix.O_PATH|unix.O_DIRECTORY, 0)
		return err
	})
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	gen, err := statAt(fd, ".", &st)
	if err == nil && !n.sameFile(&st, gen) {
		err = unix.ENOENT
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// sameFile reports whether an upper file is the one the node stands for.
func (n *node) sameFile(st *unix.Stat_t, gen uint64) bool {
	if n == n.u.root {
		return true
	}
	ino, g := n.u.ident(&resolved{st: *st, gen: gen, inUpper: true})
	return ino == n.ino && g == n.gen
}

// pinUpperDir opens the directory's upper descriptor before the directory
// is removed or replaced, so that fstat through a descriptor a process
// still holds answers, with st_nlink 0, as on a local filesystem.
func (n *node) pinUpperDir() {
	if n.IsDir() && n.hasUpper() {
		n.withUpperDir(func(int) error { return nil })
	}
}

// statOwnDir stats the directory through its own descriptor, if it has one
// open: no parent lookup, and it answers for a removed directory too.
func (n *node) statOwnDir(st *unix.Stat_t) bool {
	d := n.dir
	if n == n.u.root || d == nil {
		return false
	}
	d.ufdMu.RLock()
	defer d.ufdMu.RUnlock()
	if d.ufd <= 0 {
		return false
	}
	_, err := statAt(d.ufd, "", st)
	return err == nil
}

// bothAt calls fn with the upper descriptors of directories a and b, taking
// one descriptor once when they are the same directory (a read lock must
// not be taken twice: a waiting writer would deadlock it).
func bothAt(a, b *node, fn func(afd, bfd int) error) error {
	if a == b {
		return a.withUpperDir(func(fd int) error { return fn(fd, fd) })
	}
	return a.withUpperDir(func(afd int) error {
		return b.withUpperDir(func(bfd int) error { return fn(afd, bfd) })
	})
}

// childAt calls fn with this directory's upper descriptor and name.
func (n *node) childAt(name string, fn func(dirfd int, name string) error) error {
	return n.withUpperDir(func(fd int) error { return fn(fd, name) })
}

// selfAt calls fn with the upper descriptor of the node's parent directory
// and the node's name in it ("." for the root). A node that lost its last
// name gets ENOENT.
func (n *node) selfAt(fn func(dirfd int, name string) error) error {
	if n == n.u.root {
		return fn(n.u.upper.fd, ".")
	}
	name, parent := n.Parent()
	if parent == nil {
		if t := n.tmpFile(); t != nil {
			t.mu.RLock()
			defer t.mu.RUnlock()
			if t.fd > 0 {
				return fn(t.fd, "")
			}
		}
		return unix.ENOENT
	}
	pn, ok := parent.Operations().(*node)
	if !ok {
		return unix.ENOENT
	}
	if pn.u != n.u {
		// A volume's root: its parent is in another union.
		return fn(n.u.upper.fd, ".")
	}
	return pn.childAt(name, fn)
}

// OnForget closes the upper descriptor when the kernel drops the node.
func (n *node) OnForget() {
	if d := n.dir; d != nil {
		closeHeld(&d.ufdMu, &d.ufd)
	}
	if v, ok := n.u.tmps.LoadAndDelete(n); ok {
		t := v.(*tmpFile)
		closeHeld(&t.mu, &t.fd)
	}
}

// tmpFile returns the O_TMPFILE descriptor holder of a node made by
// Tmpfile, nil for every other node.
func (n *node) tmpFile() *tmpFile {
	if v, ok := n.u.tmps.Load(n); ok {
		return v.(*tmpFile)
	}
	return nil
}

// closeHeld closes *fd, which users read under mu, once none uses it.
func closeHeld(mu *sync.RWMutex, fd *int) {
	mu.Lock()
	defer mu.Unlock()
	if *fd > 0 {
		unix.Close(*fd)
		*fd = 0
	}
}
