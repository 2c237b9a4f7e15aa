package fs

import (
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// kernel answers the FUSE requests of one mount, on go-fuse's raw API: it
// keeps the node tree (tree.go), the node IDs and file handles the kernel
// uses, and hands each request to the node it names.
//
// Directories are served without handles. The first OPENDIR is answered
// ENOSYS, after which the kernel (5.1 and later) opens directories on its
// own, keeping their listings (FOPEN_KEEP_CACHE and FOPEN_CACHE_DIR), and
// sends READDIR, READDIRPLUS and FSYNCDIR with file handle 0: on a warm tree
// opendir(3) costs no round trip and `find` does not reach the server. A
// listing's offsets are cookies made from the entry names (see
// Union.dirCookie), so no per-open state is needed to continue one. A
// kernel before 5.1 does not offer FUSE_NO_OPENDIR_SUPPORT; its OPENDIR is
// answered with handle 0 and the same cache flags.
type kernel struct {
	fuse.RawFileSystem // ENOSYS for what the union does not serve

	root   *node
	server *fuse.Server
	inited chan struct{} // closed once the kernel's INIT is answered

	// mu guards the tree: the node-ID table and, in every node, id,
	// lookups, parent and name, and every directory's children.
	mu      sync.RWMutex
	nodes   []*node              // by the table slot of their node ID; nodes[1] is the root
	freeIDs []uint64             // the last node IDs of free slots (see assignID)
	shared  map[ident]*node      // files seen with several names
	links   map[*node][]nodeName // names of a node beyond its first

	fmu     sync.Mutex
	files   []*fileHandle // by file handle; files[0] stays nil
	freeFhs []uint64
	opens   map[*node][]*fileHandle // open handles by node

	bmu       sync.Mutex
	backing   map[*node]*backing // passthrough backing files by node
	noBacking bool               // the kernel refused one: do not ask again

	// ringOpts is set when the mount asked for FUSE over io_uring; Init
	// then starts ring (or leaves why it could not in ringErr).
	ringOpts   *fuse.MountOptions
	devsBefore map[int]bool // the process's /dev/fuse descriptors before this mount's
	ringDev    int          // the ring's own descriptor of the mount's /dev/fuse; -1: none
	ring       *ringServer
	ringErr    error
	logf       func(format string, args ...any)
}

var _ fuse.RawFileSystem = (*kernel)(nil)

// backing is a passthrough backing file the kernel holds for a node: one
// per node, shared by its passthrough handles.
type backing struct {
	id   int32
	refs int
}

func newKernel(root *node) *kernel {
	k := &kernel{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		root:          root,
		inited:        make(chan struct{}),
		nodes:         []*node{nil, root},
		shared:        make(map[ident]*node),
		links:         make(map[*node][]nodeName),
		files:         []*fileHandle{nil},
		opens:         make(map[*node][]*fileHandle),
		backing:       make(map[*node]*backing),
		ringDev:       -1,
	}
	root.id, root.lookups = fuse.FUSE_ROOT_ID, 1
	return k
}

func (k *kernel) String() string { return "unionfs" }

// Init runs when INIT has been answered, before any other request is read.
func (k *kernel) Init(s *fuse.Server) {
	k.server = s
	if k.ringOpts != nil && s.KernelSettings().Flags64()&fuse.CAP_OVER_IO_URING != 0 {
		// The kernel holds every request until the ring is complete.
		k.ringErr = k.startRing(s)
	}
	close(k.inited)
}

func (k *kernel) startRing(s *fuse.Server) error {
	// The ring gets a descriptor of its own, so that a number go-fuse
	// closes and another mount reuses never carries this mount's replies.
	dev := -1
	for fd := range devFuseFds() {
		if !k.devsBefore[fd] {
			if dev >= 0 {
				return errors.New("io_uring: cannot tell the mount's /dev/fuse descriptor")
			}
			dev = fd
		}
	}
	if dev < 0 {
		return errors.New("io_uring: the mount's /dev/fuse descriptor was not found")
	}
	dev, err := unix.FcntlInt(uintptr(dev), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("io_uring: dup /dev/fuse: %w", err)
	}
	k.ringDev = dev
	k.ring, err = startRing(dev, k, k.ringOpts, s.KernelSettings(), k.logf)
	return err
}

// OnUnmount runs when go-fuse's /dev/fuse readers stop. Ring requests may
// still be answered then: with a ring, Server.Wait lets the root go once
// the queue threads are done.
func (k *kernel) OnUnmount() {
	if k.ring == nil {
		k.root.forgotten()
	}
}

func status(errno syscall.Errno) fuse.Status { return fuse.Status(errno) }

var errStale = fuse.Status(syscall.ESTALE)

// dirNode returns the directory with node ID id.
func (k *kernel) dirNode(id uint64) (*node, fuse.Status) {
	n := k.node(id)
	switch {
	case n == nil:
		return nil, errStale
	case n.dir == nil:
		return nil, fuse.ENOTDIR
	}
	return n, fuse.OK
}

// entryOut hands child, resolved or created as name in dir, to the kernel
// in out.
func (k *kernel) entryOut(dir *node, name string, child *node, out *fuse.EntryOut) *node {
	n, id := k.register(dir, name, child, out.Attr.Nlink)
	out.NodeId, out.Generation = id, n.gen
	out.Attr.Ino = n.ino
	out.Attr.Mode = out.Attr.Mode&0o7777 | n.fileType()
	setBlocks(&out.Attr)
	if out.EntryTimeout() == 0 {
		out.SetEntryTimeout(cacheTimeout)
	}
	if out.AttrTimeout() == 0 {
		out.SetAttrTimeout(cacheTimeout)
	}
	return n
}

// setBlocks fills in a block size and count for attributes that have none
// (a virtual directory).
func setBlocks(a *fuse.Attr) {
	if a.Blksize > 0 {
		return
	}
	a.Blksize = 4096
	a.Blocks = (a.Size + 4095) / 4096 * 8
}

func (k *kernel) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	dir, st := k.dirNode(h.NodeId)
	if !st.Ok() {
		return st
	}
	if name == "." || name == ".." {
		return errStale // only sent to filesystems that export to NFS
	}
	child, errno := dir.Lookup(name, out)
	if errno == syscall.ENOENT && out.EntryTimeout() == 0 {
		out.SetEntryTimeout(cacheTimeout) // a negative entry
		return fuse.OK
	}
	if errno != 0 {
		return status(errno)
	}
	k.entryOut(dir, name, child, out)
	return fuse.OK
}

func (k *kernel) Forget(nodeid, nlookup uint64) { k.forget(nodeid, nlookup) }

func (k *kernel) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	n := k.node(in.NodeId)
	if n == nil {
		return errStale
	}
	var h *fileHandle
	if in.Flags()&fuse.FUSE_GETATTR_FH != 0 {
		h = k.handle(in.Fh())
	}
	if h == nil && n.dir == nil {
		// The kernel does not always pass the handle (libfuse issue 62):
		// an open file stays reachable through any of its handles after
		// its name is gone. (Directories have none.)
		h = k.anyOpen(n)
	}
	if errno := n.Getattr(h, out); errno != 0 {
		return status(errno)
	}
	out.Mode = out.Mode&0o7777 | n.fileType()
	setBlocks(&out.Attr)
	if out.Timeout() == 0 {
		out.SetTimeout(cacheTimeout)
	}
	return fuse.OK
}

func (k *kernel) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	n := k.node(in.NodeId)
	if n == nil {
		return errStale
	}
	var h *fileHandle
	if fh, ok := in.GetFh(); ok {
		h = k.handle(fh)
	}
	errno := n.Setattr(h, in, out)
	out.Mode = out.Mode&0o7777 | n.fileType()
	return status(errno)
}

// made answers a request that makes entry name in directory id with mk.
func (k *kernel) made(id uint64, name string, out *fuse.EntryOut, mk func(dir *node) (*node, syscall.Errno)) fuse.Status {
	dir, st := k.dirNode(id)
	if !st.Ok() {
		return st
	}
	child, errno := mk(dir)
	if errno != 0 {
		return status(errno)
	}
	k.entryOut(dir, name, child, out)
	return fuse.OK
}

func (k *kernel) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return k.made(in.NodeId, name, out, func(dir *node) (*node, syscall.Errno) {
		return dir.Mknod(&in.Caller, name, in.Mode, in.Rdev, out)
	})
}

func (k *kernel) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return k.made(in.NodeId, name, out, func(dir *node) (*node, syscall.Errno) {
		return dir.Mkdir(&in.Caller, name, in.Mode, out)
	})
}

func (k *kernel) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return k.made(h.NodeId, name, out, func(dir *node) (*node, syscall.Errno) {
		return dir.Symlink(&h.Caller, target, name, out)
	})
}

func (k *kernel) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	dir, st := k.dirNode(in.NodeId)
	if !st.Ok() {
		return st
	}
	target := k.node(in.Oldnodeid)
	if target == nil {
		return errStale
	}
	errno := dir.Link(target, name, out)
	if errno != 0 {
		return status(errno)
	}
	k.entryOut(dir, name, target, out)
	return fuse.OK
}

func (k *kernel) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return k.remove(h, name, false)
}

func (k *kernel) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return k.remove(h, name, true)
}

func (k *kernel) remove(h *fuse.InHeader, name string, isDir bool) fuse.Status {
	dir, st := k.dirNode(h.NodeId)
	if !st.Ok() {
		return st
	}
	if errno := dir.remove(name, isDir); errno != 0 {
		return status(errno)
	}
	k.dropName(dir, name)
	return fuse.OK
}

func (k *kernel) Rename(cancel <-chan struct{}, in *fuse.RenameIn, name, newName string) fuse.Status {
	dir, st := k.dirNode(in.NodeId)
	if !st.Ok() {
		return st
	}
	newDir, st := k.dirNode(in.Newdir)
	if !st.Ok() {
		return st
	}
	// Rename moves the names in the tree itself.
	return status(dir.Rename(name, newDir, newName, in.Flags))
}

func (k *kernel) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	n := k.node(h.NodeId)
	if n == nil {
		return nil, errStale
	}
	b, errno := n.Readlink()
	return b, status(errno)
}

func (k *kernel) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	n := k.node(h.NodeId)
	if n == nil {
		return 0, errStale
	}
	sz, errno := n.Getxattr(attr, dest)
	return sz, status(errno)
}

func (k *kernel) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	n := k.node(h.NodeId)
	if n == nil {
		return 0, errStale
	}
	sz, errno := n.Listxattr(dest)
	return sz, status(errno)
}

func (k *kernel) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	n := k.node(in.NodeId)
	if n == nil {
		return errStale
	}
	return status(n.Setxattr(attr, data, in.Flags))
}

func (k *kernel) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	n := k.node(h.NodeId)
	if n == nil {
		return errStale
	}
	return status(n.Removexattr(attr))
}

func (k *kernel) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	n := k.node(h.NodeId)
	if n == nil {
		return errStale
	}
	return status(n.Statfs(out))
}

func (k *kernel) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	dir, st := k.dirNode(in.NodeId)
	if !st.Ok() {
		return st
	}
	child, h, flags, errno := dir.Create(&in.Caller, name, in.Flags, in.Mode, &out.EntryOut)
	if errno != 0 {
		return status(errno)
	}
	if n := k.entryOut(dir, name, child, &out.EntryOut); n != child {
		h.moveTo(n) // the tree knew the new file already (a volume)
	}
	k.opened(h, flags, &out.OpenOut)
	return fuse.OK
}

func (k *kernel) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	dir, st := k.dirNode(in.NodeId)
	if !st.Ok() {
		return st
	}
	child, h, flags, errno := dir.Tmpfile(&in.Caller, in.Flags, in.Mode, &out.EntryOut)
	if errno != 0 {
		return status(errno)
	}
	h.n = k.entryOut(nil, "", child, &out.EntryOut)
	k.opened(h, flags, &out.OpenOut)
	return fuse.OK
}

func (k *kernel) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	n := k.node(in.NodeId)
	if n == nil {
		return errStale
	}
	h, flags, errno := n.Open(in.Flags)
	if errno != 0 {
		return status(errno)
	}
	k.opened(h, flags, out)
	return fuse.OK
}

// opened gives the kernel a handle for h, with a passthrough backing file
// when h may have one.
func (k *kernel) opened(h *fileHandle, flags uint32, out *fuse.OpenOut) {
	k.fmu.Lock()
	var fh uint64
	if m := len(k.freeFhs); m > 0 {
		fh = k.freeFhs[m-1]
		k.freeFhs = k.freeFhs[:m-1]
		k.files[fh] = h
	} else {
		fh = uint64(len(k.files))
		k.files = append(k.files, h)
	}
	k.opens[h.n] = append(k.opens[h.n], h)
	k.fmu.Unlock()
	out.Fh, out.OpenFlags = fh, flags
	if h.passthrough {
		k.addBacking(h, out)
	}
}

// addBacking registers the node's backing file with the kernel (once per
// node) and points the open at it.
func (k *kernel) addBacking(h *fileHandle, out *fuse.OpenOut) {
	k.bmu.Lock()
	defer k.bmu.Unlock()
	if k.noBacking {
		return
	}
	b := k.backing[h.n]
	if b == nil {
		id, errno := k.server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(h.getFd())})
		if errno != 0 {
			// Not root in the initial namespace, or a kernel without
			// passthrough: serve reads and writes ourselves.
			k.noBacking = true
			return
		}
		b = &backing{id: id}
		k.backing[h.n] = b
	}
	b.refs++
	h.backed = true
	out.BackingID = b.id
	out.OpenFlags = out.OpenFlags&^fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_PASSTHROUGH
}

// releaseBacking drops h's reference to its node's backing file.
func (k *kernel) releaseBacking(h *fileHandle) {
	k.bmu.Lock()
	defer k.bmu.Unlock()
	n := h.n
	b := k.backing[n]
	if !h.backed || b == nil {
		return
	}
	if b.refs--; b.refs > 0 {
		return
	}
	delete(k.backing, n)
	if errno := k.server.UnregisterBackingFd(b.id); errno != 0 {
		n.u.log.Printf("unregister backing file %d: %v", b.id, errno)
	}
}

// handle returns the open file with handle fh, or nil.
func (k *kernel) handle(fh uint64) *fileHandle {
	k.fmu.Lock()
	defer k.fmu.Unlock()
	if fh < uint64(len(k.files)) {
		return k.files[fh]
	}
	return nil
}

// anyOpen returns one of the node's open handles, or nil.
func (k *kernel) anyOpen(n *node) *fileHandle {
	k.fmu.Lock()
	defer k.fmu.Unlock()
	if hs := k.opens[n]; len(hs) > 0 {
		return hs[0]
	}
	return nil
}

func (k *kernel) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	k.fmu.Lock()
	var h *fileHandle
	if in.Fh < uint64(len(k.files)) {
		h = k.files[in.Fh]
	}
	if h == nil {
		k.fmu.Unlock()
		return
	}
	k.files[in.Fh] = nil
	k.freeFhs = append(k.freeFhs, in.Fh)
	hs := k.opens[h.n]
	for i, o := range hs {
		if o == h {
			hs = append(hs[:i:i], hs[i+1:]...)
			break
		}
	}
	if len(hs) == 0 {
		delete(k.opens, h.n)
	} else {
		k.opens[h.n] = hs
	}
	k.fmu.Unlock()
	h.Release()
	k.releaseBacking(h)
}

func (k *kernel) fileOf(fh uint64) (*fileHandle, fuse.Status) {
	if h := k.handle(fh); h != nil {
		return h, fuse.OK
	}
	return nil, fuse.EBADF
}

func (k *kernel) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h, st := k.fileOf(in.Fh)
	if !st.Ok() {
		return nil, st
	}
	r, errno := h.Read(buf, int64(in.Offset))
	return r, status(errno)
}

func (k *kernel) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	h, st := k.fileOf(in.Fh)
	if !st.Ok() {
		return 0, st
	}
	n, errno := h.Write([][]byte{data}, int64(in.Offset))
	return n, status(errno)
}

func (k *kernel) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	h, st := k.fileOf(in.Fh)
	if !st.Ok() {
		return 0, st
	}
	n, errno := h.Write(data, int64(in.Offset))
	return n, status(errno)
}

func (k *kernel) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	h, st := k.fileOf(in.Fh)
	if !st.Ok() {
		return st
	}
	return status(h.Flush())
}

func (k *kernel) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	h, st := k.fileOf(in.Fh)
	if !st.Ok() {
		return st
	}
	return status(h.Fsync(in.FsyncFlags))
}

func (k *kernel) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	h, st := k.fileOf(in.Fh)
	if !st.Ok() {
		return st
	}
	return status(h.Allocate(in.Offset, in.Length, in.Mode))
}

func (k *kernel) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	h, st := k.fileOf(in.Fh)
	if !st.Ok() {
		return st
	}
	off, errno := h.Lseek(in.Offset, in.Whence)
	out.Offset = off
	return status(errno)
}

func (k *kernel) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	src, st := k.fileOf(in.FhIn)
	if !st.Ok() {
		return 0, st
	}
	dst, st := k.fileOf(in.FhOut)
	if !st.Ok() {
		return 0, st
	}
	n, errno := copyFileRange(src, in.OffIn, dst, in.OffOut, in.Len, in.Flags)
	return n, status(errno)
}

func (k *kernel) Ioctl(cancel <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	return fuse.Status(syscall.ENOTTY)
}

func (k *kernel) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if k.server.KernelSettings().Flags64()&fuse.CAP_NO_OPENDIR_SUPPORT != 0 {
		return fuse.ENOSYS
	}
	n, st := k.dirNode(in.NodeId)
	if !st.Ok() {
		return st
	}
	// Changes made through the mount invalidate the kernel's copy of a
	// listing, and lower layers never change, so it may keep it; a volume
	// may change behind the mount's back.
	if !n.u.volume {
		out.OpenFlags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	}
	return fuse.OK
}

func (k *kernel) ReleaseDir(in *fuse.ReleaseIn) {}

func (k *kernel) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return k.readDir(cancel, in, out, false)
}

func (k *kernel) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return k.readDir(cancel, in, out, true)
}

func (k *kernel) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	n, st := k.dirNode(in.NodeId)
	if !st.Ok() {
		return st
	}
	return status(n.fsyncDir())
}
