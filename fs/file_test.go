package fs

import (
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestReleasedHandleOpensNothing: a GETATTR that borrowed a handle the
// kernel released meanwhile gets EBADF (and then uses the path), and does
// not follow a copy-up by opening the upper copy on the released handle:
// that descriptor would never be closed.
func TestReleasedHandleOpensNothing(t *testing.T) {
	u := &Union{}
	n := &node{u: u, inUpper: true} // copied up since the handle opened
	h := &fileHandle{n: n, fd: -1}  // as Release leaves it
	var out fuse.AttrOut
	if errno := h.getattr(&out); errno != syscall.EBADF {
		t.Errorf("getattr on a released handle: %v, want EBADF", errno)
	}
	if h.fd != -1 || len(h.stale) != 0 || h.upper {
		t.Errorf("released handle changed: fd %d, stale %v, upper %v", h.fd, h.stale, h.upper)
	}
}
