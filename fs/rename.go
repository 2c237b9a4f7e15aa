package fs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/unionfs/unionfs/layerdb"
)

// swapPath parks one side's records while RENAME_EXCHANGE swaps two
// subtrees; it lies in the reserved state directory, where no record of the
// union can be.
const swapPath = StateDir + "/swap"

// Rename moves an entry. A directory that lower layers contribute to is
// moved without copying its subtree: the upper directory is moved and a
// redirect record tells lookups where its lower half lives (overlayfs
// redirect_dir). The old name gets a whiteout if a lower layer still has it.
func (n *node) Rename(name string, np *node, newName string, flags uint32) syscall.Errno {
	if errno := crossesVolume(n, np); errno != 0 {
		return errno
	}
	exchange := flags&unix.RENAME_EXCHANGE != 0
	// The nodes the kernel has for both names (the kernel holds both
	// directories locked, so these stay).
	srcKnown, dstKnown := n.knownChild(name), np.knownChild(newName)
	// Records are keyed by path: a directory rename (or an exchange with a
	// directory on either side) changes paths beneath it and so excludes
	// every other user of paths; other renames only exclude those. Without
	// a node the kernel has not told the type: take the safe side.
	movesDir := func(c *node) bool { return c == nil || c.isDir() }
	if movesDir(srcKnown) || exchange && movesDir(dstKnown) {
		n.u.nsMu.Lock()
		defer n.u.nsMu.Unlock()
	} else {
		n.u.nsMu.RLock()
		defer n.u.nsMu.RUnlock()
	}
	if n.u.holdsVolume(joinPath(n.relPath(), name)) || n.u.holdsVolume(joinPath(np.relPath(), newName)) {
		return syscall.EBUSY
	}
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL
	}
	// A directory moved (or exchanged) gets a redirect to its lower half:
	// its upper copy is no longer just times. After any copy-up below.
	for _, ch := range []*node{srcKnown, dstKnown} {
		if ch != nil {
			defer ch.metadataChanged()
		}
	}
	if errno := n.prepareDir(); errno != 0 {
		return errno
	}
	if errno := np.prepareDir(); errno != 0 {
		return errno
	}
	src, err := n.resolve(name)
	if err != nil {
		return toErrno(err)
	}
	dst, err := np.resolve(newName)
	dstExists := err == nil
	if err != nil && err != unix.ENOENT {
		return toErrno(err)
	}
	switch {
	case flags&unix.RENAME_NOREPLACE != 0 && dstExists:
		return syscall.EEXIST
	case exchange && !dstExists:
		return syscall.ENOENT
	}
	srcNode, errno := n.childNode(name, srcKnown)
	if errno != 0 {
		return errno
	}
	var dstNode *node
	if dstExists {
		if dstNode, errno = np.childNode(newName, dstKnown); errno != 0 {
			return errno
		}
		if dstNode.ino == srcNode.ino && dstNode.gen == srcNode.gen {
			// Two names of one file (as two nodes: linked in a volume
			// from outside): rename(2) does nothing.
			return 0
		}
	}
	srcDir := isDirMode(src.st.Mode)
	if dstExists && !exchange {
		dstDir := isDirMode(dst.st.Mode)
		switch {
		case srcDir && !dstDir:
			return syscall.ENOTDIR
		case !srcDir && dstDir:
			return syscall.EISDIR
		case dstDir:
			if errno := n.u.checkEmpty(joinPath(np.relPath(), newName), dst, dstNode); errno != 0 {
				return errno
			}
			dstNode.pinUpperDir()
		}
	}
	if errno := srcNode.copyUp(); errno != 0 {
		return errno
	}
	if exchange {
		if errno := dstNode.copyUp(); errno != 0 {
			return errno
		}
	}

	oldP, newP := joinPath(n.relPath(), name), joinPath(np.relPath(), newName)
	srcHasLower, err := n.lowerHas(name)
	if err != nil {
		return toErrno(err)
	}
	dstHasLower, err := np.lowerHas(newName)
	if err != nil {
		return toErrno(err)
	}
	e := &recordEdit{}
	if exchange {
		srcRec := n.u.recordFor(srcNode, newP, dstHasLower)
		dstRec := n.u.recordFor(dstNode, oldP, srcHasLower)
		e.move = [][2]string{{oldP, swapPath}, {newP, oldP}, {swapPath, newP}}
		e.setOrDelete(newP, srcRec)
		e.setOrDelete(oldP, dstRec)
	} else {
		newRec := n.u.recordFor(srcNode, newP, dstHasLower)
		if dstExists {
			e.delTree = append(e.delTree, newP)
			if dst.inUpper && (isDirMode(dst.st.Mode) || dst.st.Nlink <= 1) {
				e.dropIno = append(e.dropIno, dst.st.Ino)
			}
		}
		if srcDir {
			e.move = [][2]string{{oldP, newP}}
		} else {
			e.del = append(e.del, oldP)
		}
		e.setOrDelete(newP, newRec)
		if srcHasLower {
			e.putRec(oldP, layerdb.Record{Opaque: true})
		}
	}
	renameUpper := func(flags uint) error {
		return bothAt(n, np, func(ofd, nfd int) error {
			return unix.Renameat2(ofd, name, nfd, newName, flags)
		})
	}
	if !srcDir && !exchange {
		// A file: its records go to disk first. A crash before the rename
		// then leaves the upper file at its old name, which wins over the
		// whiteout there; the other order could show the lower original
		// and the moved copy, one inode under two names.
		undo := n.u.recordsUndo(oldP, newP)
		if errno := n.u.commit(e, true); errno != 0 {
			return errno
		}
		if err := renameUpper(uint(flags)); err != nil {
			n.u.commit(undo, true)
			return toErrno(err)
		}
		if dstNode != nil && !dst.inUpper {
			dstNode.markRemoved()
		}
		n.u.k.move(n, name, np, newName)
		return 0
	}
	// A directory: the upper changes first. If the server dies before the
	// records are written, the lower half of the moved directory shows at
	// its old place again, and nothing is hidden that should not be.
	if err := renameUpper(uint(flags)); err != nil {
		return toErrno(err)
	}
	if errno := n.u.commit(e, false); errno != 0 {
		// Put the upper back as it was, so the union stays as before.
		back := uint(0)
		if exchange {
			back = unix.RENAME_EXCHANGE
		}
		bothAt(np, n, func(nfd, ofd int) error {
			return unix.Renameat2(nfd, newName, ofd, name, back)
		})
		return errno
	}
	if dstNode != nil && !exchange && !dst.inUpper {
		dstNode.markRemoved()
	}
	// The kernel's tree moves while paths are still held still (nsMu): a
	// lookup beneath the directory must not take its old path once the
	// records have moved.
	if exchange {
		n.u.k.exchange(n, name, np, newName)
	} else {
		n.u.k.move(n, name, np, newName)
	}
	return 0
}

// recordFor computes the record an entry needs at its new path p, where a
// lower layer has an entry of that name if lowerAtP.
func (u *Union) recordFor(c *node, p string, lowerAtP bool) layerdb.Record {
	if c.dir == nil {
		return layerdb.Record{Opaque: lowerAtP}
	}
	c.mu.Lock()
	lowers := c.dir.lowers
	c.mu.Unlock()
	if len(lowers) == 0 {
		// A directory of the upper alone must not merge with whatever
		// the lower layers have at its new place.
		return layerdb.Record{Opaque: lowerAtP}
	}
	target := lowers[0].path
	if target == p {
		return layerdb.Record{}
	}
	return layerdb.Record{Redirect: target}
}

// recordsUndo returns the edit that puts back the records at paths ps as
// they are now.
func (u *Union) recordsUndo(ps ...string) *recordEdit {
	e := &recordEdit{}
	for _, p := range ps {
		if r, ok := u.upperRecord(p); ok {
			e.putRec(p, r)
		} else {
			e.del = append(e.del, p)
		}
	}
	return e
}

func (e *recordEdit) setOrDelete(p string, r layerdb.Record) {
	if r == (layerdb.Record{}) {
		e.del = append(e.del, p)
		return
	}
	e.putRec(p, r)
}

// childNode returns the node of an existing child: known, the one the
// kernel has, or else a node of its own looked up now.
func (n *node) childNode(name string, known *node) (*node, syscall.Errno) {
	if known != nil {
		return known, 0
	}
	var out fuse.EntryOut
	ch, errno := n.lookup(name, &out)
	if errno != 0 {
		return nil, errno
	}
	return ch, 0
}

func isDirMode(mode uint32) bool { return mode&unix.S_IFMT == unix.S_IFDIR }
