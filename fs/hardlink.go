package fs

import (
	"errors"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/unionfs/unionfs/copyup"
)

// Hard links of a lower layer stay one file through a copy-up: when one name
// of a lower inode with several links is copied up, every other name of it
// that the union still shows is linked to the copy in the upper at once. The
// names then share an upper inode, so data, st_nlink and st_ino agree
// across the names and across remounts, with nothing else to keep in step.
// Finding the other names takes one walk of the lower layer, done the first
// time one of its hard-linked files is copied up.

// linkGroups maps the inode numbers of a layer's multiply-linked regular
// files to their paths in the layer.
type linkGroups struct {
	once  sync.Once
	err   error
	paths map[uint64][]string
}

// hardlinks returns the paths in the layer of the inode ino.
func (l *layer) hardlinks(ino uint64) ([]string, error) {
	g := &l.links
	g.once.Do(func() {
		g.paths = make(map[uint64][]string)
		g.err = l.walkLinks("", g.paths)
	})
	return g.paths[ino], g.err
}

func (l *layer) walkLinks(dir string, out map[uint64][]string) error {
	ents, err := readDirAt(l.fd, dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := joinPath(dir, e.name)
		switch {
		case dir == "" && e.name == StateDir:
		case e.mode == unix.S_IFDIR:
			if err := l.walkLinks(p, out); err != nil {
				return err
			}
		case e.mode == unix.S_IFREG:
			var st unix.Stat_t
			if err := lstatAt(l.fd, p, &st); err != nil {
				return err
			}
			if st.Nlink > 1 {
				out[st.Ino] = append(out[st.Ino], p)
			}
		}
	}
	return nil
}

// linkAliases links the other names of the lower file src, just copied up
// to union path copied (name in directory node dir), to the copy.
func (u *Union) linkAliases(src lowerRef, copied string, dir *node, name string) error {
	var st unix.Stat_t
	if err := lstatAt(src.layer.fd, src.path, &st); err != nil {
		return err
	}
	if st.Nlink <= 1 {
		return nil
	}
	paths, err := src.layer.hardlinks(st.Ino)
	if err != nil {
		return err
	}
	for _, p := range paths {
		if p == copied {
			continue
		}
		// Only names that still show this very lower file; one that
		// was deleted, replaced or copied up already has its own life.
		r, err := u.resolvePath(p)
		if err != nil || r.inUpper || r.lower.layer != src.layer || r.lower.path != p {
			continue
		}
		pdir, base := splitPath(p)
		if err := u.ensureUpperDir(pdir); err != nil {
			return err
		}
		dfd, err := openBeneath(u.upper.fd, pdir, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		err = dir.childAt(name, func(sfd int, sname string) error {
			return unix.Linkat(sfd, sname, dfd, base, 0)
		})
		unix.Close(dfd)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
	}
	return nil
}

// resolvePath resolves a union path from the root without the kernel,
// reusing the directory nodes (and their lower indexes) the tree has.
func (u *Union) resolvePath(p string) (*resolved, error) {
	d, dirPath := u.root, ""
	comps := strings.Split(p, "/")
	for i, c := range comps {
		r, err := d.resolveAt(dirPath, c)
		if err != nil {
			return nil, err
		}
		if i == len(comps)-1 {
			return r, nil
		}
		if !isDirMode(r.st.Mode) {
			return nil, unix.ENOTDIR
		}
		next := d.knownChild(c)
		if next == nil {
			next = &node{u: u, inUpper: r.inUpper, typ: unix.S_IFDIR >> 12, dir: &dirState{lowers: r.lowers}, detached: true}
		}
		d, dirPath = next, joinPath(dirPath, c)
	}
	return nil, unix.ENOENT
}

// ensureUpperDir makes the directory at union path dir exist in the upper,
// copying it and its parents up as needed.
func (u *Union) ensureUpperDir(dir string) error {
	var st unix.Stat_t
	if err := u.upper.lstat(dir, &st); err == nil {
		return nil
	}
	parent, name := splitPath(dir)
	if err := u.ensureUpperDir(parent); err != nil {
		return err
	}
	r, err := u.resolvePath(dir)
	if err != nil {
		return err
	}
	if r.inUpper {
		return nil
	}
	pfd, err := openBeneath(u.upper.fd, parent, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	cst, err := copyup.Copy(copyup.Source{Dirfd: r.lower.layer.fd, Path: r.lower.path},
		copyup.Dest{Dirfd: pfd, Name: name}, copyup.Options{WorkFd: u.workFd})
	if err != nil && !errors.Is(err, copyup.ErrExists) {
		return err
	}
	if err == nil {
		if errno := u.setOrigin(cst.Ino, u.unionIno(r)); errno != 0 {
			return errno
		}
	}
	if n := u.nodeAt(dir); n != nil {
		n.mu.Lock()
		n.inUpper = true
		n.mu.Unlock()
	}
	return nil
}

// nodeAt returns the tree's node for a union path, if the kernel knows it.
func (u *Union) nodeAt(p string) *node {
	n := u.root
	if p == "" {
		return n
	}
	for _, c := range strings.Split(p, "/") {
		if n = n.knownChild(c); n == nil {
			return nil
		}
	}
	return n
}
