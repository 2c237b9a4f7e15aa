// Package imgpull pulls container images from registries into a local
// layer store, unpacks their layers safely into directories that unionfs
// mounts as lower layers, lists and removes images, and exports an upper
// directory's changes as an OCI layer tar (Diff). The registry protocol is
// go-containerregistry's; this package never speaks HTTP itself.
//
// # The store
//
//	ROOT/store.db            images, layers, blob digests, leases (layerdb.StoreDB)
//	ROOT/layers/<hex>/       one unpacked layer per DiffID (sha256:<hex>)
//	ROOT/layers/<hex>/.unionfs/state.db   its whiteouts, opaque dirs and meta (layerdb.DB)
//	ROOT/tmp/stage-PID-START-RAND/        a layer being unpacked
//	ROOT/tmp/trash-PID-START-RAND/        a layer being deleted
//
// ROOT is --root, else $UNIONFS_ROOT, else /var/lib/unionfs for root and
// $XDG_DATA_HOME/unionfs (~/.local/share/unionfs) for other users.
//
// # Invariants
//
//   - A layer is recorded only when complete and verified: its blob is
//     streamed through a sha256 of the compressed bytes, the decompressor
//     (chosen by magic number: gzip, zstd or none), a sha256 of the
//     uncompressed tar and the unpacker into a staging directory; the tar is
//     read to its very end (past the end-of-archive blocks) and the blob to
//     exactly the manifest's size before both digests are compared. Then the
//     staging directory is synced and renamed into place inside the store
//     transaction that records it. Any failure (a digest mismatch, a limit, a
//     hostile entry, an interrupt) leaves nothing recorded and the staging
//     directory removed (or, after a crash, collected later).
//   - An image is recorded only when all its layers are: a pull leases its
//     layers first, so that a concurrent rmi does not collect the ones it
//     has already stored; rerunning an interrupted pull reuses them.
//   - Every change to ROOT/layers happens while holding the store database's
//     write lock (inside one of its transactions): the rename into place, and
//     the rename of a deleted layer to ROOT/tmp. Removing a renamed-away
//     directory happens outside it. So a collector never sees a layer
//     directory without its record except after a crash, and then the
//     directory is an orphan it may delete.
//   - A layer is deleted only when no image uses it and no live lease holds
//     it. A lease names its process by PID and start time (/proc/PID/stat),
//     so a dead holder's lease is ignored and dropped, even if its PID is
//     reused. Store.Lowers takes a lease for a mount; its release collects.
//   - The store database is opened for each short transaction only, never
//     across a download, so several unionfs processes share a store; each
//     open waits at most 30s for another's lock.
//
// # Unpacking a hostile layer
//
// Unpack resolves every path inside the layer directory with openat2
// RESOLVE_IN_ROOT: symlinks met on the way (from this layer: each layer is
// unpacked into its own directory, so a symlink from a lower layer is never
// followed) are resolved as if the layer root were "/", so nothing outside
// can be reached or written. The rules:
//
//   - Names: leading "/" is stripped (as GNU tar does); "." and ".." are
//     resolved lexically; a name that climbs above the root is an error
//     (ErrInvalidLayer), as in docker. Entries are recorded at the path the
//     kernel resolved, so meta and records match what is on disk.
//   - An existing entry is replaced by a later one of the same name (the last
//     wins, as in docker); a directory over a directory merges. A file is
//     always unlinked and created anew (O_EXCL|O_NOFOLLOW), never written
//     through an old symlink or hard link.
//   - Symlinks are stored as they are, whatever they point to; they are
//     content, which unionfs serves and never follows.
//   - Hard links must name an existing non-directory inside the layer
//     (resolved the same way); anything else is ErrInvalidLayer.
//   - Character and block devices are never created, not even by root: an
//     empty regular file (mode 0600) is left as a placeholder, so that the
//     name exists, and the layer's meta records the real type, mode, owner
//     and device number for the filesystem to serve. FIFOs are created.
//   - Ownership: as root, owners, modes (setuid/setgid included) and xattrs
//     are set on disk, except the overlay markers (trusted.overlay.*,
//     user.overlay.*, user.fuseoverlayfs.*), which would change what the
//     union shows, and anything the filesystem refuses: those go to meta.
//     Rootless (not root, or UnpackOptions.Rootless), every entry's owner,
//     full mode and xattrs go to meta; on disk the entry belongs to the user,
//     keeps no setuid/setgid bit and stays readable by it (directories
//     rwx), so that the user's filesystem server can serve it.
//   - Whiteouts (.wh.NAME) and opaque markers (.wh..wh..opq) become records
//     in the layer's state database, never files; they apply to the layers
//     below only, so a whiteout and a same-named entry of one layer both
//     take effect, and an opaque directory keeps its own layer's entries.
//     A whiteout's directory is created if the tar has no entry for it.
//     AUFS bookkeeping (.wh..wh.*, and anything below such a directory) is
//     skipped. A ".wh." name whose target is empty, "." or ".." (a bare
//     ".wh.") is an error (ErrInvalidLayer).
//   - The reserved .unionfs directory at the layer root (where the state
//     database lives): entries at or below it, whiteouts of it, and writes
//     that resolve into it through a symlink are skipped; a hard link to it is
//     an error.
//   - Limits (ErrLimit): the uncompressed tar stream and, separately, the sum
//     of the regular files' logical sizes (a sparse file counts its full size,
//     against PAX/GNU sparse bombs) may not exceed Limits.MaxBytes (default
//     32 GiB), nor the number of entries Limits.MaxEntries (default 2^20).
//     The zstd decoder's window and memory are capped too. Runs of zeros are
//     written as holes, so sparse files stay sparse.
//   - Unknown entry types (contiguous files, volume labels) are ignored, as
//     docker does.
//
// # Diff
//
// Diff walks an upper directory (not its .unionfs) and its state database:
// deletions become .wh.NAME entries, opaque directories a .wh..wh..opq, and
// a renamed directory (a redirect record), which OCI layers cannot express,
// is written in full at its new path, marked opaque, next to a whiteout at
// the old one; that needs the lower layers, which Diff merges with the
// mount's rules. Owners, modes and xattrs in a layer's meta win over the
// disk's.
package imgpull
