package fs

import (
	"errors"
	"fmt"
	"slices"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/unionfs/unionfs/copyup"
	"github.com/unionfs/unionfs/layerdb"
)

// writable answers EROFS for every change to a mount without an upper.
func (u *Union) writable() syscall.Errno {
	if u.upper == nil || u.cfg.ReadOnly {
		return syscall.EROFS
	}
	return 0
}

// copyUp makes sure the node has its own entry in the upper, copying its
// parents first. A regular file's data is copied unless noData is set (the
// caller is about to truncate it).
func (n *node) copyUp() syscall.Errno {
	return n.copyUpOpt(false)
}

func (n *node) copyUpOpt(noData bool) syscall.Errno {
	// Every change starts here or in prepareDir: refuse them all on a
	// read-only mount, an entry already in the upper included.
	if errno := n.u.writable(); errno != 0 {
		return errno
	}
	if n.where().upper {
		return 0
	}
	pn, name := n.parentName()
	if pn == nil {
		return syscall.ENOENT
	}
	if errno := pn.copyUpOpt(false); errno != 0 {
		return errno
	}
	n.cu.Lock()
	defer n.cu.Unlock()
	w := n.where()
	if w.upper {
		return 0
	}
	if w.lower.layer == nil {
		return syscall.EROFS // a virtual directory leading to a volume
	}
	var st unix.Stat_t
	copied := false
	err := pn.childAt(name, func(dirfd int, name string) error {
		var err error
		st, err = copyup.Copy(
			copyup.Source{Dirfd: w.lower.layer.fd, Path: w.lower.path},
			copyup.Dest{Dirfd: dirfd, Name: name},
			copyup.Options{WorkFd: n.u.workFd, NoData: noData, Override: w.lower.layer.override(w.lower.path)},
		)
		if errors.Is(err, copyup.ErrExists) {
			return nil
		}
		if err != nil {
			return err
		}
		copied = true
		if errno := n.u.setOrigin(st.Ino, n.ino); errno != 0 {
			return errno
		}
		if d := n.dir; d != nil {
			d.timesOnly.Store(true)
		}
		n.mu.Lock()
		n.inUpper = true
		n.mu.Unlock()
		return nil
	})
	// The other names of a hard-linked file are linked outside the parent's
	// descriptor lock: finding them may look through this directory too.
	if err == nil && copied && st.Mode&unix.S_IFMT == unix.S_IFREG {
		if lerr := n.u.linkAliases(w.lower, joinPath(pn.relPath(), name), pn, name); lerr != nil {
			err = fmt.Errorf("copy up %s: link other names: %w", w.lower.path, lerr)
		}
	}
	if err != nil {
		n.u.log.Printf("%v", err)
		return toErrno(err)
	}
	if !copied {
		n.mu.Lock()
		n.inUpper = true
		n.mu.Unlock()
	}
	return 0
}

// setOrigin records that upper inode upperIno is a copy of the union inode
// ino, so that it keeps that number across remounts.
func (u *Union) setOrigin(upperIno, ino uint64) syscall.Errno {
	// Nothing to keep if the numbers agree; and a number from the private
	// range is the mount's own, handed out anew at the next mount.
	if u.inos.ino(u.upper.dev, upperIno) == ino || ino>>63 != 0 {
		return 0
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, err := u.journal.add([]layerdb.Change{layerdb.OriginChange(upperIno, ino)}); err != nil {
		return syscall.EIO
	}
	u.origins[upperIno] = ino
	return 0
}

// recordEdit is a set of record changes, applied to the database and then
// to memory.
type recordEdit struct {
	put     map[string]layerdb.Record
	del     []string // single paths
	delTree []string // paths and everything beneath
	move    [][2]string
	dropIno []uint64 // origins of upper inodes that are gone
}

// maxRecordPath is the longest path a record may have: bbolt keys are at
// most 32 KiB, and one refused key would fail a whole batch of others.
const maxRecordPath = 30 << 10

// keysFit reports whether every path of the edit can be a database key.
func (e *recordEdit) keysFit() bool {
	paths := append(append([]string(nil), e.del...), e.delTree...)
	for _, m := range e.move {
		paths = append(paths, m[0], m[1])
	}
	for p, r := range e.put {
		paths = append(paths, p, r.Redirect)
	}
	for _, p := range paths {
		if len(p) > maxRecordPath {
			return false
		}
	}
	return true
}

func (e *recordEdit) putRec(p string, r layerdb.Record) {
	if e.put == nil {
		e.put = make(map[string]layerdb.Record)
	}
	e.put[p] = r
}

// commit applies the edit to the in-memory records and queues it for the
// state database. With durable set it returns only once the edit is on
// disk: the caller is about to change the upper in a way that relies on it.
func (u *Union) commit(e *recordEdit, durable bool) syscall.Errno {
	if !e.keysFit() {
		return syscall.ENAMETOOLONG
	}
	var ch []layerdb.Change
	for _, p := range e.delTree {
		ch = append(ch, layerdb.DeleteTreeChange(p))
	}
	for _, p := range e.del {
		ch = append(ch, layerdb.DeleteChange(p))
	}
	for _, m := range e.move {
		ch = append(ch, layerdb.MoveTreeChange(m[0], m[1]))
	}
	for p, r := range e.put {
		ch = append(ch, layerdb.PutChange(p, r))
	}
	for _, ino := range e.dropIno {
		ch = append(ch, layerdb.DeleteOriginChange(ino))
	}
	if len(ch) == 0 || u.journal == nil {
		return 0 // a volume keeps no records
	}
	u.mu.Lock()
	seq, err := u.journal.add(ch)
	if err == nil {
		for _, p := range e.delTree {
			u.records.deleteTree(p)
		}
		for _, p := range e.del {
			u.records.del(p)
		}
		for _, m := range e.move {
			u.records.moveTree(m[0], m[1])
		}
		for p, r := range e.put {
			u.records.put(p, r)
		}
		for _, ino := range e.dropIno {
			delete(u.origins, ino)
		}
	}
	u.mu.Unlock()
	if err == nil && durable {
		err = u.journal.wait(seq)
	}
	if err != nil {
		return syscall.EIO
	}
	return 0
}

// lowerHas reports whether the lower layers merged into this directory have
// name, so that the name needs a whiteout once the union no longer shows an
// upper entry there.
func (n *node) lowerHas(name string) (bool, error) {
	x, err := n.lowerIndex()
	if err != nil {
		return false, err
	}
	return x.lookup(name) != nil, nil
}

// prepareDir makes the directory writable: it must exist in the upper.
func (n *node) prepareDir() syscall.Errno {
	if errno := n.u.writable(); errno != 0 {
		return errno
	}
	return n.copyUpOpt(false)
}

// chownNew gives a new upper entry the caller's ownership; the group stays
// the one the filesystem chose when the directory is set-group-ID.
func (n *node) chownNew(caller *fuse.Caller, dirfd int, name string) error {
	if n.u.euid != 0 {
		return nil
	}
	if caller.Uid == uint32(n.u.euid) && caller.Gid == uint32(n.u.egid) {
		return nil // created with the caller's owner already
	}
	gid := int(caller.Gid)
	var st unix.Stat_t
	if err := lstatAt(dirfd, "", &st); err == nil && st.Mode&unix.S_ISGID != 0 {
		gid = -1
	}
	return unix.Fchownat(dirfd, name, int(caller.Uid), gid, unix.AT_SYMLINK_NOFOLLOW)
}

// create makes a new entry with mk in the directory's upper copy, gives it
// the caller's ownership and returns its node; a failure after mk undoes
// the creation.
func (n *node) create(caller *fuse.Caller, name string, isDir bool, out *fuse.EntryOut,
	mk func(dirfd int, name string) error) (*node, syscall.Errno) {
	if errno := n.prepareDir(); errno != 0 {
		return nil, errno
	}
	r := &resolved{inUpper: true}
	err := n.childAt(name, func(dirfd int, name string) error {
		if err := mk(dirfd, name); err != nil {
			return err
		}
		err := n.chownNew(caller, dirfd, name)
		if err == nil {
			r.gen, err = statAt(dirfd, name, &r.st)
		}
		if err != nil {
			flags := 0
			if isDir {
				flags = unix.AT_REMOVEDIR
			}
			unix.Unlinkat(dirfd, name, flags)
		}
		return err
	})
	if err != nil {
		return nil, toErrno(err)
	}
	return n.newChild(r, out), 0
}

// Tmpfile makes an unnamed file in the directory's upper copy, as open(2)
// with O_TMPFILE does; linking it through /proc/self/fd names it.
func (n *node) Tmpfile(caller *fuse.Caller, flags, mode uint32, out *fuse.EntryOut) (*node, *fileHandle, uint32, syscall.Errno) {
	if errno := n.prepareDir(); errno != 0 {
		return nil, nil, 0, errno
	}
	fd := -1
	err := n.withUpperDir(func(dfd int) (err error) {
		fd, err = unix.Openat(dfd, ".", int(flags)&openFlagsMask&^unix.O_DIRECTORY|unix.O_TMPFILE|unix.O_CLOEXEC, mode&0o7777)
		return err
	})
	if err != nil {
		return nil, nil, 0, toErrno(err)
	}
	r := &resolved{inUpper: true}
	if n.u.euid == 0 {
		err = unix.Fchown(fd, int(caller.Uid), int(caller.Gid))
	}
	if err == nil {
		r.gen, err = statAt(fd, "", &r.st)
	}
	var keep int
	if err == nil {
		keep, err = unix.Dup(fd)
	}
	if err != nil {
		unix.Close(fd)
		return nil, nil, 0, toErrno(err)
	}
	ino, gen := n.u.ident(r)
	child := &node{u: n.u, ino: ino, gen: gen, inUpper: true, tmp: true, typ: unix.S_IFREG >> 12}
	n.u.tmps.Store(child, &tmpFile{fd: keep})
	child.fillAttr(&r.st, &out.Attr)
	return child, child.newHandle(fd, true), openFlagsNoFlush, 0
}

func (n *node) Create(caller *fuse.Caller, name string, flags, mode uint32, out *fuse.EntryOut) (*node, *fileHandle, uint32, syscall.Errno) {
	fd := -1
	ch, errno := n.create(caller, name, false, out, func(dirfd int, name string) (err error) {
		fd, err = openBeneath(dirfd, name, int(flags)&openFlagsMask|unix.O_CREAT|unix.O_EXCL, mode)
		return err
	})
	if errno != 0 {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, nil, 0, errno
	}
	return ch, ch.newHandle(fd, true), openFlagsNoFlush, 0
}

// Mkdir: a directory made where a lower entry was deleted must not show
// that entry's old children; the whiteout record already makes it opaque.
func (n *node) Mkdir(caller *fuse.Caller, name string, mode uint32, out *fuse.EntryOut) (*node, syscall.Errno) {
	return n.create(caller, name, true, out, func(dirfd int, name string) error {
		return unix.Mkdirat(dirfd, name, mode)
	})
}

func (n *node) Mknod(caller *fuse.Caller, name string, mode, rdev uint32, out *fuse.EntryOut) (*node, syscall.Errno) {
	return n.create(caller, name, false, out, func(dirfd int, name string) error {
		return unix.Mknodat(dirfd, name, mode, int(rdev))
	})
}

func (n *node) Symlink(caller *fuse.Caller, target, name string, out *fuse.EntryOut) (*node, syscall.Errno) {
	return n.create(caller, name, false, out, func(dirfd int, name string) error {
		return unix.Symlinkat(target, dirfd, name)
	})
}

// Link gives file t the new name. The kernel takes t's node for it.
func (n *node) Link(t *node, name string, out *fuse.EntryOut) syscall.Errno {
	if errno := crossesVolume(n, t); errno != 0 {
		return errno
	}
	if errno := n.prepareDir(); errno != 0 {
		return errno
	}
	// Linking a lower file copies it up once; both names then share the
	// upper inode, and its union inode number stays the original's.
	if errno := t.copyUp(); errno != 0 {
		return errno
	}
	var st unix.Stat_t
	link := func(ofd int, oname string, nfd int) error {
		var err error
		if oname == "" {
			// An O_TMPFILE file gets its first name.
			err = unix.Linkat(unix.AT_FDCWD, procPath(ofd, ""), nfd, name, unix.AT_SYMLINK_FOLLOW)
		} else {
			err = unix.Linkat(ofd, oname, nfd, name, 0)
		}
		if err != nil {
			return err
		}
		return lstatAt(nfd, name, &st)
	}
	var err error
	if parent, oname := t.parentName(); parent == n {
		// Another name in the same directory.
		err = n.withUpperDir(func(fd int) error { return link(fd, oname, fd) })
	} else {
		err = t.selfAt(func(ofd int, oname string) error {
			return n.withUpperDir(func(nfd int) error { return link(ofd, oname, nfd) })
		})
	}
	if err != nil {
		return toErrno(err)
	}
	t.fillAttr(&st, &out.Attr)
	return 0
}

// remove deletes name from the union: the upper entry goes, and a whiteout
// is recorded when a lower layer still has the name.
func (n *node) remove(name string, isDir bool) syscall.Errno {
	if errno := n.prepareDir(); errno != 0 {
		return errno
	}
	n.u.nsMu.RLock()
	defer n.u.nsMu.RUnlock()
	// A copy-up of the entry running meanwhile would put its copy in place
	// after the whiteout, and an upper entry wins over a whiteout: wait for
	// it, and keep new ones out until the entry is gone.
	cn := n.knownChild(name) // the entry's node, when the kernel has one
	if cn != nil {
		cn.cu.Lock()
		defer cn.cu.Unlock()
	}
	r, err := n.resolve(name)
	if err != nil {
		return toErrno(err)
	}
	gotDir := r.st.Mode&unix.S_IFMT == unix.S_IFDIR
	switch {
	case isDir && !gotDir:
		return syscall.ENOTDIR
	case !isDir && gotDir:
		return syscall.EISDIR
	}
	p := joinPath(n.relPath(), name)
	if n.u.holdsVolume(p) {
		return syscall.EBUSY
	}
	if isDir {
		if errno := n.u.checkEmpty(p, r, cn); errno != 0 {
			return errno
		}
		if cn != nil {
			cn.pinUpperDir()
		}
	}
	hasLower, err := n.lowerHas(name)
	if err != nil {
		return toErrno(err)
	}
	e := &recordEdit{}
	if isDir {
		e.delTree = append(e.delTree, p)
	} else {
		e.del = append(e.del, p)
	}
	if hasLower {
		e.putRec(p, layerdb.Record{Opaque: true})
	}
	if r.inUpper && (isDir || r.st.Nlink <= 1) {
		e.dropIno = append(e.dropIno, r.st.Ino)
	}
	// The whiteout must be on disk before the upper entry that hides the
	// lower one goes: otherwise a crash would bring back the lower file,
	// older than what the upper held. Not so for a directory this mount
	// copied up only to hold its times (rm -r copies up every directory it
	// empties): a crash brings it back as it would a lower-only directory
	// whose removal it lost, which needs no wait either.
	durable := r.inUpper && hasLower
	if isDir && cn != nil && cn.dir != nil && cn.dir.timesOnly.Load() {
		durable = false
	}
	if errno := n.u.commit(e, durable); errno != 0 {
		return errno
	}
	if r.inUpper {
		flags := 0
		if isDir {
			flags = unix.AT_REMOVEDIR
		}
		if err := n.childAt(name, func(fd int, name string) error { return unix.Unlinkat(fd, name, flags) }); err != nil {
			return toErrno(err)
		}
	}
	if cn != nil && (isDir || !r.inUpper && r.st.Nlink <= 1) {
		cn.markRemoved()
	}
	return 0
}

// checkEmpty reports ENOTEMPTY unless the merged directory at p has no
// entries. known is the directory's node, if the kernel has one: its lower
// index, when built from the same lower directories, is used rather than
// built again (rm -r has just listed the directory).
func (u *Union) checkEmpty(p string, r *resolved, known *node) syscall.Errno {
	d := &node{u: u, inUpper: r.inUpper, typ: unix.S_IFDIR >> 12, dir: &dirState{lowers: r.lowers}, detached: true}
	if known != nil && known.dir != nil {
		known.mu.Lock()
		if slices.Equal(known.dir.lowers, r.lowers) {
			d.dir.index = known.dir.index
		}
		known.mu.Unlock()
	}
	ents, err := d.listingAt(p)
	if err != nil {
		return toErrno(err)
	}
	if len(ents) > 2 {
		return syscall.ENOTEMPTY
	}
	return 0
}
