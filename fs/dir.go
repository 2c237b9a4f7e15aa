package fs

import (
	"cmp"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// rootNode builds the node of the union's root directory.
func (u *Union) rootNode() (*node, error) {
	n := &node{u: u, inUpper: u.upper != nil, typ: unix.S_IFDIR >> 12, dir: &dirState{}}
	rec, _ := u.upperRecord("")
	if u.upper == nil || !rec.Opaque {
		for _, l := range u.lowers() {
			n.dir.lowers = append(n.dir.lowers, lowerRef{l, ""})
			if r, ok := l.record("", ""); ok && r.Opaque {
				break
			}
		}
	}
	if len(n.dir.lowers) > 0 {
		n.lower = n.dir.lowers[0]
	}
	var st unix.Stat_t
	top := u.layers[0]
	if err := lstatAt(top.fd, "", &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", top.path, err)
	}
	n.ino = u.inos.ino(st.Dev, st.Ino)
	return n, nil
}

// lowerIndex returns the directory's merged lower listing, building it on
// first use. The build reads every lower layer, so it runs under the
// directory's indexMu, not under mu.
func (n *node) lowerIndex() (*lowerIndex, error) {
	d := n.dir
	if d == nil {
		return nil, unix.ENOTDIR
	}
	n.mu.Lock()
	x := d.index
	n.mu.Unlock()
	if x != nil {
		return x, nil
	}
	d.indexMu.Lock()
	defer d.indexMu.Unlock()
	n.mu.Lock()
	x, lowers := d.index, d.lowers
	n.mu.Unlock()
	if x != nil {
		return x, nil // built while this call waited
	}
	x, err := buildLowerIndex(lowers)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	d.index = x
	n.mu.Unlock()
	return x, nil
}

// hasUpper reports whether the node has an entry in the upper at its path.
func (n *node) hasUpper() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.inUpper
}

// resolved is what one name of a directory resolves to.
type resolved struct {
	volume  *Union // the root of this volume
	virtual bool   // a directory that only leads to a volume
	st      unix.Stat_t
	gen     uint64 // birth-time generation of an upper entry (see statAt)
	inUpper bool
	lower   lowerRef
	lowers  []lowerRef // directories only
}

// resolve finds name in the directory: the upper first, then the merged
// lower listing, unless a whiteout or an opaque directory hides it.
func (n *node) resolve(name string) (*resolved, error) {
	return n.resolveAt(n.pathIfUsed(), name)
}

// pathIfUsed is the node's union path where the union needs it (records,
// volumes), and "" otherwise: walking the parents on every lookup of a
// mount that keeps no records is work for nothing.
func (n *node) pathIfUsed() string {
	if !n.u.usesPaths() {
		return ""
	}
	return n.relPath()
}

// usesPaths reports whether union paths mean anything to this union: it
// keeps records by path, or has volumes attached at paths.
func (u *Union) usesPaths() bool {
	return u.journal != nil || len(u.volumes) > 0
}

// resolveAt resolves name in the directory n, whose union path is dirPath.
// n need not be in the kernel's tree (see Union.resolvePath).
func (n *node) resolveAt(dirPath, name string) (*resolved, error) {
	if n == n.u.root && name == StateDir && !n.u.volume {
		return nil, unix.ENOENT
	}
	childPath := ""
	if n.u.usesPaths() || n.detached {
		childPath = joinPath(dirPath, name)
	}
	if v := n.u.volumeAt(childPath); v != nil {
		r := &resolved{volume: v, inUpper: true}
		if err := lstatAt(v.upper.fd, "", &r.st); err != nil {
			return nil, err
		}
		return r, nil
	}
	r, err := n.resolveLayers(dirPath, childPath, name)
	// With a writable upper the mount made these directories for real.
	if err == unix.ENOENT && n.u.writable() != 0 && n.u.isVolumeAncestor(childPath) {
		return n.u.virtualDir(childPath), nil
	}
	return r, err
}

// resolveLayers resolves name through the layers alone.
func (n *node) resolveLayers(dirPath, childPath, name string) (*resolved, error) {
	r := &resolved{}
	if n.hasUpper() {
		var err error
		if n.detached {
			r.gen, err = n.u.upper.stat(childPath, &r.st)
		} else {
			err = n.childAt(name, func(fd int, name string) (err error) {
				r.gen, err = statAt(fd, name, &r.st)
				return err
			})
		}
		switch {
		case err == nil:
			r.inUpper = true
		case errors.Is(err, unix.ENOENT):
		default:
			return nil, err
		}
	}
	rec, _ := n.u.upperRecord(childPath)
	var le *lowerEntry
	var x *lowerIndex
	if !rec.Opaque || rec.Redirect != "" {
		var err error
		if x, err = n.lowerIndex(); err != nil {
			return nil, err
		}
		le = x.lookup(name)
	}
	if r.inUpper {
		if r.st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return r, nil
		}
		switch {
		case rec.Redirect != "":
			r.lowers = n.u.probeLowers(rec.Redirect, n.u.upper.idx+1)
		case rec.Opaque:
		case le != nil && le.mode == unix.S_IFDIR:
			r.lowers = n.u.childLowers(x, le)
		}
		if len(r.lowers) > 0 {
			r.lower = r.lowers[0]
		}
		return r, nil
	}
	if le == nil || rec.Opaque {
		return nil, unix.ENOENT
	}
	r.lower = x.topRef(le)
	if err := lstatAt(r.lower.layer.fd, r.lower.path, &r.st); err != nil {
		return nil, err
	}
	r.lower.layer.applyMeta(r.lower.path, &r.st)
	if le.mode == unix.S_IFDIR {
		r.lowers = n.u.childLowers(x, le)
	}
	return r, nil
}

// unionIno is the inode number the union reports for a resolved entry.
func (u *Union) unionIno(r *resolved) uint64 {
	ino, _ := u.ident(r)
	return ino
}

// ident is a resolved entry's identity in the union: its inode number and a
// generation. Lower files and copies of them keep generation 0 (their
// identity is their origin's); a file born in the upper carries its birth
// time, so that a new file which got a freed inode number is a new node.
func (u *Union) ident(r *resolved) (ino, gen uint64) {
	if !r.inUpper {
		return u.inos.ino(r.st.Dev, r.st.Ino), 0
	}
	u.mu.RLock()
	o, ok := u.origins[r.st.Ino]
	u.mu.RUnlock()
	if ok {
		return o, 0
	}
	return u.inos.ino(r.st.Dev, r.st.Ino), r.gen
}

// Lookup resolves a name the kernel asks for.
func (n *node) Lookup(name string, out *fuse.EntryOut) (*node, syscall.Errno) {
	n.u.nsMu.RLock()
	defer n.u.nsMu.RUnlock()
	ch, errno := n.lookup(name, out)
	if ch != nil && n.dir != nil && n.dir.leanListed.Load() && !ch.isDir() {
		n.u.plus.missed()
	}
	return ch, errno
}

// lookup is Lookup for callers that hold nsMu already.
func (n *node) lookup(name string, out *fuse.EntryOut) (*node, syscall.Errno) {
	r, err := n.resolve(name)
	if err != nil {
		if n.u.volume && err == unix.ENOENT {
			// Another mount may create the name any time.
			out.SetEntryTimeout(volumeTimeout)
		}
		return nil, toErrno(err)
	}
	return n.newChild(r, out), 0
}

// newChild makes the node of a resolved entry and fills out from it; the
// kernel's tree takes it, or the node it has for the same file, when out
// is answered (kernel.register).
func (n *node) newChild(r *resolved, out *fuse.EntryOut) *node {
	if r.volume != nil {
		root := r.volume.root
		root.fillAttr(&r.st, &out.Attr)
		setVolumeTimeouts(out)
		return root
	}
	if n.u.volume {
		setVolumeTimeouts(out)
	}
	ino, gen := n.u.ident(r)
	if r.virtual {
		st := r.st
		child := &node{u: n.u, ino: r.st.Ino, typ: unix.S_IFDIR >> 12, dir: &dirState{virtual: &st}}
		child.fillAttr(&r.st, &out.Attr)
		return child
	}
	child := &node{
		u:       n.u,
		ino:     ino,
		gen:     gen,
		inUpper: r.inUpper,
		lower:   r.lower,
		typ:     uint8(r.st.Mode & unix.S_IFMT >> 12),
	}
	if isDirMode(r.st.Mode) {
		child.dir = &dirState{lowers: r.lowers}
	}
	child.fillAttr(&r.st, &out.Attr)
	return child
}

// listing returns the merged directory listing: the upper's entries, then
// the lower ones that the upper neither replaces nor hides.
func (n *node) listing() ([]fuse.DirEntry, error) {
	n.u.nsMu.RLock()
	defer n.u.nsMu.RUnlock()
	return n.listingAt(n.pathIfUsed())
}

// listingAt lists the directory whose union path is dirPath.
func (n *node) listingAt(dirPath string) ([]fuse.DirEntry, error) {
	ents := []fuse.DirEntry{
		{Name: ".", Mode: unix.S_IFDIR, Ino: n.ino},
		{Name: "..", Mode: unix.S_IFDIR, Ino: n.parentIno()},
	}
	var inUpper map[string]bool
	if n.hasUpper() {
		var raw []rawDirent
		var err error
		if n.detached {
			raw, err = readDirAt(n.u.upper.fd, dirPath)
		} else {
			err = n.withUpperDir(func(fd int) (err error) {
				raw, err = readDirAt(fd, "")
				return err
			})
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return nil, err
		}
		inUpper = make(map[string]bool, len(raw))
		for _, e := range raw {
			if n == n.u.root && e.name == StateDir && !n.u.volume {
				continue
			}
			inUpper[e.name] = true
			ino := n.u.upperIno(&unix.Stat_t{Dev: n.u.upper.dev, Ino: e.ino})
			ents = append(ents, fuse.DirEntry{Name: e.name, Mode: e.mode, Ino: ino})
		}
	}
	x, err := n.lowerIndex()
	if err != nil {
		return nil, err
	}
	// The upper's records of this directory, looked up once: they are
	// grouped by directory.
	n.u.mu.RLock()
	defer n.u.mu.RUnlock()
	recs := n.u.records[dirPath]
	for i := range x.entries {
		le := &x.entries[i]
		if inUpper[le.name] {
			continue
		}
		if rec, ok := recs[le.name]; ok && rec.Opaque {
			continue
		}
		ents = append(ents, fuse.DirEntry{Name: le.name, Mode: le.mode, Ino: n.u.inos.ino(x.dirs[le.top].layer.dev, le.ino)})
	}
	return n.u.addVolumeEntries(dirPath, ents), nil
}

// addVolumeEntries shows the volumes (and the virtual directories leading
// to them) attached in directory dirPath, in place of any layer entry of
// the same name.
func (u *Union) addVolumeEntries(dirPath string, ents []fuse.DirEntry) []fuse.DirEntry {
	if len(u.volumes) == 0 {
		return ents
	}
	seen := make(map[string]int, len(ents))
	for i, e := range ents {
		seen[e.Name] = i
	}
	add := func(name string, ino uint64) {
		e := fuse.DirEntry{Name: name, Mode: unix.S_IFDIR, Ino: ino}
		if i, ok := seen[name]; ok {
			ents[i] = e
			return
		}
		seen[name] = len(ents)
		ents = append(ents, e)
	}
	for _, vm := range u.volumes {
		rest, ok := strings.CutPrefix(vm.dest, dirPath)
		if dirPath != "" && (!ok || !strings.HasPrefix(rest, "/")) {
			continue
		}
		rest = strings.TrimPrefix(rest, "/")
		name, deeper, _ := strings.Cut(rest, "/")
		switch {
		case deeper == "":
			add(name, vm.u.root.ino)
		default:
			if _, ok := seen[name]; !ok {
				add(name, u.virtualDir(joinPath(dirPath, name)).st.Ino)
			}
		}
	}
	return ents
}

func setVolumeTimeouts(out *fuse.EntryOut) {
	out.SetEntryTimeout(volumeTimeout)
	out.SetAttrTimeout(volumeTimeout)
}

func (n *node) parentIno() uint64 {
	p, _ := n.parentName()
	if p == nil {
		return n.ino
	}
	return p.ino
}

// A listing is a directory's entries sorted by their offset cookies (see
// Union.dirCookie), taken when a reader starts at offset 0 and kept in the
// node for the requests that continue the pass.
type listing struct {
	ents []fuse.DirEntry
	seq  uint64 // order of the passes' starts (dirState.passSeq)
}

// dirCookie is the offset of the entry after name in a listing (the d_off
// of name): "." and ".." come first, every other name gets 63 bits of its
// hash (loff_t is signed), keyed with a seed of the mount's so that nobody
// can make a name collide with another on purpose. As the cookie depends
// on the name alone, a reader that continues from it, on a listing taken
// later, gets every entry it has not had yet, whatever was created or
// removed meanwhile; POSIX lets entries created or removed during the pass
// appear or not. Two names of one directory with the same cookie (odds
// 2^-63 a pair) would lose the second one to a reader that stops between
// them, as ext4's hashed cookies do.
func (u *Union) dirCookie(name string) uint64 {
	switch name {
	case ".":
		return 1
	case "..":
		return 2
	}
	return max(maphash.String(u.cookieSeed, name)>>1, 3)
}

// sortedListing lists the directory, in cookie order.
func (n *node) sortedListing() (*listing, error) {
	ents, err := n.listing()
	if err != nil {
		return nil, err
	}
	for i := range ents {
		ents[i].Off = n.u.dirCookie(ents[i].Name)
	}
	slices.SortFunc(ents, func(a, b fuse.DirEntry) int {
		if c := cmp.Compare(a.Off, b.Off); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return &listing{ents: ents}, nil
}

// passListing returns the listing for a read at offset off > 0: the one
// the pass started with, or a new one if it is gone. It returns nil, with
// no listing made, for the read past the end that the kernel sends after
// every pass to learn that it is over.
func (n *node) passListing(off uint64) (*listing, error) {
	n.mu.Lock()
	l, end := n.dir.pass, n.dir.passEnd
	n.mu.Unlock()
	if l != nil {
		return l, nil
	}
	if end != 0 && off >= end {
		return nil, nil
	}
	return n.startPass()
}

// startPass takes a new listing for a reader at offset 0. Of two passes
// that start at once, the later one's listing stays for the readers that
// continue.
func (n *node) startPass() (*listing, error) {
	n.mu.Lock()
	n.dir.passSeq++
	seq := n.dir.passSeq
	n.mu.Unlock()
	l, err := n.sortedListing()
	if err != nil {
		return nil, err
	}
	l.seq = seq
	n.mu.Lock()
	if p := n.dir.pass; p == nil || p.seq < seq {
		n.dir.pass, n.dir.passEnd = l, 0
	}
	n.mu.Unlock()
	return l, nil
}

// endPass drops l once a reader has listed it to the end, keeping its last
// cookie (see passListing).
func (n *node) endPass(l *listing) {
	n.mu.Lock()
	if n.dir.pass == l {
		n.dir.pass = nil
		n.dir.passEnd = 3 // past "." and ".."
		if k := len(l.ents); k > 0 {
			n.dir.passEnd = l.ents[k-1].Off
		}
	}
	n.mu.Unlock()
}

// readDir answers READDIR and READDIRPLUS: the entries of the listing the
// pass started with (see passListing), from the one after the request's
// offset, as many as fit.
func (k *kernel) readDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	n, st := k.dirNode(in.NodeId)
	if !st.Ok() {
		return st
	}
	var l *listing
	var err error
	if in.Offset == 0 {
		l, err = n.startPass()
	} else {
		l, err = n.passListing(in.Offset)
	}
	if err != nil {
		return status(toErrno(err))
	}
	if l == nil {
		return fuse.OK // the end
	}
	pos := 0
	if in.Offset != 0 {
		pos, _ = slices.BinarySearchFunc(l.ents, in.Offset+1, func(e fuse.DirEntry, t uint64) int {
			return cmp.Compare(e.Off, t)
		})
	}
	lean := plusUndecided
	for ; pos < len(l.ents); pos++ {
		// The listing is shared: the list takes copies of its entries.
		e := l.ents[pos]
		if !plus {
			if !out.AddDirEntry(e) {
				return fuse.OK
			}
			continue
		}
		eo := out.AddDirLookupEntry(e)
		if eo == nil {
			return fuse.OK
		}
		if e.Name != "." && e.Name != ".." {
			k.plusEntry(n, &e, eo, &lean, out)
		}
	}
	if l.seq != 0 {
		n.endPass(l)
	}
	return fuse.OK
}

const (
	plusUndecided = iota
	plusLean
	plusFull
)

// plusEntry fills in the node and attributes of one READDIRPLUS entry, or
// leaves them zero. An entry the kernel already has a node for gets none
// (a zero node ID, which the kernel takes as "nothing to add"): its cached
// attributes are valid, as every change goes through the mount, and a stat
// per entry is the bulk of a listing's cost. Files get attributes only
// while the union's readers want them (see plusPolicy; lean is decided
// once per request); directories always do, so that a walk descends
// without a LOOKUP each.
func (k *kernel) plusEntry(n *node, e *fuse.DirEntry, eo *fuse.EntryOut, lean *int, out *fuse.DirEntryList) {
	if n.knownChild(e.Name) != nil {
		return
	}
	if e.Mode&unix.S_IFMT != unix.S_IFDIR {
		if *lean == plusUndecided {
			*lean = plusFull
			if n.u.plus.lean() {
				*lean = plusLean
			}
		}
		if *lean == plusLean {
			n.u.plus.skipped()
			if !n.dir.leanListed.Load() {
				n.dir.leanListed.Store(true)
			}
			return
		}
	}
	// Not n.Lookup: that counts a LOOKUP the kernel sent.
	n.u.nsMu.RLock()
	child, errno := n.lookup(e.Name, eo)
	n.u.nsMu.RUnlock()
	if errno != 0 {
		*eo = fuse.EntryOut{}
		return
	}
	c := k.entryOut(n, e.Name, child, eo)
	if e.Mode&unix.S_IFMT != c.fileType() {
		out.FixMode(c.fileType()) // the entry changed since the listing
	}
}

// plusPolicy decides whether READDIRPLUS stats files. A walk that only
// looks at names and types (find, du of directories, a build scanning for
// sources) gains nothing from a stat per file, and on a cold cache each
// costs a disk read; a walk that stats what it lists (ls -l, rsync, tar c)
// would otherwise pay a LOOKUP round trip per file. The policy learns from
// the LOOKUPs of files that a listing left without attributes: each counts
// for several skipped ones, so after the first directory of an `ls -lR`
// listings carry file attributes again, while a `find` keeps them lean.
// While files get attributes nothing would tell that readers stopped
// using them, so one request in plusProbe is lean all the same: unused,
// its files count against attributes; used, for them.
type plusPolicy struct {
	score atomic.Int32 // > 0: stat files; clamped to [-plusClamp, plusClamp]
	n     atomic.Uint32
}

const (
	plusClamp = 256
	plusProbe = 8
)

// lean decides for one READDIRPLUS request.
func (p *plusPolicy) lean() bool {
	return p.score.Load() <= 0 || p.n.Add(1)%plusProbe == 0
}

// skipped counts a file listed without attributes.
func (p *plusPolicy) skipped() { p.add(-1) }

// missed counts a LOOKUP of a file that a listing left without attributes.
func (p *plusPolicy) missed() { p.add(4) }

func (p *plusPolicy) add(d int32) {
	for {
		old := p.score.Load()
		v := min(max(old+d, -plusClamp), plusClamp)
		if v == old || p.score.CompareAndSwap(old, v) {
			return
		}
	}
}

// fsyncDir makes the directory's entries durable.
func (n *node) fsyncDir() syscall.Errno {
	if !n.hasUpper() {
		return 0
	}
	// The directory's whiteouts and renames are part of it.
	if j := n.u.journal; j != nil {
		if err := j.flush(); err != nil {
			return syscall.EIO
		}
	}
	return toErrno(n.withUpperDir(func(dfd int) error {
		fd, err := openBeneath(dfd, "", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Fsync(fd)
	}))
}
