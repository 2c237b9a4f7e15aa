// Package fs is the union filesystem served over FUSE. It is the only
// package that imports go-fuse.
//
// # The stack
//
// A Union is a stack of layers, top first: the writable upper (if any),
// then the read-only lowers. Every layer is held by an O_PATH descriptor of
// its root and reached only with *at(2) calls beneath it, opening with
// openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS): a symlink stored in a layer
// is content to serve, never a path the server follows.
//
// # Invariants
//
//   - Lower layers never change under a mount. A directory's merged lower
//     listing (lowerIndex) is therefore built once, on first use, and
//     answers every later lookup and listing without a system call; the
//     kernel may cache entries and attributes for long.
//   - The upper changes only through this server. Its entries are always
//     read live; its records (whiteouts, opaque directories, redirects)
//     live in the state database and, mirrored, in Union.records. Record
//     changes are committed in batches (journal): a crash may take back the
//     last few of them, which then read as not done. Where an upper change
//     relies on a record, the record reaches the disk first: a whiteout
//     before the upper entry it replaces is removed (unless that entry is a
//     directory this mount copied up only to hold its times, see
//     dirState.timesOnly), so a crash never brings back a lower entry older
//     than what the upper held. A directory rename is the exception: the
//     upper rename goes first (see Rename) so that a crash hides nothing.
//   - An upper entry always wins over a record at the same path; a record
//     with Opaque set at a path where the upper has nothing is a whiteout.
//   - A node's union inode number never changes: a copied-up file keeps its
//     origin's number through the origins table.
//   - A node is copied up at most once (node.cu), parents first; the copy
//     is built in the work directory and renamed into place (package
//     copyup), so a crash leaves the lower file or the whole copy.
//
// # The kernel's tree
//
// Requests are served on go-fuse's raw API (kernel): the server keeps its
// own table of the nodes the kernel holds, by FUSE node ID, each with its
// lookup count, parent and name (tree.go), at 128 bytes a node plus about
// 60 for its table entry and its name in the parent's children map. A node
// leaves the tree when the kernel forgets it, unless it is a directory
// with children the kernel still holds. Two names lead to one node only
// for files with several links (kernel.shared).
//
// # Transports
//
// Requests come over /dev/fuse, read by go-fuse's loop, or, where the
// kernel offers FUSE over io_uring (uring.go), from ring entries: one
// queue per CPU, served by a thread pinned to that CPU, which answers on
// the spot what cannot wait on the disk for long and hands the rest
// (data, fsync, copy-ups) to goroutines. go-fuse's ProtocolServer parses
// the ring's requests into the same RawFileSystem calls, so the handlers
// do not know the transport; FORGET and INTERRUPT stay on /dev/fuse.
// Because a queue thread runs its handlers one at a time, a handler must
// never wait for another request to be answered.
//
// # Directories
//
// The kernel opens directories without asking (the first OPENDIR is
// answered ENOSYS, see kernel) and caches their listings; changes
// made through the mount invalidate them. A listing's offsets are cookies
// made from the entry names, so a reader may continue on a listing taken
// later. READDIRPLUS gives attributes to subdirectories and, while readers
// use them, to files (plusPolicy); entries the kernel knows get none.
//
// # Locks
//
// node.cu is held across a copy-up, which may copy a parent first: always
// child before parent is never taken, so the order is parent's cu, then
// child's. A directory's indexMu is held while its lower index is built.
// node.mu and Union.mu guard small fields and are never held across a
// system call on a layer or a call into go-fuse. The tree lock (kernel.mu)
// is innermost: nothing else is taken while it is held, and a node that
// leaves the tree closes its descriptors after it is released.
//
// # FUSE deadlock traps (go-fuse fs/api.go)
//
// The server never touches its own mountpoint: it never forks with file
// descriptors into the mount, never execs a file from it, never mmaps a
// file it serves and never stats it while holding a lock (the daemon's
// readiness check happens after Mount has returned, from the waiting
// parent's point of view). Tests run the server as a separate process for
// the same reason: a test process that served the mount and also forked or
// mmapped through it could deadlock the runtime.
package fs
