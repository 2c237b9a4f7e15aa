// Package layerdb stores the union metadata of one layer directory in a bbolt
// database, normally <layer>/.unionfs/state.db. It is the only package in the
// repository that imports bbolt.
//
// A layer records, per path relative to the layer root, whether the path is
// opaque (a whiteout if the layer has no entry there, an opaque directory if it
// has one) and where lower layers should be consulted for a renamed directory
// (Redirect, as overlayfs redirect_dir). It also keeps the inode-number origins
// of copied-up files and the hard-link index (as overlayfs index=on).
//
// # Paths
//
// Paths are relative to the layer root: "" is the root directory, anything else
// is "a/b/c" with no leading or trailing slash and no empty, "." or ".."
// component. Callers pass cleaned paths; anything else is rejected with
// ErrInvalidPath rather than cleaned, so that a caller bug cannot alias two
// keys. The subtree of P is P itself plus every path with the prefix P+"/"
// ("a/b" does not contain "a/bc"); the subtree of "" is everything.
//
// # On-disk format (version 1)
//
// All integers are big-endian. Everything lives in one top-level bucket:
//
//	unionfs.v1                      root bucket
//	    version  -> uint32 = 1      format version (4 bytes)
//	    paths/   (sub-bucket)       key: "/" + path        value: record
//	    origins/ (sub-bucket)       key: uint64 upper ino  value: uint64 union ino
//	    index/   (sub-bucket)       key: uint64 union ino  value: upper-relative path
//
// Path keys carry a "/" prefix because bbolt rejects zero-length keys and the
// root path is "": the root is stored as "/", "a/b" as "/a/b". Keys therefore
// sort so that a subtree is a contiguous run of the "/"+P prefix range (which
// may also hold siblings such as "/a/bc", filtered out by checking for the
// separator after the prefix).
//
// A record value is one flag byte followed by the redirect:
//
//	bit 0  opaque
//	bit 1  has redirect: the remaining bytes are the redirect path (non-empty,
//	       valid as above); without bit 1 there are no remaining bytes
//	bits 2-7 reserved: a record with any of them set is rejected as ErrCorrupt
//
// The encoding is canonical: every value that decodes re-encodes to the same
// bytes. Index values are non-empty valid paths. Anything else is ErrCorrupt.
//
// A reader that finds a version greater than 1, or a top-level bucket named
// unionfs.vN other than unionfs.v1, fails with ErrVersion rather than guessing.
//
// # Invariants
//
//   - Open never leaves a half-initialised database at the database path: it
//     never creates the database in place. A new database is built under a
//     temporary name in the same directory (state.db.tmp-*), its buckets and
//     version are committed and fsynced, and only then is it hard-linked to the
//     final name (link fails rather than replacing a database created
//     concurrently) and the directory (and, if Open created the directory,
//     its parent) fsynced. A crash leaves at worst an
//     orphan temporary file, which is never read and may be deleted.
//   - Consequently a zero-length file, a file without the root bucket, version
//     or sub-buckets, or a file shorter than its bbolt high-water mark
//     (truncated) is reported as ErrCorrupt and left untouched. Open never
//     starts an empty database over an existing file: losing whiteouts silently
//     would resurrect deleted lower files.
//   - A writable Open validates the file through a read-only bbolt open first:
//     a writable bbolt open reads the freelist before the truncation check can
//     run, and would fault on a truncated file.
//   - bbolt can panic, or fault on its memory map, on a corrupt file. Open and
//     every method run with debug.SetPanicOnFault and turn a panic inside bbolt
//     into ErrCorrupt instead of crashing the filesystem server. A failed Open
//     closes the file so its lock is freed (if bbolt.Open itself panicked, its
//     memory map is leaked; it is small and this is rare).
//   - Open always has a lock timeout (default 2s): bbolt holds an flock on the
//     file, exclusive for writers and shared for ReadOnly opens, and would
//     otherwise wait forever. A timeout is ErrLocked. The lock is per open file
//     description, so two Opens of one file conflict even inside one process.
//   - A ReadOnly Open never creates or writes anything.
//   - Every exported method is one bbolt transaction; Apply runs its whole list
//     of changes in one transaction, all or nothing. Commits are fsynced unless
//     Options.NoSync is set. A DB is safe for concurrent use.
package layerdb
