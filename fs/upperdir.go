package fs

import (
	"errors"
	"sync"

	"golang.org/x/sys/unix"
)

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
		if errors.Is(err, unix.EMFILE) && openUfds.shed(d) {
			fd, err = n.openUpperDir()
		}
		if err != nil {
			return err
		}
		d.ufdMu.Lock()
		opened := d.ufd <= 0
		if opened {
			d.ufd = fd
		} else {
			unix.Close(fd) // another caller was quicker
		}
		d.ufdMu.Unlock()
		if opened {
			openUfds.add(d)
		}
	}
}

// openUfds keeps the number of upper-directory descriptors within a share
// of the process's descriptor limit: a tree with more directories than that
// (a build, node_modules) would otherwise make every later open fail with
// EMFILE. Over the share, descriptors of directories no call is using are
// closed, in no particular order; they reopen from their parent's on next
// use, at any depth.
var openUfds ufdSet

type ufdSet struct {
	once sync.Once
	max  int

	mu   sync.Mutex
	open map[*dirState]struct{}
}

// ufdBudget is a quarter of the descriptor limit (Go raises the soft limit
// to the hard one at start), at least 64 and at most 65,536.
func ufdBudget() int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 1024
	}
	return int(min(max(lim.Cur/4, 64), 1<<16))
}

func (s *ufdSet) init() {
	s.once.Do(func() {
		s.max = ufdBudget()
		s.open = make(map[*dirState]struct{})
	})
}

// add records that d's descriptor is open, and closes others if that puts
// the set over its budget.
func (s *ufdSet) add(d *dirState) {
	s.init()
	s.mu.Lock()
	s.open[d] = struct{}{}
	over := len(s.open) - s.max
	s.mu.Unlock()
	if over > 0 {
		s.evict(d, over+s.max/16) // in batches: fewer passes over the set
	}
}

// shed closes up to half of the open descriptors but keep's, after an
// EMFILE; it reports whether it closed any.
func (s *ufdSet) shed(keep *dirState) bool {
	s.init()
	s.mu.Lock()
	n := len(s.open) / 2
	s.mu.Unlock()
	return n > 0 && s.evict(keep, n) > 0
}

// evict closes up to n descriptors other than keep's that no call holds
// and no removal pinned, and returns how many it closed.
func (s *ufdSet) evict(keep *dirState, n int) int {
	s.mu.Lock()
	var victims []*dirState
	for v := range s.open {
		if len(victims) == n {
			break
		}
		if v != keep && !v.pinned.Load() {
			victims = append(victims, v)
			delete(s.open, v)
		}
	}
	s.mu.Unlock()
	closed := 0
	for _, v := range victims {
		if v.ufdMu.TryLock() {
			if v.ufd > 0 {
				unix.Close(v.ufd)
				v.ufd = 0
				closed++
			}
			v.ufdMu.Unlock()
			continue
		}
		// In use: it stays open, and counted. (If its node was being
		// forgotten, the entry is stale: a later eviction finds no
		// descriptor and drops it.)
		s.mu.Lock()
		s.open[v] = struct{}{}
		s.mu.Unlock()
	}
	return closed
}

// remove forgets d, whose descriptor its node has closed.
func (s *ufdSet) remove(d *dirState) {
	s.init()
	s.mu.Lock()
	delete(s.open, d)
	s.mu.Unlock()
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
	if n.isDir() && n.hasUpper() {
		if d := n.dir; d != nil {
			d.pinned.Store(true)
		}
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
	pn, name := n.parentName()
	if pn == nil {
		if t := n.tmpFile(); t != nil {
			t.mu.RLock()
			defer t.mu.RUnlock()
			if t.fd > 0 {
				return fn(t.fd, "")
			}
		}
		return unix.ENOENT
	}
	if pn.u != n.u {
		// A volume's root: its parent is in another union.
		return fn(n.u.upper.fd, ".")
	}
	return pn.childAt(name, fn)
}

// forgotten closes what the node holds open once the kernel has dropped it.
func (n *node) forgotten() {
	if d := n.dir; d != nil && closeHeld(&d.ufdMu, &d.ufd) {
		openUfds.remove(d)
	}
	if n.tmp {
		if v, ok := n.u.tmps.LoadAndDelete(n); ok {
			t := v.(*tmpFile)
			closeHeld(&t.mu, &t.fd)
		}
	}
}

// tmpFile returns the O_TMPFILE descriptor holder of a node made by
// Tmpfile, nil for every other node.
func (n *node) tmpFile() *tmpFile {
	if !n.tmp {
		return nil
	}
	if v, ok := n.u.tmps.Load(n); ok {
		return v.(*tmpFile)
	}
	return nil
}

// closeHeld closes *fd, which users read under mu, once none uses it, and
// reports whether there was one to close.
func closeHeld(mu *sync.RWMutex, fd *int) bool {
	mu.Lock()
	defer mu.Unlock()
	if *fd <= 0 {
		return false
	}
	unix.Close(*fd)
	*fd = 0
	return true
}
