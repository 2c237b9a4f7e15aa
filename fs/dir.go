package fs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

var (
	_ = (gofs.NodeLookuper)((*node)(nil))
	_ = (gofs.NodeOpendirHandler)((*node)(nil))
)

// rootNode builds the node of the union's root directory.
func (u *Union) rootNode() (*node, error) {
	n := &node{u: u, inUpper: u.upper != nil}
	rec, _ := u.upperRecord("")
	if u.upper == nil || !rec.Opaque {
		for _, l := range u.lowers() {
			n.lowers = append(n.lowers, lowerRef{l, ""})
			if r, ok := l.record("", ""); ok && r.Opaque {
				break
			}
		}
	}
	if len(n.lowers) > 0 {
		n.lower = n.lowers[0]
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
// first use.
func (n *node) lowerIndex() (*lowerIndex, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.index != nil {
		return n.index, nil
	}
	x, err := buildLowerIndex(n.lowers)
	if err != nil {
		return nil, err
	}
	n.index = x
	return x, nil
}

// hasUpper reports whether the directory exists in the upper.
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

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	n.u.nsMu.RLock()
	defer n.u.nsMu.RUnlock()
	return n.lookup(ctx, name, out)
}

// lookup is Lookup for callers that hold nsMu already.
func (n *node) lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	r, err := n.resolve(name)
	if err != nil {
		if n.u.volume && err == unix.ENOENT {
			// Another mount may create the name any time.
			out.SetEntryTimeout(volumeTimeout)
		}
		return nil, toErrno(err)
	}
	return n.newChild(ctx, r, out), 0
}

// newChild makes (or finds, for a hard link seen before) the node of a
// resolved entry and fills out from it.
func (n *node) newChild(ctx context.Context, r *resolved, out *fuse.EntryOut) *gofs.Inode {
	if r.volume != nil {
		root := r.volume.root
		root.fillAttr(&r.st, &out.Attr)
		setVolumeTimeouts(out)
		return n.NewInode(ctx, root, gofs.StableAttr{Mode: unix.S_IFDIR, Ino: root.ino})
	}
	if n.u.volume {
		setVolumeTimeouts(out)
	}
	ino, gen := n.u.ident(r)
	if r.virtual {
		st := r.st
		child := &node{u: n.u, ino: r.st.Ino, virtual: &st}
		child.fillAttr(&r.st, &out.Attr)
		return n.NewInode(ctx, child, gofs.StableAttr{Mode: unix.S_IFDIR, Ino: child.ino})
	}
	child := &node{
		u:       n.u,
		ino:     ino,
		gen:     gen,
		inUpper: r.inUpper,
		lower:   r.lower,
		lowers:  r.lowers,
	}
	child.fillAttr(&r.st, &out.Attr)
	return n.NewInode(ctx, child, gofs.StableAttr{Mode: r.st.Mode & unix.S_IFMT, Ino: ino, Gen: gen})
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	// Changes made through the mount invalidate the kernel's copy of a
	// listing, and lower layers never change: the kernel may keep it. A
	// volume may change behind the mount's back.
	// Hold the upper directory open while it is open, so that fstat still
	// answers if it is removed meanwhile.
	if n.hasUpper() {
		n.withUpperDir(func(int) error { return nil })
	}
	var fuseFlags uint32
	if !n.u.volume {
		fuseFlags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	}
	return &dirHandle{n: n}, fuseFlags, 0
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
	_, p := n.Parent()
	if p == nil {
		return n.ino
	}
	return p.StableAttr().Ino
}

// dirHandle is an open directory: a snapshot of the listing taken at the
// first read (often there is none: the kernel serves a cached listing), so
// that offsets stay valid for seekdir/telldir while it is open.
type dirHandle struct {
	n    *node
	ents []fuse.DirEntry
	read bool
	pos  int
}

func (h *dirHandle) load() syscall.Errno {
	if h.read {
		return 0
	}
	ents, err := h.n.listing()
	if err != nil {
		return toErrno(err)
	}
	h.ents, h.read = ents, true
	return 0
}

var (
	_ = (gofs.FileReaddirenter)((*dirHandle)(nil))
	_ = (gofs.FileSeekdirer)((*dirHandle)(nil))
	_ = (gofs.FileLookuper)((*dirHandle)(nil))
	_ = (gofs.FileFsyncdirer)((*dirHandle)(nil))
)

func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if errno := h.load(); errno != 0 {
		return nil, errno
	}
	if h.pos >= len(h.ents) {
		return nil, 0
	}
	e := h.ents[h.pos]
	h.pos++
	e.Off = uint64(h.pos)
	return &e, 0
}

func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if errno := h.load(); errno != 0 {
		return errno
	}
	if off > uint64(len(h.ents)) {
		off = uint64(len(h.ents))
	}
	h.pos = int(off)
	return 0
}

// Lookup answers READDIRPLUS for the entry just listed.
func (h *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if ch := h.n.GetChild(name); ch != nil {
		if cn, ok := ch.Operations().(*node); ok {
			var st unix.Stat_t
			if err := cn.lstat(&st); err == nil {
				cn.fillAttr(&st, &out.Attr)
				if cn.u.volume {
					setVolumeTimeouts(out)
				}
				return ch, 0
			}
		}
	}
	return h.n.Lookup(ctx, name, out)
}

func (h *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if !h.n.hasUpper() {
		return 0
	}
	// The directory's whiteouts and renames are part of it.
	if j := h.n.u.journal; j != nil {
		if err := j.flush(); err != nil {
			return syscall.EIO
		}
	}
	return toErrno(h.n.withUpperDir(func(dfd int) error {
		fd, err := openBeneath(dfd, "", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Fsync(fd)
	}))
}
