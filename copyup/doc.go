// Package copyup promotes an entry of a read-only lower layer into the
// writable upper layer, crash-safely.
//
// The copy is built under a temporary name in the work directory (which is
// on the upper's filesystem): data first (a reflink where the filesystem
// offers one, else copy_file_range, else read/write, keeping holes), then
// owner, extended attributes (after the owner, since chown clears
// security.capability), mode (after chown, which clears set-id bits) and
// times. A regular file is fsynced. Only then is it renamed into its place
// in the upper with RENAME_NOREPLACE. A crash at any moment therefore leaves
// either no upper entry (the lower one stays visible) or the complete copy;
// never a partial one. Leftover temporaries are the caller's to delete when
// it next starts (they are never visible through the union).
//
// The package copies one entry; making parent directories exist first is
// the caller's job, as is recording anything about the copy.
package copyup
