package fs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// FUSE over io_uring (Linux 6.14 and later, with the fuse module's
// enable_uring parameter set). After INIT the server registers ring
// entries, each a header buffer and a payload buffer, in one queue per
// possible CPU; the kernel then hands every request to an entry of the
// queue of the CPU its caller runs on and takes the reply together with
// the fetch of the next request (one io_uring_enter for both, where
// /dev/fuse needs a read and a write). Each online CPU the server may run
// on gets a thread of its own, pinned to it, that owns one io_uring with
// that CPU's entries: a request is answered on the CPU that asked, and on
// this machine class a round trip takes 10-12 µs instead of 25-45 µs. The
// pinning is what pays: unpinned threads were slower than /dev/fuse.
//
// A queue thread answers a request itself when the request cannot wait on
// the disk for long (lookups, attributes, listings, creates, removals, and
// changes to files already in the upper); the others (data, fsync, locks,
// anything that may copy a lower file up) go to a goroutine, which hands
// the entry back through an eventfd the ring is reading, so that a long
// copy-up does not hold up the other requests of its CPU. FORGET and
// INTERRUPT still come through /dev/fuse, where go-fuse's reader answers
// them: an INTERRUPT for a ring request finds nothing to interrupt there,
// and the request completes.
//
// The kernel holds every request of a connection that negotiated io_uring
// until the ring is complete, so the capability is asked for only when an
// io_uring with 128-byte entries can be set up (it can be disabled by
// sysctl or seccomp), and a registration that fails fails the mount.

// Kernel ABI (include/uapi/linux/fuse.h, io_uring.h).
const (
	ringHeaderSize  = 288 // struct fuse_uring_req_header
	ringOpInOffset  = 128 // header: in_out[128], op_in[128], ring_ent_in_out
	ringEntInOutOff = 256
	ringOpInSize    = 128

	fuseURingRegister       = 1
	fuseURingCommitAndFetch = 2

	ioringOpRead     = 22
	ioringOpURingCmd = 46

	ioringSetupSQE128       = 1 << 10
	ioringSetupCoopTaskrun  = 1 << 8
	ioringSetupSingleIssuer = 1 << 12
	ioringSetupDeferTaskrun = 1 << 13
	ioringEnterGetevents    = 1

	ioringOffSQRing = 0
	ioringOffCQRing = 0x8000000
	ioringOffSQEs   = 0x10000000

	sqeSize = 128
	cqeSize = 16

	fuseMinReadBuffer = 8192
	entriesPerQueue   = 8
	evfdUserData      = ^uint64(0)
)

var le = binary.LittleEndian

// ringParams is struct io_uring_params.
type ringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  [10]uint32 // head tail ring_mask ring_entries flags dropped array resv1 user_addr
	cqOff                                                                  [10]uint32 // head tail ring_mask ring_entries overflow cqes flags resv1 user_addr
}

// RingAvailable reports whether the kernel lets FUSE servers use io_uring
// (the fuse module's enable_uring parameter) and this process can set one
// up with the entry size FUSE needs. A mount then uses it unless
// Config.NoRing is set; the kernel must also be 6.14 or later, which INIT
// tells.
func RingAvailable() bool {
	b, err := os.ReadFile("/sys/module/fuse/parameters/enable_uring")
	if err != nil || strings.TrimSpace(string(b)) != "Y" {
		return false
	}
	// unix.CPUSet, for the threads' affinity, holds 1024 CPUs.
	if n, err := possibleCPUs(); err != nil || n > 1024 {
		return false
	}
	r, err := newRing(1, 0)
	if err != nil {
		return false
	}
	r.close()
	return true
}

// ring is one io_uring, used by one thread.
type ring struct {
	fd           int
	sq, cq, sqes []byte
	sqHead       *uint32
	sqTail       *uint32
	sqMask       uint32
	sqArray      unsafe.Pointer
	cqHead       *uint32
	cqTail       *uint32
	cqMask       uint32
	cqes         unsafe.Pointer
}

// newRing sets up an io_uring with 128-byte submission entries, for the
// thread that calls it alone when flags ask for that.
func newRing(entries uint32, flags uint32) (*ring, error) {
	p := ringParams{flags: ioringSetupSQE128 | flags}
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &ring{fd: int(fd)}
	var err error
	mmap := func(off int64, size uint32) []byte {
		if err != nil {
			return nil
		}
		var b []byte
		b, err = unix.Mmap(r.fd, off, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		return b
	}
	r.sq = mmap(ioringOffSQRing, p.sqOff[6]+p.sqEntries*4)
	r.cq = mmap(ioringOffCQRing, p.cqOff[5]+p.cqEntries*cqeSize)
	r.sqes = mmap(ioringOffSQEs, p.sqEntries*sqeSize)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("io_uring mmap: %w", err)
	}
	at := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	r.sqHead, r.sqTail, r.sqMask = at(r.sq, p.sqOff[0]), at(r.sq, p.sqOff[1]), *at(r.sq, p.sqOff[2])
	r.sqArray = unsafe.Pointer(&r.sq[p.sqOff[6]])
	r.cqHead, r.cqTail, r.cqMask = at(r.cq, p.cqOff[0]), at(r.cq, p.cqOff[1]), *at(r.cq, p.cqOff[2])
	r.cqes = unsafe.Pointer(&r.cq[p.cqOff[5]])
	return r, nil
}

func (r *ring) close() {
	for _, b := range [][]byte{r.sq, r.cq, r.sqes} {
		if b != nil {
			unix.Munmap(b)
		}
	}
	unix.Close(r.fd)
}

// sqe returns the next submission entry, zeroed. The ring is sized so that
// it never runs out: every entry has at most one command in flight.
func (r *ring) sqe() []byte {
	tail := *r.sqTail
	i := tail & r.sqMask
	s := r.sqes[i*sqeSize : (i+1)*sqeSize]
	clear(s)
	*(*uint32)(unsafe.Add(r.sqArray, i*4)) = i
	atomic.StoreUint32(r.sqTail, tail+1)
	return s
}

// enter submits what is queued and waits for at least wait completions.
func (r *ring) enter(wait uint32) error {
	for {
		n := atomic.LoadUint32(r.sqTail) - atomic.LoadUint32(r.sqHead)
		var flags uintptr
		if wait > 0 {
			flags = ioringEnterGetevents
		}
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), uintptr(wait), flags, 0, 0)
		switch errno {
		case 0:
			return nil
		case unix.EINTR, unix.EAGAIN, unix.EBUSY:
			continue
		}
		return fmt.Errorf("io_uring_enter: %w", errno)
	}
}

// cqe pops a completion, if there is one.
func (r *ring) cqe() (userData uint64, res int32, ok bool) {
	head := atomic.LoadUint32(r.cqHead)
	if head == atomic.LoadUint32(r.cqTail) {
		return 0, 0, false
	}
	c := unsafe.Add(r.cqes, (head&r.cqMask)*cqeSize)
	userData, res = *(*uint64)(c), *(*int32)(unsafe.Add(c, 8))
	atomic.StoreUint32(r.cqHead, head+1)
	return userData, res, true
}

// ringServer serves a mount's requests over io_uring.
type ringServer struct {
	dev     int // a /dev/fuse descriptor of the connection
	ps      *fuse.ProtocolServer
	k       *kernel
	payload int // bytes of an entry's payload buffer
	threads []*ringThread
	wg      sync.WaitGroup
	closing atomic.Bool
	logf    func(format string, args ...any)
}

// ringEnt is a registered entry: the kernel's buffers and their iovec.
type ringEnt struct {
	qid     uint16
	hdr     []byte
	payload []byte
	iov     [2]unix.Iovec
	unique  uint64 // the request it holds
	dead    bool
}

// ringThread owns one io_uring with the entries of its queues.
type ringThread struct {
	s    *ringServer
	cpu  int // pinned to this CPU, or -1
	qids []int
	r    *ring
	ents []*ringEnt
	mem  []byte // the entries' buffers
	live int

	evfd  int
	evbuf [8]byte
	mu    sync.Mutex
	done  []int // entries whose offloaded requests have their replies
	fired bool  // evfd written since done was last taken

	inflight sync.WaitGroup // this thread's offloaded requests

	backlog []completion // completions seen while registering
}

type completion struct {
	userData uint64
	res      int32
}

// startRing registers the ring entries of every queue of the connection
// behind dev and starts their threads. It returns once every entry is
// registered, or the first error.
func startRing(dev int, k *kernel, opts *fuse.MountOptions, in *fuse.InitIn, logf func(string, ...any)) (*ringServer, error) {
	ps := fuse.NewProtocolServer(k, opts)
	// The protocol server parses requests by what INIT negotiated: hand it
	// the kernel's INIT, which it answers as the server did.
	if err := initProtocolServer(ps, in); err != nil {
		return nil, err
	}
	page := os.Getpagesize()
	maxPages := (opts.MaxWrite-1)/page + 1
	s := &ringServer{
		dev:     dev,
		ps:      ps,
		k:       k,
		payload: max(fuseMinReadBuffer, maxPages*page), // maxPages*page >= MaxWrite
		logf:    logf,
	}
	possible, err := possibleCPUs()
	if err != nil {
		return nil, err
	}
	var mine unix.CPUSet
	if err := unix.SchedGetaffinity(0, &mine); err != nil {
		return nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	// One thread per CPU this process may run on; the queues of the other
	// possible CPUs (never asked through while they are offline or out of
	// reach) go round-robin to those threads.
	for cpu := 0; cpu < possible; cpu++ {
		if mine.IsSet(cpu) {
			s.threads = append(s.threads, &ringThread{s: s, cpu: cpu, qids: []int{cpu}, evfd: -1})
		}
	}
	if len(s.threads) == 0 {
		return nil, errors.New("io_uring: no CPU to run on")
	}
	i := 0
	for cpu := 0; cpu < possible; cpu++ {
		if !mine.IsSet(cpu) {
			t := s.threads[i%len(s.threads)]
			t.qids = append(t.qids, cpu)
			i++
		}
	}
	// A queue thread spends its time blocked in io_uring_enter, holding
	// its P in the syscall state: without a P to spare, a goroutine it
	// starts for an offloaded request would wait for sysmon to take that
	// P back (20 µs to 10 ms; a removal took 170 µs more than inline).
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + len(s.threads))
	errs := make(chan error, len(s.threads))
	for _, t := range s.threads {
		s.wg.Add(1)
		go t.run(errs)
	}
	// On an error the threads that did register stay until the mount is
	// gone: Wait waits for them.
	var first error
	for range s.threads {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return s, first
}

// devFuseFds returns the process's /dev/fuse descriptors.
func devFuseFds() map[int]bool {
	fds := map[int]bool{}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fds
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR &&
			unix.Major(st.Rdev) == 10 && unix.Minor(st.Rdev) == 229 {
			fds[fd] = true
		}
	}
	return fds
}

// possibleCPUs is the number of queues the kernel expects:
// num_possible_cpus(), the count of CPUs in
// /sys/devices/system/cpu/possible ("0-3", "0-3,8-11").
func possibleCPUs() (int, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/possible")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, part := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, found := strings.Cut(part, "-")
		if !found {
			hi = lo
		}
		l, err1 := strconv.Atoi(lo)
		h, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || h < l {
			return 0, fmt.Errorf("cpu/possible: %q", b)
		}
		n += h - l + 1
	}
	return n, nil
}

func initProtocolServer(ps *fuse.ProtocolServer, kernelInit *fuse.InitIn) error {
	in := *kernelInit // go-fuse's InitIn starts with the request header
	in.InHeader = fuse.InHeader{Opcode: 26 /* INIT */, Unique: 1, Length: uint32(unsafe.Sizeof(in))}
	req := unsafe.Slice((*byte)(unsafe.Pointer(&in)), unsafe.Sizeof(in))
	out := make([]byte, 512)
	if _, st := ps.HandleRequest([][]byte{req}, [][]byte{out}); !st.Ok() {
		return fmt.Errorf("io_uring: INIT: %v", st)
	}
	if errno := int32(le.Uint32(out[4:])); errno != 0 {
		return fmt.Errorf("io_uring: INIT: %v", syscall.Errno(-errno))
	}
	return nil
}

// run is a queue thread: it registers its entries, reports on errs, then
// answers requests until the connection ends.
func (t *ringThread) run(errs chan<- error) {
	defer t.s.wg.Done()
	runtime.LockOSThread() // the ring belongs to this thread; never unlocked
	err := t.setup()
	errs <- err
	if err != nil {
		t.release()
		return
	}
	if err := t.loop(); err != nil && !t.s.closing.Load() {
		t.s.logf("io_uring queue %v: %v", t.qids, err)
	}
	t.inflight.Wait()
	t.release()
}

func (t *ringThread) setup() error {
	if t.cpu >= 0 {
		var set unix.CPUSet
		set.Set(t.cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			t.cpu = -1 // serve unpinned
		}
	}
	// The thread's own CPU gets entriesPerQueue entries; a queue of a CPU
	// the process does not run on gets one, enough for the ring to be
	// complete (a machine may list hundreds of possible CPUs).
	perQueue := func(qid int) int {
		if qid == t.qids[0] {
			return entriesPerQueue
		}
		return 1
	}
	n := 0
	for _, qid := range t.qids {
		n += perQueue(qid)
	}
	size := uint32(1)
	for size < uint32(2*n+2) {
		size <<= 1
	}
	var err error
	t.r, err = newRing(size, ioringSetupCoopTaskrun|ioringSetupSingleIssuer|ioringSetupDeferTaskrun)
	if err != nil {
		if t.r, err = newRing(size, 0); err != nil {
			return err
		}
	}
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	t.evfd = fd
	t.armEventfd()
	if t.ents, err = t.newEnts(n); err != nil {
		return err
	}
	i := 0
	for _, qid := range t.qids {
		for range perQueue(qid) {
			e := t.ents[i]
			e.qid = uint16(qid)
			s := t.r.sqe()
			t.cmd(s, fuseURingRegister, i, 0, e.qid)
			le.PutUint64(s[16:], uint64(uintptr(unsafe.Pointer(&e.iov[0]))))
			le.PutUint32(s[24:], 2)
			i++
		}
	}
	t.live = len(t.ents)
	if err := t.r.enter(0); err != nil {
		return err
	}
	// A registration the kernel refuses completes at once; an accepted one
	// completes only when a request arrives. Requests may arrive already
	// (the last queue to register makes the ring ready): keep them.
	for {
		ud, res, ok := t.r.cqe()
		if !ok {
			return nil
		}
		if res < 0 && ud != evfdUserData {
			return fmt.Errorf("io_uring: registering queue %d: %w", t.ents[ud].qid, syscall.Errno(-res))
		}
		t.backlog = append(t.backlog, completion{ud, res})
	}
}

// newEnts maps the buffers of n entries at once: for each, a page for
// its header and the payload buffer after it. Pages are touched only as
// requests use them.
func (t *ringThread) newEnts(n int) ([]*ringEnt, error) {
	page := os.Getpagesize()
	size := page + t.s.payload
	mem, err := unix.Mmap(-1, 0, n*size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("io_uring buffers: %w", err)
	}
	t.mem = mem
	ents := make([]*ringEnt, n)
	for i := range ents {
		b := mem[i*size : (i+1)*size]
		e := &ringEnt{hdr: b[:ringHeaderSize], payload: b[page:]}
		e.iov[0] = unix.Iovec{Base: &e.hdr[0]}
		e.iov[0].SetLen(len(e.hdr))
		e.iov[1] = unix.Iovec{Base: &e.payload[0]}
		e.iov[1].SetLen(len(e.payload))
		ents[i] = e
	}
	return ents, nil
}

// cmd fills a FUSE uring command for entry i.
func (t *ringThread) cmd(s []byte, op uint32, i int, commitID uint64, qid uint16) {
	s[0] = ioringOpURingCmd
	le.PutUint32(s[4:], uint32(t.s.dev))
	le.PutUint32(s[8:], op)
	le.PutUint64(s[32:], uint64(i))
	// struct fuse_uring_cmd_req, in the command area at byte 48.
	le.PutUint64(s[48+8:], commitID)
	le.PutUint16(s[48+16:], qid)
}

func (t *ringThread) armEventfd() {
	s := t.r.sqe()
	s[0] = ioringOpRead
	le.PutUint32(s[4:], uint32(t.evfd))
	le.PutUint64(s[16:], uint64(uintptr(unsafe.Pointer(&t.evbuf[0]))))
	le.PutUint32(s[24:], 8)
	le.PutUint64(s[32:], evfdUserData)
}

func (t *ringThread) loop() error {
	for _, c := range t.backlog {
		t.complete(c.userData, c.res)
	}
	t.backlog = nil
	for t.live > 0 {
		if err := t.r.enter(1); err != nil {
			return err
		}
		for {
			ud, res, ok := t.r.cqe()
			if !ok {
				break
			}
			t.complete(ud, res)
		}
	}
	return nil
}

// complete handles a completion: a request arrived in entry ud, an entry
// ended, or the eventfd was written.
func (t *ringThread) complete(ud uint64, res int32) {
	if ud == evfdUserData {
		if res < 0 && syscall.Errno(-res) != unix.EINTR {
			if syscall.Errno(-res) != unix.ECANCELED {
				t.s.logf("io_uring queue %v: eventfd read: %v", t.qids, syscall.Errno(-res))
			}
			if t.s.closing.Load() {
				t.collect() // commit what is done, without reading again
				return
			}
		}
		t.collect()
		return
	}
	e := t.ents[ud]
	if res < 0 {
		// The connection ended (ENOTCONN) or the entry was cancelled:
		// it gets no more requests.
		if !e.dead {
			e.dead = true
			t.live--
		}
		switch syscall.Errno(-res) {
		case unix.ENOTCONN, unix.ECANCELED, unix.ECONNABORTED, unix.ENODEV:
		default:
			t.s.logf("io_uring entry of queue %d: %v", e.qid, syscall.Errno(-res))
		}
		t.s.closing.Store(true)
		return
	}
	if !t.s.offload(e) {
		t.s.serve(e)
		t.commit(int(ud))
		return
	}
	t.inflight.Add(1)
	go func() {
		defer t.inflight.Done()
		t.s.serve(e)
		t.mu.Lock()
		t.done = append(t.done, int(ud))
		fire := !t.fired
		t.fired = true
		t.mu.Unlock()
		if fire {
			one := [8]byte{1}
			unix.Write(t.evfd, one[:])
		}
	}()
}

// collect commits the entries whose offloaded requests are answered, and
// reads the eventfd again.
func (t *ringThread) collect() {
	t.mu.Lock()
	done := t.done
	t.done = nil
	t.fired = false
	t.mu.Unlock()
	for _, i := range done {
		t.commit(i)
	}
	if t.live > 0 {
		t.armEventfd()
	}
}

func (t *ringThread) commit(i int) {
	e := t.ents[i]
	t.cmd(t.r.sqe(), fuseURingCommitAndFetch, i, e.unique, e.qid)
}

func (t *ringThread) release() {
	if t.r != nil {
		t.r.close()
	}
	if t.evfd >= 0 {
		unix.Close(t.evfd)
	}
	if t.mem != nil {
		unix.Munmap(t.mem)
	}
}

// Wait returns when every queue thread has stopped.
func (s *ringServer) Wait() { s.wg.Wait() }

// serve answers the request in e, leaving the reply in its buffers.
func (s *ringServer) serve(e *ringEnt) {
	h := e.hdr
	length := le.Uint32(h[0:])
	e.unique = le.Uint64(h[8:])
	payload := int(le.Uint32(h[ringEntInOutOff+16:]))
	const inHeader = int(unsafe.Sizeof(fuse.InHeader{}))
	opIn := int(length) - inHeader - payload
	n, st := 0, fuse.EIO
	if opIn >= 0 && opIn <= ringOpInSize && payload <= len(e.payload) {
		in := [][]byte{h[:inHeader], h[ringOpInOffset : ringOpInOffset+opIn], e.payload[:payload]}
		out := [][]byte{h[:16], e.payload}
		n, st = s.ps.HandleRequest(in, out)
	}
	if !st.Ok() || n < 16 {
		clear(h[:16])
		le.PutUint32(h[0:], 16)
		errno := -int32(syscall.EIO)
		le.PutUint32(h[4:], uint32(errno))
		le.PutUint64(h[8:], e.unique)
		n = 16
	}
	le.PutUint32(h[ringEntInOutOff+16:], uint32(n-16))
}

// offload reports whether the request in e may wait on the disk for long,
// and so should not hold up its queue's thread.
func (s *ringServer) offload(e *ringEnt) bool {
	op := le.Uint32(e.hdr[4:])
	switch op {
	case opLookup, opGetattr, opReadlink, opGetxattr, opListxattr, opAccess, opStatfs,
		opOpendir, opReleasedir, opReaddir, opReaddirplus, opRelease, opFlush,
		opMkdir, opMknod, opSymlink, opCreate, opLseek, opInterrupt, opPoll:
		// POLL is answered ENOSYS at once (the kernel then stops asking);
		// it comes from epoll_ctl, which Go's os.Open calls, with the
		// epoll instance locked.
		return false
	case opUnlink, opRmdir:
		// A removal waits for a copy-up of its entry running meanwhile,
		// and for its whiteout to be on disk when it hides a lower entry
		// from an upper one; the rest (rm -r of a lower tree, of new
		// files) is quick, and a hand-off costs more than it.
		name := e.payload[:le.Uint32(e.hdr[ringEntInOutOff+16:])]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		return s.k.removalMayWait(le.Uint64(e.hdr[16:]), string(name))
	case opOpen:
		// Opening a lower file for writing copies it up.
		flags := le.Uint32(e.hdr[ringOpInOffset:])
		if flags&unix.O_ACCMODE == unix.O_RDONLY && flags&unix.O_TRUNC == 0 {
			return false
		}
		return !s.k.inUpper(le.Uint64(e.hdr[16:]))
	case opSetattr, opSetxattr, opRemovexattr:
		// These copy a lower file up, but not one already in the upper.
		return !s.k.inUpper(le.Uint64(e.hdr[16:]))
	}
	return true
}

// removalMayWait reports whether removing name from directory dir may
// wait: for a copy-up of the entry in progress, or for a durable whiteout
// (an upper entry over a lower one). An entry the kernel does not hold is
// looked up by the removal itself: that may wait too.
func (k *kernel) removalMayWait(dir uint64, name string) bool {
	d := k.node(dir)
	if d == nil {
		return false // answered ESTALE at once
	}
	c := d.knownChild(name)
	if c == nil {
		return true
	}
	if !c.cu.TryLock() {
		return true
	}
	c.cu.Unlock()
	if c.dir != nil && c.dir.timesOnly.Load() {
		return false // see remove: its whiteout need not be waited for
	}
	w := c.where()
	return w.upper && w.lower.layer != nil
}

// inUpper reports whether node ID id has its own upper copy (or needs
// none: a volume's files, a node the kernel no longer holds).
func (k *kernel) inUpper(id uint64) bool {
	n := k.node(id)
	return n == nil || n.hasUpper()
}

// FUSE opcodes the ring dispatch looks at (include/uapi/linux/fuse.h).
const (
	opLookup      = 1
	opGetattr     = 3
	opSetattr     = 4
	opReadlink    = 5
	opSymlink     = 6
	opMknod       = 8
	opMkdir       = 9
	opUnlink      = 10
	opRmdir       = 11
	opOpen        = 14
	opStatfs      = 17
	opRelease     = 18
	opSetxattr    = 21
	opGetxattr    = 22
	opListxattr   = 23
	opRemovexattr = 24
	opFlush       = 25
	opOpendir     = 27
	opReaddir     = 28
	opReleasedir  = 29
	opAccess      = 34
	opCreate      = 35
	opInterrupt   = 36
	opPoll        = 40
	opReaddirplus = 44
	opLseek       = 46
)

// UnmountLazy detaches mnt from the namespace now, leaving the mount to
// end when its last user is gone: umount2(MNT_DETACH) as root,
// `fusermount3 -u -z` otherwise.
func UnmountLazy(mnt string) error {
	if os.Geteuid() == 0 {
		return unix.Unmount(mnt, unix.MNT_DETACH)
	}
	path, err := exec.LookPath("fusermount3")
	if err != nil {
		if path, err = exec.LookPath("fusermount"); err != nil {
			return err
		}
	}
	return exec.Command(path, "-u", "-z", mnt).Run()
}
