// Package whiteout encodes and decodes every on-disk form of "this entry is
// deleted" (a whiteout) and "hide everything below this directory" (an opaque
// directory) that unionfs reads or writes. It is pure: it never touches the
// filesystem, so callers supply names, modes, device numbers and xattr values
// they already have. It depends on nothing else in this repository.
//
// # Forms
//
// OCI image layers (tar), from the OCI image spec, layer.md "Whiteouts";
// the names come from AUFS, where Docker's layer format started:
//
//   - ".wh.NAME": a whiteout of NAME in the same directory. The entry's own
//     type and content are meaningless. See [Name], [Parse], [ParsePath].
//   - ".wh..wh..opq" ([OpaqueName]): the directory holding it is opaque.
//   - any other ".wh..wh.*" name (".wh..wh.plnk", ".wh..wh.aufs",
//     ".wh..wh.orph"): AUFS's own bookkeeping that old Docker images carried
//     into tars. It is [Meta]: skip it, never apply or expose it.
//   - ".wh." with an empty target, or a target of "." or "..", or one holding
//     "/" or NUL: [Invalid]. An importer must reject or skip it; it must never
//     be read as a whiteout, since that would delete the parent directory or
//     escape it.
//
// Kernel overlayfs (Documentation/filesystems/overlayfs.rst), on an upper or
// lower directory:
//
//   - a whiteout is a character device with device number 0:0, any name
//     ([IsOverlayWhiteout], [OverlayWhiteoutMode], [OverlayWhiteoutDev]).
//   - a directory is opaque if its xattr "trusted.overlay.opaque" is "y"
//     ([IsOpaqueXattr]). Mounts with "userxattr" use the "user.overlay."
//     prefix instead of "trusted.overlay." for every overlay xattr.
//   - Linux 6.7+ also reads "xattr whiteouts", which nest inside another
//     overlay: a zero-size regular file carrying "overlay.whiteout", whose
//     parent directory has "overlay.opaque" = "x" ([HasXWhiteoutsXattr]).
//     "x" means "contains such whiteouts", not "opaque". Overlayfs never
//     writes this form; image tools (composefs) do.
//   - a renamed directory carries "overlay.redirect": either an absolute path
//     from the layer root ("/a/b") or a bare name in the same parent
//     ([ParseRedirect]). Lookups below it continue at that path in the lower
//     layers.
//
// fuse-overlayfs (containers/fuse-overlayfs, main.c), which both reads and
// writes several forms so that it works unprivileged:
//
//   - whiteouts: the overlay character device 0:0 when mknod is allowed,
//     otherwise a ".wh.NAME" file in the upper directory. It reads both.
//   - opaque: "trusted.overlay.opaque", then "user.overlay.opaque", then
//     "user.fuseoverlayfs.opaque" ([FuseOverlayfsOpaqueXattr]), each "y"; if
//     the filesystem has no xattrs, a ".wh..wh..opq" file in the directory.
//
// # Precedence
//
// Layers are read top (newest) to bottom. Within one directory of one layer,
// per the OCI image spec:
//
//  1. An opaque marker applies first: it hides every entry of that directory
//     in all layers below, but not the entries of its own layer.
//  2. A whiteout hides NAME in the layers below only. It never hides an
//     entry of its own layer.
//  3. So a ".wh.NAME" and a real NAME in the same layer both take effect: the
//     lower NAME is deleted and this layer's NAME is what the merged view
//     shows. (A tar writer should emit whiteouts before their siblings, but an
//     importer must not rely on the order.)
//
// The same rules hold for the overlayfs forms, except that one directory
// cannot hold both a character-device whiteout and a real entry of the same
// name. A whiteout or opaque marker in a lower layer applies to the layers
// below that one, exactly as in the upper.
//
// The ".wh." prefix is reserved ([IsReserved]): no real entry may carry it in
// an OCI layer or in a fuse-overlayfs upper directory, so a union filesystem
// that stores ".wh." whiteouts must refuse to create such names.
package whiteout
