package whiteout

import (
	"strconv"
	"strings"
)

// Prefix starts every name in the whiteout namespace.
const Prefix = ".wh."

// OpaqueName is the OCI/AUFS opaque-directory marker.
const OpaqueName = Prefix + Prefix + ".opq"

// metaPrefix starts AUFS-internal names; OpaqueName is the one that matters.
const metaPrefix = Prefix + Prefix

// Kind classifies a directory entry name.
type Kind int

// Kinds returned by [Parse]. The zero value is None, so an unset Kind never
// deletes anything.
const (
	// None is an ordinary name, not in the whiteout namespace.
	None Kind = iota
	// Whiteout hides the target in lower layers.
	Whiteout
	// Opaque hides the whole directory in lower layers.
	Opaque
	// Meta is AUFS bookkeeping (".wh..wh.plnk", ".wh..wh.aufs", ...): skip it.
	Meta
	// Invalid is a ".wh." name whose target cannot name a sibling entry
	// (empty, ".", "..", or containing "/" or NUL). Reject or skip it; never
	// apply it.
	Invalid
)

func (k Kind) String() string {
	switch k {
	case None:
		return "none"
	case Whiteout:
		return "whiteout"
	case Opaque:
		return "opaque"
	case Meta:
		return "meta"
	case Invalid:
		return "invalid"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Parse classifies one path component (not a path: see [ParsePath]).
//
// The target is what the name refers to: the hidden name for Whiteout, the
// AUFS name after ".wh..wh." for Meta (e.g. "plnk"), the raw text after
// ".wh." for Invalid, "" for Opaque, and name itself for None.
func Parse(name string) (kind Kind, target string) {
	rest, ok := strings.CutPrefix(name, Prefix)
	if !ok {
		return None, name
	}
	if name == OpaqueName {
		return Opaque, ""
	}
	if meta, ok := strings.CutPrefix(name, metaPrefix); ok {
		return Meta, meta
	}
	if !validComponent(rest) {
		return Invalid, rest
	}
	return Whiteout, rest
}

// ParsePath classifies the last component of a slash-separated path such as
// a tar header name ("a/b/.wh.c", "./a/.wh..wh..opq"). dir is everything
// before the last slash, unmodified ("" if there is none); trailing slashes
// of a directory entry are ignored. Cleaning dir is the caller's job.
func ParsePath(p string) (kind Kind, dir, target string) {
	p = strings.TrimRight(p, "/")
	base := p
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		dir, base = p[:i], p[i+1:]
	}
	kind, target = Parse(base)
	return kind, dir, target
}

// Name returns the OCI whiteout name for target. It does not validate:
// check [ValidTarget] first, since Name of an invalid target does not parse
// back as a Whiteout.
func Name(target string) string {
	return Prefix + target
}

// ValidTarget reports whether target can be whited out with a ".wh." name:
// it must be a single, real path component, and must not itself start with
// ".wh." (those names are reserved, so no real entry can carry them).
func ValidTarget(target string) bool {
	return validComponent(target) && !IsReserved(target)
}

// IsReserved reports whether name is in the whiteout namespace. Such names
// are never real entries in an OCI layer or in a fuse-overlayfs style upper,
// so a union filesystem must neither expose nor create them.
func IsReserved(name string) bool {
	return strings.HasPrefix(name, Prefix)
}

// validComponent reports whether s names an entry inside a directory.
func validComponent(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00")
}
