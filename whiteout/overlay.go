package whiteout

import (
	"errors"
	"strings"

	"golang.org/x/sys/unix"
)

// Overlayfs xattr namespaces. Privileged mounts use TrustedPrefix; mounts
// with "userxattr" (unprivileged, in a user namespace) use UserPrefix.
const (
	TrustedPrefix = "trusted.overlay."
	UserPrefix    = "user.overlay."
)

// Overlayfs xattr names, in both namespaces.
const (
	TrustedOpaqueXattr   = TrustedPrefix + "opaque"
	UserOpaqueXattr      = UserPrefix + "opaque"
	TrustedRedirectXattr = TrustedPrefix + "redirect"
	UserRedirectXattr    = UserPrefix + "redirect"
	// The xattr whiteout (Linux 6.7+): set on a zero-size regular file whose
	// parent directory has opaque = "x". The value is not examined.
	TrustedWhiteoutXattr = TrustedPrefix + "whiteout"
	UserWhiteoutXattr    = UserPrefix + "whiteout"
)

// fuse-overlayfs's own xattr namespace and opaque marker, used when it can
// set neither trusted.* nor user.overlay.* xattrs.
const (
	FuseOverlayfsPrefix      = "user.fuseoverlayfs."
	FuseOverlayfsOpaqueXattr = FuseOverlayfsPrefix + "opaque"
)

// Values of an overlay.opaque xattr.
const (
	// OpaqueValue marks an opaque directory.
	OpaqueValue = "y"
	// XWhiteoutsValue marks a directory that is NOT opaque but may contain
	// xattr whiteouts; it exists so readdir checks xattrs only where needed.
	XWhiteoutsValue = "x"
)

// The overlayfs whiteout is mknod(name, OverlayWhiteoutMode,
// OverlayWhiteoutDev): a character device 0:0 with no permission bits, as
// the kernel itself creates it.
const (
	OverlayWhiteoutMode = unix.S_IFCHR
	OverlayWhiteoutDev  = 0
)

// IsOverlayWhiteout reports whether an inode with st_mode mode and st_rdev
// rdev is an overlayfs whiteout. Permission bits are ignored: only the type
// and the device number 0:0 matter, as in the kernel's ovl_is_whiteout.
func IsOverlayWhiteout(mode uint32, rdev uint64) bool {
	return mode&unix.S_IFMT == unix.S_IFCHR && unix.Major(rdev) == 0 && unix.Minor(rdev) == 0
}

// IsOpaqueXattr reports whether the directory xattr name=value marks the
// directory opaque, in any form unionfs reads: trusted.overlay.opaque,
// user.overlay.opaque or user.fuseoverlayfs.opaque, set to exactly "y".
// "x" is not opaque (see [HasXWhiteoutsXattr]); like the kernel, other
// values and lengths are not opaque either.
func IsOpaqueXattr(name string, value []byte) bool {
	switch name {
	case TrustedOpaqueXattr, UserOpaqueXattr, FuseOverlayfsOpaqueXattr:
		return string(value) == OpaqueValue
	}
	return false
}

// HasXWhiteoutsXattr reports whether the directory xattr name=value says the
// directory may hold xattr whiteouts (overlay.opaque = "x", Linux 6.7+). The
// directory is then still merged with the layers below.
func HasXWhiteoutsXattr(name string, value []byte) bool {
	switch name {
	case TrustedOpaqueXattr, UserOpaqueXattr:
		return string(value) == XWhiteoutsValue
	}
	return false
}

// IsXWhiteoutXattr reports whether name is the xattr that makes a zero-size
// regular file an xattr whiteout. It counts only inside a directory for
// which [HasXWhiteoutsXattr] holds.
func IsXWhiteoutXattr(name string) bool {
	return name == TrustedWhiteoutXattr || name == UserWhiteoutXattr
}

// IsRedirectXattr reports whether name is an overlayfs redirect xattr.
func IsRedirectXattr(name string) bool {
	return name == TrustedRedirectXattr || name == UserRedirectXattr
}

// ErrInvalidRedirect reports a redirect xattr value that names no entry.
var ErrInvalidRedirect = errors.New("invalid overlay redirect")

// ParseRedirect decodes an overlay.redirect value. An absolute redirect
// ("/a/b") is a path from the root of each lower layer; a relative one is a
// single name in the same parent directory. Empty components ("//", a
// trailing "/", a bare "/"), "." and ".." components and NUL bytes are
// rejected: the kernel rejects the first, and the others would let a layer
// point lookups outside itself.
func ParseRedirect(value []byte) (path string, absolute bool, err error) {
	s := string(value)
	if rel, ok := strings.CutPrefix(s, "/"); ok {
		for c := range strings.SplitSeq(rel, "/") {
			if !validComponent(c) {
				return "", false, ErrInvalidRedirect
			}
		}
		return s, true, nil
	}
	if !validComponent(s) {
		return "", false, ErrInvalidRedirect
	}
	return s, false, nil
}

// EncodeRedirect returns the overlay.redirect value for path (absolute
// "/a/b" or a bare name), or ErrInvalidRedirect if [ParseRedirect] would
// reject it.
func EncodeRedirect(path string) ([]byte, error) {
	if _, _, err := ParseRedirect([]byte(path)); err != nil {
		return nil, err
	}
	return []byte(path), nil
}
