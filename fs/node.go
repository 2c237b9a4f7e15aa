package fs

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/unionfs/unionfs/whiteout"
)

// node is one file of the union: a directory merged from several layers, or
// a non-directory taken from the topmost layer that has it.
type node struct {
	u   *Union
	ino uint64 // the union inode number, fixed for the node's life
	gen uint64 // with ino, the node's identity (see Union.ident)

	// The kernel's view of the node, guarded by the mount's tree lock
	// (kernel.mu, see tree.go):
	id      uint64 // FUSE node ID; 0 while the kernel does not hold the node
	lookups uint64 // the kernel's lookup count
	parent  *node  // the directory of the node's (first) name; nil: none left
	name    string

	cu sync.Mutex // held while copying the node up, so that it happens once

	cachedOpens atomic.Int32 // open handles the kernel does not pass through
	typ         uint8        // the file type: S_IFMT >> 12
	detached    bool         // a scratch node of resolvePath, not in the tree
	tmp         bool         // made by Tmpfile: its descriptor is in Union.tmps
	shared      bool         // in kernel.shared (guarded by kernel.mu)

	// Guarded by mu (declared here so that the bools pack with the mutex):
	removed bool // a lower-only file whose last name was removed: nlink 0
	inUpper bool // an entry exists in the upper at the node's path
	mu      sync.Mutex
	lower   lowerRef // topmost lower entry; layer is nil when there is none

	// What only directories have lives behind a pointer, nil for the rest:
	// most nodes are plain files, and a mount may hold hundreds of
	// thousands of them. An O_TMPFILE file's descriptor is in Union.tmps.
	dir *dirState
}

// dirState is the part of a node only directories have.
type dirState struct {
	virtual *unix.Stat_t // a directory that exists only to lead to a volume

	// ufd is the O_PATH descriptor of the directory's upper copy (see
	// withUpperDir); 0 until opened. ufdMu is held while it is used.
	ufdMu sync.RWMutex
	ufd   int
	// pinned: the directory is being removed or replaced, and its ufd
	// must stay open for the processes that still hold it (see
	// pinUpperDir); others may be closed to stay within ufdBudget.
	pinned atomic.Bool

	indexMu    sync.Mutex  // held while index is built
	leanListed atomic.Bool // a listing left some files without attributes

	// timesOnly: this mount copied the directory up, and since then only
	// its times changed (entries came and went), so its upper copy says
	// nothing the lower one does not, besides times. Removing it then
	// need not wait for its whiteout to be on disk (see remove).
	timesOnly atomic.Bool

	children map[string]*node // the names the kernel holds (guarded by kernel.mu)

	// Guarded by the node's mu:
	lowers  []lowerRef  // every lower dir merged into this one, top down
	index   *lowerIndex // the merged lower listing, built on first use
	pass    *listing    // the listing readers are going through (see dirHandle)
	passSeq uint64      // passes started
	passEnd uint64      // the last cookie of the last pass read to the end
}

// tmpFile holds the descriptor of an O_TMPFILE file; mu is held while it is
// used.
type tmpFile struct {
	mu sync.RWMutex
	fd int
}

// isVirtual reports whether the node is a directory that exists only to
// lead to a volume.
func (n *node) isVirtual() bool { return n.dir != nil && n.dir.virtual != nil }

// where tells which real file backs the node right now.
type where struct {
	upper bool
	lower lowerRef
}

func (n *node) where() where {
	n.mu.Lock()
	defer n.mu.Unlock()
	return where{upper: n.inUpper, lower: n.lower}
}

// orphanPath stands for the path of a node that has no name left (an
// unlinked file still open, a removed directory): it lies beneath a
// directory that never exists, so every call on it fails with ENOENT
// instead of reaching some other file.
const orphanPath = StateDir + "/no-such-dir/orphan"

// relPath is the node's path in the union, which is also its path in the
// upper layer.
func (n *node) relPath() string {
	k := n.u.k
	var parts []string
	k.mu.RLock()
	for cur := n; cur != n.u.root; cur = cur.parent {
		if cur.parent == nil {
			k.mu.RUnlock()
			return orphanPath
		}
		parts = append(parts, cur.name)
	}
	k.mu.RUnlock()
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/")
}

// at calls fn with a directory descriptor and a name that reach the real
// file behind the node: its lower file, or its upper one.
func (n *node) at(fn func(dirfd int, name string) error) error {
	return n.atWhere(n.where(), fn)
}

// atWhere is at for a caller that has taken w already and must act on the
// same file it describes.
func (n *node) atWhere(w where, fn func(dirfd int, name string) error) error {
	if !w.upper {
		return fn(w.lower.layer.fd, w.lower.path)
	}
	return n.selfAt(fn)
}

// lstat stats the real file behind the node.
// The path may name another file by now (the node's name was renamed over
// or unlinked and the inode number reused): that is reported as ENOENT
// rather than serving another file's attributes.
func (n *node) lstat(st *unix.Stat_t) error {
	if n.isVirtual() {
		*st = *n.dir.virtual
		return nil
	}
	w := n.where()
	if !w.upper {
		if err := lstatAt(w.lower.layer.fd, w.lower.path, st); err != nil {
			return err
		}
		w.lower.layer.applyMeta(w.lower.path, st)
		return nil
	}
	if n.isDir() && n.statOwnDir(st) {
		return nil
	}
	var gen uint64
	err := n.selfAt(func(fd int, name string) (err error) {
		gen, err = statAt(fd, name, st)
		return err
	})
	if err != nil {
		return err
	}
	if !n.sameFile(st, gen) {
		return unix.ENOENT
	}
	return nil
}

// fillAttr turns a real stat into the union's view of it.
func (n *node) fillAttr(st *unix.Stat_t, out *fuse.Attr) {
	out.FromStat(toSyscallStat(st))
	out.Ino = n.ino
	if n.isRemoved() {
		out.Nlink = 0
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR && n.isMerged() {
		// As overlayfs: counting subdirectories across layers is not
		// worth it, and 1 tells find(1) not to rely on the link count.
		out.Nlink = 1
	}
}

func (n *node) markRemoved() {
	n.mu.Lock()
	n.removed = true
	n.mu.Unlock()
}

func (n *node) isRemoved() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.removed
}

// isMerged reports whether a directory combines more than one real
// directory (overlayfs's "merge" type).
func (n *node) isMerged() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dir == nil {
		return false
	}
	if n.inUpper {
		return len(n.dir.lowers) > 0
	}
	return len(n.dir.lowers) > 1
}

// Getattr reads the node's attributes, through h if it is open. A handle
// released meanwhile (one GETATTR borrowed, see kernel.GetAttr) answers
// EBADF: then by path.
func (n *node) Getattr(h *fileHandle, out *fuse.AttrOut) syscall.Errno {
	if h != nil {
		if errno := h.getattr(out); errno != syscall.EBADF {
			return errno
		}
	}
	var st unix.Stat_t
	if err := n.lstat(&st); err != nil {
		return toErrno(err)
	}
	n.fillAttr(&st, &out.Attr)
	if n.u.volume {
		out.SetTimeout(volumeTimeout)
	}
	return 0
}

func (n *node) Statfs(out *fuse.StatfsOut) syscall.Errno {
	l := n.u.layers[0]
	var st syscall.Statfs_t
	if err := syscall.Fstatfs(l.fd, &st); err != nil {
		return toErrno(err)
	}
	out.FromStatfsT(&st)
	return 0
}

func (n *node) Readlink() ([]byte, syscall.Errno) {
	if n.isVirtual() {
		return nil, syscall.EINVAL
	}
	var out []byte
	err := n.at(func(fd int, name string) error {
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
	return out, toErrno(err)
}

// withXattrPath calls fn with a path for the xattr calls on the node's real
// file. Lower layers cannot change, so their paths are used as they are.
func (n *node) withXattrPath(fn func(p string) error) error {
	return n.at(func(fd int, name string) error { return fn(procPath(fd, name)) })
}

// isPrivateXattr reports the attributes that mark layers for overlayfs and
// fuse-overlayfs: unionfs reads them from lower layers, and like overlayfs
// it neither shows them nor lets them be set through the mount.
func isPrivateXattr(name string) bool {
	return strings.HasPrefix(name, whiteout.TrustedPrefix) || strings.HasPrefix(name, whiteout.UserPrefix) ||
		strings.HasPrefix(name, whiteout.FuseOverlayfsPrefix)
}

func (n *node) Getxattr(attr string, dest []byte) (uint32, syscall.Errno) {
	if n.isVirtual() || isPrivateXattr(attr) {
		return 0, syscall.ENODATA
	}
	if v, ok := n.metaXattrs()[attr]; ok {
		if len(dest) == 0 {
			return uint32(len(v)), 0
		}
		if len(v) > len(dest) {
			return uint32(len(v)), syscall.ERANGE
		}
		return uint32(copy(dest, v)), 0
	}
	var k int
	err := n.at(func(fd int, name string) (err error) {
		k, err = getxattrAt(fd, name, attr, dest)
		return err
	})
	if err != nil {
		return 0, toErrno(err)
	}
	return uint32(k), 0
}

func (n *node) Listxattr(dest []byte) (uint32, syscall.Errno) {
	if n.isVirtual() {
		return 0, 0
	}
	var list []byte
	err := n.at(func(fd int, name string) error {
		for size := 1024; ; size *= 4 {
			buf := make([]byte, size)
			k, err := listxattrAt(fd, name, buf)
			if err == unix.ERANGE && size < 1<<20 {
				continue
			}
			if err != nil {
				return err
			}
			list = buf[:k]
			return nil
		}
	})
	if err != nil {
		return 0, toErrno(err)
	}
	out := list[:0:0]
	meta := n.metaXattrs()
	for _, name := range strings.SplitAfter(string(list), "\x00") {
		bare := strings.TrimSuffix(name, "\x00")
		if _, dup := meta[bare]; name != "" && !dup && !isPrivateXattr(bare) {
			out = append(out, name...)
		}
	}
	for name := range meta {
		if !isPrivateXattr(name) {
			out = append(append(out, name...), 0)
		}
	}
	if len(dest) == 0 {
		return uint32(len(out)), 0
	}
	if len(out) > len(dest) {
		return uint32(len(out)), syscall.ERANGE
	}
	return uint32(copy(dest, out)), 0
}

// metaXattrs returns the extended attributes an image records for the
// node's lower file, beyond those on disk.
func (n *node) metaXattrs() map[string][]byte {
	w := n.where()
	if w.upper || w.lower.layer == nil || w.lower.layer.meta == nil {
		return nil
	}
	return w.lower.layer.meta[w.lower.path].Xattrs
}

// toErrno converts an error from the layers into the errno FUSE returns,
// looking through wrapping (fuse.ToStatus would turn a wrapped errno into
// ENOSYS).
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return syscall.Errno(fuse.ToStatus(err))
}

// The two Stat_t types are the same kernel structure.
var _ [unsafe.Sizeof(unix.Stat_t{}) - unsafe.Sizeof(syscall.Stat_t{})]byte

func toSyscallStat(st *unix.Stat_t) *syscall.Stat_t {
	return (*syscall.Stat_t)(unsafe.Pointer(st))
}
