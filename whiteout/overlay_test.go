package whiteout

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func TestIsOverlayWhiteout(t *testing.T) {
	tests := []struct {
		desc string
		mode uint32
		rdev uint64
		want bool
	}{
		{"chardev 0:0", unix.S_IFCHR, 0, true},
		{"chardev 0:0 with perms", unix.S_IFCHR | 0o644, 0, true},
		{"mknod constants", OverlayWhiteoutMode, OverlayWhiteoutDev, true},
		{"chardev 1:3 (/dev/null)", unix.S_IFCHR | 0o666, unix.Mkdev(1, 3), false},
		{"chardev 0:1", unix.S_IFCHR, unix.Mkdev(0, 1), false},
		{"chardev 256:0 (high major bits)", unix.S_IFCHR, unix.Mkdev(256, 0), false},
		{"chardev 0:256 (high minor bits)", unix.S_IFCHR, unix.Mkdev(0, 256), false},
		{"blockdev 0:0", unix.S_IFBLK, 0, false},
		{"regular file", unix.S_IFREG | 0o644, 0, false},
		{"fifo", unix.S_IFIFO, 0, false},
		{"socket", unix.S_IFSOCK, 0, false}, // S_IFSOCK contains the S_IFCHR bits
		{"directory", unix.S_IFDIR | 0o755, 0, false},
		{"symlink", unix.S_IFLNK | 0o777, 0, false},
	}
	for _, tt := range tests {
		if got := IsOverlayWhiteout(tt.mode, tt.rdev); got != tt.want {
			t.Errorf("%s: IsOverlayWhiteout(%#o, %#x) = %v, want %v", tt.desc, tt.mode, tt.rdev, got, tt.want)
		}
	}
}

func TestIsOpaqueXattr(t *testing.T) {
	tests := []struct {
		name, value string
		opaque      bool
		xwhiteouts  bool
	}{
		{"trusted.overlay.opaque", "y", true, false},
		{"user.overlay.opaque", "y", true, false},
		{"user.fuseoverlayfs.opaque", "y", true, false},
		{"trusted.overlay.opaque", "x", false, true},
		{"user.overlay.opaque", "x", false, true},
		{"user.fuseoverlayfs.opaque", "x", false, false},
		{"trusted.overlay.opaque", "", false, false},
		{"trusted.overlay.opaque", "n", false, false},
		{"trusted.overlay.opaque", "yy", false, false},
		{"trusted.overlay.opaque", "y\x00", false, false},
		{"trusted.overlay.redirect", "y", false, false},
		{"user.opaque", "y", false, false},
		{"trusted.overlay.overlay.opaque", "y", false, false}, // escaped: for a nested overlay
		{"security.overlay.opaque", "y", false, false},
	}
	for _, tt := range tests {
		if got := IsOpaqueXattr(tt.name, []byte(tt.value)); got != tt.opaque {
			t.Errorf("IsOpaqueXattr(%q, %q) = %v, want %v", tt.name, tt.value, got, tt.opaque)
		}
		if got := HasXWhiteoutsXattr(tt.name, []byte(tt.value)); got != tt.xwhiteouts {
			t.Errorf("HasXWhiteoutsXattr(%q, %q) = %v, want %v", tt.name, tt.value, got, tt.xwhiteouts)
		}
	}
}

func TestXattrNames(t *testing.T) {
	// The names are on-disk format: pin them so a refactor cannot drift.
	names := map[string]string{
		TrustedOpaqueXattr:       "trusted.overlay.opaque",
		UserOpaqueXattr:          "user.overlay.opaque",
		TrustedRedirectXattr:     "trusted.overlay.redirect",
		UserRedirectXattr:        "user.overlay.redirect",
		TrustedWhiteoutXattr:     "trusted.overlay.whiteout",
		UserWhiteoutXattr:        "user.overlay.whiteout",
		FuseOverlayfsOpaqueXattr: "user.fuseoverlayfs.opaque",
	}
	for got, want := range names {
		if got != want {
			t.Errorf("xattr name %q, want %q", got, want)
		}
	}
	for _, n := range []string{TrustedRedirectXattr, UserRedirectXattr} {
		if !IsRedirectXattr(n) {
			t.Errorf("IsRedirectXattr(%q) = false", n)
		}
	}
	if IsRedirectXattr(TrustedOpaqueXattr) {
		t.Errorf("IsRedirectXattr(%q) = true", TrustedOpaqueXattr)
	}
	for _, n := range []string{TrustedWhiteoutXattr, UserWhiteoutXattr} {
		if !IsXWhiteoutXattr(n) {
			t.Errorf("IsXWhiteoutXattr(%q) = false", n)
		}
	}
	if IsXWhiteoutXattr("trusted.overlay.whiteouts") {
		t.Error("IsXWhiteoutXattr(trusted.overlay.whiteouts) = true; that was a pre-release name")
	}
}

func TestParseRedirect(t *testing.T) {
	tests := []struct {
		value    string
		path     string
		absolute bool
		ok       bool
	}{
		{"b", "b", false, true},
		{".b", ".b", false, true},
		{"/a", "/a", true, true},
		{"/a/b/c", "/a/b/c", true, true},
		{"", "", false, false},
		{"/", "", false, false},
		{"//a", "", false, false},
		{"/a//b", "", false, false},
		{"/a/", "", false, false},
		{"a/b", "", false, false},
		{".", "", false, false},
		{"..", "", false, false},
		{"/a/../b", "", false, false},
		{"/./a", "", false, false},
		{"a\x00", "", false, false},
		{"/a\x00b", "", false, false},
	}
	for _, tt := range tests {
		path, abs, err := ParseRedirect([]byte(tt.value))
		if tt.ok != (err == nil) || path != tt.path || abs != tt.absolute {
			t.Errorf("ParseRedirect(%q) = %q, %v, %v; want %q, %v, ok=%v",
				tt.value, path, abs, err, tt.path, tt.absolute, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidRedirect) {
			t.Errorf("ParseRedirect(%q) error %v is not ErrInvalidRedirect", tt.value, err)
		}
	}
}

func FuzzParseRedirect(f *testing.F) {
	for _, s := range []string{"", "a", "/a/b", "//", "/a/../b", "a/b"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		path, abs, err := ParseRedirect(value)
		if err != nil {
			if _, err2 := EncodeRedirect(string(value)); err2 == nil {
				t.Fatalf("EncodeRedirect accepts %q, ParseRedirect rejects it", value)
			}
			return
		}
		if path != string(value) || abs != (len(path) > 0 && path[0] == '/') {
			t.Fatalf("ParseRedirect(%q) = %q, %v", value, path, abs)
		}
		enc, err := EncodeRedirect(path)
		if err != nil || string(enc) != path {
			t.Fatalf("EncodeRedirect(%q) = %q, %v", path, enc, err)
		}
	})
}
