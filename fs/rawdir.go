package fs

import (
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// handlelessDirs serves directories without OPENDIR and RELEASEDIR round
// trips. It answers the first OPENDIR with ENOSYS, after which the kernel
// (5.1 and later) opens directories on its own, with FOPEN_KEEP_CACHE and
// FOPEN_CACHE_DIR, and sends READDIR, READDIRPLUS and FSYNCDIR with file
// handle 0. Each of those then runs on a handle of go-fuse's that lives for
// that one request. On a warm tree this takes a synchronous round trip off
// every opendir(3): `find` of a cached tree no longer reaches the server.
//
// Without a handle there is no per-open snapshot to keep seekdir offsets
// valid, so a listing's offsets are cookies derived from the entry names
// (see dirHandle): they stay valid while the directory changes.
//
// A kernel before 5.1 would fail opendir(3) on that ENOSYS; it does not
// offer FUSE_NO_OPENDIR_SUPPORT at INIT, and then directories are opened
// as usual, each handle keeping its listing for as long as it is open.
type handlelessDirs struct {
	fuse.RawFileSystem
	server *fuse.Server
	inited chan struct{} // closed once the kernel's INIT is answered
}

// Init runs when INIT has been answered, before any other request is read.
func (d *handlelessDirs) Init(s *fuse.Server) {
	d.server = s
	d.RawFileSystem.Init(s)
	close(d.inited)
}

func (d *handlelessDirs) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if d.server.KernelSettings().Flags64()&fuse.CAP_NO_OPENDIR_SUPPORT == 0 {
		return d.RawFileSystem.OpenDir(cancel, in, out)
	}
	return fuse.ENOSYS
}

func (d *handlelessDirs) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return d.onHandle(cancel, &in.InHeader, &in.Fh, func() fuse.Status {
		return d.RawFileSystem.ReadDir(cancel, in, out)
	})
}

func (d *handlelessDirs) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return d.onHandle(cancel, &in.InHeader, &in.Fh, func() fuse.Status {
		return d.RawFileSystem.ReadDirPlus(cancel, in, out)
	})
}

func (d *handlelessDirs) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return d.onHandle(cancel, &in.InHeader, &in.Fh, func() fuse.Status {
		return d.RawFileSystem.FsyncDir(cancel, in)
	})
}

// onHandle runs fn with *fh set to a directory handle opened for the
// request, unless the kernel sent one.
func (d *handlelessDirs) onHandle(cancel <-chan struct{}, h *fuse.InHeader, fh *uint64, fn func() fuse.Status) fuse.Status {
	if *fh != 0 {
		return fn()
	}
	var out fuse.OpenOut
	if st := d.RawFileSystem.OpenDir(cancel, &fuse.OpenIn{InHeader: *h, Flags: unix.O_RDONLY}, &out); !st.Ok() {
		return st
	}
	*fh = out.Fh
	defer func() {
		d.RawFileSystem.ReleaseDir(&fuse.ReleaseIn{InHeader: *h, Fh: out.Fh})
		*fh = 0
	}()
	return fn()
}
