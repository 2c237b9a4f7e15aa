package fs

import (
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// openFlagsMask is what the server passes on to the real open: the kernel
// has already applied O_CREAT/O_EXCL, computes O_APPEND offsets itself, and
// the server's own buffers are not aligned for O_DIRECT.
const openFlagsMask = ^(unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | unix.O_APPEND | unix.O_DIRECT | fuse.FMODE_EXEC)

// openFlagsNoFlush spares close(2) a FLUSH round trip: writes reach the
// backing file as they happen (through the server, or passthrough) and
// report their errors then, so there is nothing left for close to report.
const openFlagsNoFlush = fuse.FOPEN_NOFLUSH

func isWriteOpen(flags uint32) bool {
	return flags&(unix.O_WRONLY|unix.O_RDWR|unix.O_TRUNC) != 0
}

func (n *node) Open(flags uint32) (*fileHandle, uint32, syscall.Errno) {
	if isWriteOpen(flags) {
		if errno := n.u.writable(); errno != 0 {
			return nil, 0, errno
		}
		// Data about to be truncated away need not be copied.
		if errno := n.copyUpOpt(flags&unix.O_TRUNC != 0); errno != 0 {
			return nil, 0, errno
		}
	}
	w := n.where()
	var fd int
	err := n.atWhere(w, func(dirfd int, name string) (err error) {
		fd, err = openBeneath(dirfd, name, int(flags)&openFlagsMask, 0)
		return err
	})
	if err == nil && w.upper && !n.isOpenedFile(fd) {
		// The name was renamed over between the kernel's lookup and this
		// open: what it names now is another file.
		unix.Close(fd)
		err = unix.ENOENT
	}
	if err != nil {
		return nil, 0, toErrno(err)
	}
	fuseFlags := uint32(openFlagsNoFlush)
	if !w.upper {
		// The lower file never changes: the kernel may keep its pages
		// across opens.
		fuseFlags |= fuse.FOPEN_KEEP_CACHE
	}
	return n.newHandle(fd, w.upper), fuseFlags, 0
}

// newHandle wraps an open descriptor, choosing whether the kernel reads
// and writes it directly (FUSE passthrough). Passthrough is used only where
// the file behind the node cannot change: on a mount without an upper, and
// for upper files (a copy-up never replaces them). A lower file of a
// writable mount is served by the server, so that after a copy-up its
// handles follow the copy; and since the kernel refuses to mix passthrough
// and cached opens of one inode, a node with such a handle open gets no
// passthrough until it is closed.
func (n *node) newHandle(fd int, upper bool) *fileHandle {
	h := &fileHandle{n: n, fd: fd, upper: upper}
	h.passthrough = n.u.passthrough && (upper || n.u.upper == nil) && n.cachedOpens.Load() == 0
	if !h.passthrough {
		n.cachedOpens.Add(1)
	}
	return h
}

// moveTo makes a new handle count against node m instead of the one it was
// opened for.
func (h *fileHandle) moveTo(m *node) {
	if !h.passthrough {
		h.n.cachedOpens.Add(-1)
		m.cachedOpens.Add(1)
	}
	h.n = m
}

// isOpenedFile reports whether descriptor fd is the node's own upper file.
func (n *node) isOpenedFile(fd int) bool {
	var st unix.Stat_t
	gen, err := statAt(fd, "", &st)
	return err == nil && n.sameFile(&st, gen)
}

// fileHandle is an open file. A handle opened on a lower file before the
// file was copied up switches to the upper copy on its next read, so that
// it sees the writes made since; the lower descriptor stays open until
// release because a spliced read may still be using it.
type fileHandle struct {
	n *node

	mu          sync.Mutex
	fd          int
	upper       bool
	passthrough bool
	backed      bool // the kernel holds a backing file for it (guarded by kernel.bmu)
	stale       []int
}

// readFd returns the descriptor to read from, following a copy-up.
func (h *fileHandle) readFd() (int, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fd < 0 {
		return -1, syscall.EBADF // released (see getattr)
	}
	if !h.upper && h.n.where().upper {
		var fd int
		err := h.n.selfAt(func(dirfd int, name string) (err error) {
			fd, err = openBeneath(dirfd, name, unix.O_RDONLY, 0)
			return err
		})
		if err != nil {
			// The copy is gone again (unlinked): keep serving the
			// descriptor this handle has, as a local file would.
			return h.fd, 0
		}
		h.stale = append(h.stale, h.fd)
		h.fd, h.upper = fd, true
	}
	return h.fd, 0
}

func (h *fileHandle) getFd() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fd
}

func (h *fileHandle) Read(dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	fd, errno := h.readFd()
	if errno != 0 {
		return nil, errno
	}
	return fuse.ReadResultFd(uintptr(fd), off, len(dest)), 0
}

// Write writes data, which the request may bring in several pieces, at
// off.
func (h *fileHandle) Write(data [][]byte, off int64) (uint32, syscall.Errno) {
	var k int
	var err error
	if len(data) == 1 {
		k, err = unix.Pwrite(h.getFd(), data[0], off)
	} else {
		k, err = unix.Pwritev(h.getFd(), data, off)
	}
	if err != nil {
		return 0, toErrno(err)
	}
	return uint32(k), 0
}

// Flush reports errors of close(2) on the real file (NFS-style backings
// report write errors there) without closing the handle itself.
func (h *fileHandle) Flush() syscall.Errno {
	fd, err := unix.Dup(h.getFd())
	if err != nil {
		return toErrno(err)
	}
	return toErrno(unix.Close(fd))
}

// fsyncDataOnly is FUSE_FSYNC_FDATASYNC in the fsync request's flags.
const fsyncDataOnly = 1

func (h *fileHandle) Fsync(flags uint32) syscall.Errno {
	fd := h.getFd()
	if flags&fsyncDataOnly != 0 {
		return toErrno(unix.Fdatasync(fd))
	}
	return toErrno(unix.Fsync(fd))
}

func (h *fileHandle) Release() syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.passthrough && h.fd >= 0 {
		h.n.cachedOpens.Add(-1)
	}
	for _, fd := range h.stale {
		unix.Close(fd)
	}
	err := unix.Close(h.fd)
	h.fd, h.stale = -1, nil
	return toErrno(err)
}

func (h *fileHandle) Lseek(off uint64, whence uint32) (uint64, syscall.Errno) {
	fd, errno := h.readFd()
	if errno != 0 {
		return 0, errno
	}
	k, err := unix.Seek(fd, int64(off), int(whence))
	if err != nil {
		return 0, toErrno(err)
	}
	return uint64(k), 0
}

func (h *fileHandle) Allocate(off, size uint64, mode uint32) syscall.Errno {
	return toErrno(unix.Fallocate(h.getFd(), mode, int64(off), int64(size)))
}

// getattr answers fstat through the open descriptor, which works even after
// the file lost its last name. A GETATTR may borrow the handle of another
// open of the node (see kernel.GetAttr) while that one is released: the
// descriptor is used under mu, so that it is never one that RELEASE closed
// and another open got again; a released handle answers EBADF.
func (h *fileHandle) getattr(out *fuse.AttrOut) syscall.Errno {
	if _, errno := h.readFd(); errno != 0 { // follows a copy-up
		return errno
	}
	var st unix.Stat_t
	h.mu.Lock()
	var err error = syscall.EBADF
	if h.fd >= 0 {
		err = unix.Fstat(h.fd, &st)
	}
	h.mu.Unlock()
	if err != nil {
		return toErrno(err)
	}
	h.n.fillAttr(&st, &out.Attr)
	return 0
}
