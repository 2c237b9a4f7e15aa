package imgpull

import "errors"

// Sentinel errors; test for them with errors.Is.
var (
	// ErrInvalidLayer: a layer tar that is malformed or tries to reach
	// outside its directory (a name climbing above the root, a hard link to a
	// missing or outside target, an invalid whiteout name).
	ErrInvalidLayer = errors.New("invalid layer")
	// ErrLimit: a layer larger than Limits allow (a compression, sparse-file
	// or entry-count bomb, or just a layer too big for the configured caps).
	ErrLimit = errors.New("layer exceeds a limit")
	// ErrDigestMismatch: downloaded bytes do not hash to the digest the
	// manifest or the image config promised.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrNoImage: no image in the store by that name or ID.
	ErrNoImage = errors.New("no such image")
	// ErrAmbiguous: an image ID prefix that matches several images.
	ErrAmbiguous = errors.New("ambiguous image ID")
	// ErrUnsupported: something the registry served that is not a
	// container image this store can hold (an unknown media type, a
	// schema 1 manifest, a digest algorithm other than sha256).
	ErrUnsupported = errors.New("unsupported")
	// ErrPlatform: the image is not for the requested platform.
	ErrPlatform = errors.New("platform mismatch")
)
