package fs

import (
	"fmt"
	"hash/maphash"
	"log"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/unionfs/unionfs/layerdb"
)

// Lower layers cannot change under a mount and every change to the upper
// passes through this server, so the kernel may keep entries and attributes
// for a long time; the server tells it when its own view changes.
const cacheTimeout = time.Hour

// Union is one mounted union: the layer stack and the upper's state.
type Union struct {
	cfg Config
	// tmps holds the descriptors of O_TMPFILE files (see Tmpfile), by
	// node, until the kernel forgets the node: rare enough not to cost
	// every node a field.
	tmps   sync.Map
	layers []*layer // the whole stack, top first; layers[0] is the upper if there is one
	upper  *layer   // nil for a read-only mount
	inos   *inoMap
	log    *log.Logger
	euid   int
	egid   int
	// passthrough lets the kernel read and write files directly (FUSE
	// passthrough, Linux 6.9+, needs CAP_SYS_ADMIN; turned off for the
	// mount when the kernel refuses a backing file, see kernel.addBacking).
	passthrough bool

	plus       plusPolicy   // whether READDIRPLUS stats files (see dirHandle.Lookup)
	cookieSeed maphash.Seed // keys the listing offsets (see dirCookie)

	root    *node         // the mounted root directory
	k       *kernel       // serves the mount's requests (shared with its volumes)
	volume  bool          // this union serves a volume: one layer, no records
	volumes []volumeMount // volumes attached inside this union
	db      *layerdb.DB   // the upper's state database
	workFd  int           // O_PATH descriptor of the copy-up work dir
	workDir string        // its path

	// nsMu orders the operations that use union paths as record keys
	// (lookup, listing, remove, rename: shared) against directory renames,
	// which change the paths beneath them (exclusive). Taken only at the
	// entry points, never while another of these locks is held.
	nsMu sync.RWMutex

	mu      sync.RWMutex
	records recordTree        // the upper's records
	journal *journal          // writes record changes to db
	origins map[uint64]uint64 // upper inode -> union inode of its copy-up origin
}

// Server is a running mount.
type Server struct {
	*fuse.Server
	u *Union
}

// Mount validates cfg, opens the layers and mounts the union at
// cfg.Mountpoint. It returns once the kernel answers requests for the mount.
func Mount(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkFUSE(); err != nil {
		return nil, err
	}
	// The kernel has applied the caller's umask to every mode it sends;
	// the server's own must not be applied again.
	syscall.Umask(0)
	u, err := newUnion(cfg)
	if err != nil {
		return nil, err
	}
	root, err := u.rootNode()
	if err != nil {
		u.close()
		return nil, err
	}
	u.root = root
	u.k = newKernel(root)
	for _, vm := range u.volumes {
		vm.u.k = u.k
	}
	if err := u.prepareVolumeParents(); err != nil {
		u.close()
		return nil, err
	}
	fsName := cfg.FsName
	if fsName == "" {
		fsName = "unionfs"
	}
	opts := fuse.MountOptions{
		FsName:      fsName,
		Name:        "unionfs",
		AllowOther:  cfg.AllowOther,
		Debug:       cfg.Debug,
		Logger:      u.log,
		DirectMount: os.Geteuid() == 0,
		// The kernel checks permissions against the modes we report,
		// as on a local filesystem; the server itself may be root.
		Options:           []string{"default_permissions"},
		MaxWrite:          1 << 20,
		ExtraCapabilities: fuse.CAP_READDIRPLUS_AUTO,
	}
	opts.Options = append(opts.Options, cfg.KernelFlags...)
	// The kernel refuses writes itself on a read-only mount, unless a
	// writable volume is attached: then the server refuses them.
	if (u.upper == nil || cfg.ReadOnly) && !hasWritableVolume(cfg.Volumes) {
		opts.Options = append(opts.Options, "ro")
	}
	k := u.k
	k.logf = u.log.Printf
	if !cfg.NoRing && RingAvailable() {
		opts.ExtraCapabilities |= fuse.CAP_OVER_IO_URING
		ringOpts := opts
		k.ringOpts = &ringOpts
	}
	server, err := newServer(k, cfg.Mountpoint, &opts)
	if err != nil {
		u.close()
		return nil, fmt.Errorf("mount %s: %w", cfg.Mountpoint, err)
	}
	served := make(chan struct{})
	go func() {
		server.Serve()
		close(served)
	}()
	// The mount is live once INIT is answered. Not server.WaitMount: it
	// then opens a file of the new mount from this process (go-fuse's POLL
	// probe, for servers that open their own files, which this one never
	// does), and a server killed while it waits on its own request can
	// never exit.
	select {
	case <-k.inited:
	case <-served:
		u.close()
		return nil, fmt.Errorf("mount %s: the kernel closed the connection before INIT", cfg.Mountpoint)
	}
	if k.ringErr != nil {
		// The kernel holds the mount's requests until the ring is
		// complete, so a process that touched the mount meanwhile may keep
		// it busy: detach it if it will not unmount, and do not wait
		// for long. The process exits after this, and closing /dev/fuse
		// ends the connection.
		if err := server.Unmount(); err != nil {
			UnmountLazy(cfg.Mountpoint)
		}
		select {
		case <-served:
			if k.ring != nil {
				k.ring.Wait()
			}
			u.close()
		case <-time.After(5 * time.Second):
		}
		return nil, fmt.Errorf("mount %s: %w (-o noio_uring mounts without io_uring)", cfg.Mountpoint, k.ringErr)
	}
	return &Server{Server: server, u: u}, nil
}

// Wait returns once the mount is gone and every request is answered.
func (s *Server) Wait() {
	s.Server.Wait()
	if r := s.u.k.ring; r != nil {
		r.Wait()
		unix.Close(s.u.k.ringDev)
		s.u.k.root.forgotten()
	}
}

// mountMu keeps mounts of this process one at a time while a new mount
// finds its /dev/fuse descriptor.
var mountMu sync.Mutex

// newServer mounts through go-fuse. With a ring, the mount's INIT (which
// go-fuse answers inside NewServer, calling kernel.Init) finds the mount's
// /dev/fuse descriptor as the one that was not open before (go-fuse does
// not export it); mounts of this process wait for each other meanwhile.
func newServer(k *kernel, mnt string, opts *fuse.MountOptions) (*fuse.Server, error) {
	if k.ringOpts == nil {
		return fuse.NewServer(k, mnt, opts)
	}
	mountMu.Lock()
	defer mountMu.Unlock()
	k.devsBefore = devFuseFds()
	return fuse.NewServer(k, mnt, opts)
}

// Transport is how the kernel sends the mount's requests: "io_uring" or
// "/dev/fuse".
func (s *Server) Transport() string {
	if s.u.k.ring != nil {
		return "io_uring"
	}
	return "/dev/fuse"
}

// Protocol is the FUSE protocol version the kernel offered, as "7.41".
func (s *Server) Protocol() string {
	in := s.KernelSettings()
	return fmt.Sprintf("%d.%d", in.Major, in.Minor)
}

// Workdir is the copy-up work directory the mount uses ("" when read-only).
func (s *Server) Workdir() string { return s.u.workDir }

// Close releases the layers and the state database; call it after the
// server has stopped serving (Wait returned).
func (s *Server) Close() error { return s.u.close() }

func newUnion(cfg Config) (*Union, error) {
	u := &Union{cfg: cfg, log: cfg.Logger, euid: os.Geteuid(), egid: os.Getegid(), cookieSeed: maphash.MakeSeed()}
	u.passthrough = u.euid == 0 && !cfg.NoPassthrough
	if u.log == nil {
		u.log = log.New(os.Stderr, "unionfs: ", log.LstdFlags)
	}
	if cfg.Upper != "" {
		l, err := openLayer(cfg.Upper, 0)
		if err != nil {
			return nil, err
		}
		u.upper = l
		u.layers = append(u.layers, l)
	}
	for _, dir := range cfg.Lowers {
		l, err := openLayer(dir, len(u.layers))
		if err != nil {
			u.close()
			return nil, err
		}
		u.layers = append(u.layers, l)
		if err := l.loadRecords(); err != nil {
			u.close()
			return nil, err
		}
	}
	if err := u.openVolumes(); err != nil {
		u.close()
		return nil, err
	}
	all := u.layers
	for _, vm := range u.volumes {
		all = append(all, vm.u.layers...)
	}
	u.inos = newInoMap(all)
	if err := u.volumeRoots(); err != nil {
		u.close()
		return nil, err
	}
	if u.upper != nil {
		if err := u.openState(); err != nil {
			u.close()
			return nil, err
		}
	}
	return u, nil
}

func (u *Union) close() error {
	var err error
	if u.journal != nil {
		err = u.journal.close()
		u.journal = nil
	}
	if u.db != nil {
		if cerr := u.db.Close(); err == nil {
			err = cerr
		}
		u.db = nil
	}
	for _, l := range u.layers {
		unix.Close(l.fd)
	}
	for _, vm := range u.volumes {
		vm.u.close()
	}
	u.volumes = nil
	if u.workFd > 0 {
		unix.Close(u.workFd)
		u.workFd = 0
	}
	u.layers = nil
	return err
}

// lowers returns the read-only part of the stack.
func (u *Union) lowers() []*layer {
	if u.upper != nil {
		return u.layers[1:]
	}
	return u.layers
}

// upperRecord returns the upper's record for path p.
func (u *Union) upperRecord(p string) (layerdb.Record, bool) {
	u.mu.RLock()
	r, ok := u.records.get(p)
	u.mu.RUnlock()
	return r, ok
}

// upperIno is the union inode number of an upper inode: its copy-up origin's
// if it has one, so that st_ino does not change when a file is copied up.
func (u *Union) upperIno(st *unix.Stat_t) uint64 {
	u.mu.RLock()
	o, ok := u.origins[st.Ino]
	u.mu.RUnlock()
	if ok {
		return o
	}
	return u.inos.ino(st.Dev, st.Ino)
}

// checkFUSE fails early, with the fix, when the kernel side is missing.
func checkFUSE() error {
	if os.Geteuid() == 0 {
		fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("cannot open /dev/fuse: %w (load the fuse kernel module; in a container, pass --device /dev/fuse)", err)
		}
		unix.Close(fd)
		return nil
	}
	// Without root, the setuid fusermount3 opens /dev/fuse.
	var st unix.Stat_t
	if err := unix.Stat("/dev/fuse", &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return fmt.Errorf("/dev/fuse is missing (load the fuse kernel module; in a container, pass --device /dev/fuse)")
	}
	// fusermount3 opens /dev/fuse with the user's own rights.
	if err := unix.Access("/dev/fuse", unix.R_OK|unix.W_OK); err != nil {
		return fmt.Errorf("/dev/fuse (mode %04o) is not open to this user: mount as root, or have it made 0666 as Debian's default is", st.Mode&0o7777)
	}
	{
		if _, err := exec.LookPath("fusermount3"); err != nil {
			if _, err2 := exec.LookPath("fusermount"); err2 != nil {
				return fmt.Errorf("fusermount3 not found: install the fuse3 package (apt-get install fuse3) to mount without root")
			}
		}
	}
	return nil
}
