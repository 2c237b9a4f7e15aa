package fs

import (
	"strings"

	"golang.org/x/sys/unix"

	"github.com/unionfs/unionfs/layerdb"
	"github.com/unionfs/unionfs/whiteout"
)

// dirMarkers is what one lower directory says about the layers below it:
// unionfs's own records from the layer's state database, merged with the
// on-disk forms other tools leave in layer directories (overlayfs 0:0
// character devices and opaque/redirect xattrs, AUFS/OCI ".wh." files), so
// that layers made by kernel overlayfs, fuse-overlayfs or containers/storage
// stack as they do there.
type dirMarkers struct {
	records map[string]layerdb.Record // by name; Opaque doubles as whiteout
	hide    map[string]bool           // entries that are markers, not content
	opaque  bool                      // the directory itself hides the layers below
}

func (m *dirMarkers) isMarker(name string) bool { return m.hide[name] }

func (m *dirMarkers) set(name string, f func(*layerdb.Record)) {
	if m.records == nil {
		m.records = make(map[string]layerdb.Record)
	}
	r := m.records[name]
	f(&r)
	m.records[name] = r
}

func (m *dirMarkers) marker(name string) {
	if m.hide == nil {
		m.hide = make(map[string]bool)
	}
	m.hide[name] = true
}

// markersOf collects the markers of the lower directory d from its
// listing ents.
func markersOf(d lowerRef, ents []rawDirent) *dirMarkers {
	m := &dirMarkers{}
	for name, r := range d.layer.records[d.path] {
		if name != "" {
			m.set(name, func(x *layerdb.Record) { *x = r })
		}
	}
	var dirfd = -1
	defer func() {
		if dirfd >= 0 {
			unix.Close(dirfd)
		}
	}()
	openDir := func() bool {
		if dirfd < 0 {
			fd, err := openBeneath(d.layer.fd, d.path, unix.O_PATH|unix.O_DIRECTORY, 0)
			if err != nil {
				return false
			}
			dirfd = fd
		}
		return true
	}
	for _, e := range ents {
		switch {
		case strings.HasPrefix(e.name, whiteout.Prefix):
			m.marker(e.name)
			switch kind, target := whiteout.Parse(e.name); kind {
			case whiteout.Whiteout:
				m.set(target, func(r *layerdb.Record) { r.Opaque = true })
			case whiteout.Opaque:
				m.opaque = true
			}
		case e.mode == unix.S_IFCHR:
			var st unix.Stat_t
			if openDir() && unix.Fstatat(dirfd, e.name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil &&
				whiteout.IsOverlayWhiteout(st.Mode, st.Rdev) {
				m.marker(e.name)
				m.set(e.name, func(r *layerdb.Record) { r.Opaque = true })
			}
		case e.mode == unix.S_IFDIR:
			if openDir() {
				m.dirXattrs(dirfd, d.path, e.name)
			}
		}
	}
	return m
}

// dirXattrs reads the overlayfs opaque and redirect xattrs of a
// subdirectory. Most directories have no xattrs at all, which costs one
// listxattr.
func (m *dirMarkers) dirXattrs(dirfd int, dirPath, name string) {
	var buf [1024]byte
	k, err := listxattrAt(dirfd, name, buf[:])
	if err != nil || k == 0 {
		return
	}
	for _, attr := range strings.Split(string(buf[:k]), "\x00") {
		switch {
		case attr == whiteout.TrustedOpaqueXattr || attr == whiteout.UserOpaqueXattr || attr == whiteout.FuseOverlayfsOpaqueXattr:
			if v, ok := getSmallXattr(dirfd, name, attr); ok && whiteout.IsOpaqueXattr(attr, v) {
				m.set(name, func(r *layerdb.Record) { r.Opaque = true })
			}
		case whiteout.IsRedirectXattr(attr):
			v, ok := getSmallXattr(dirfd, name, attr)
			if !ok {
				continue
			}
			target, abs, err := whiteout.ParseRedirect(v)
			if err != nil {
				continue
			}
			if abs {
				target = strings.TrimPrefix(target, "/")
			} else {
				target = joinPath(dirPath, target)
			}
			m.set(name, func(r *layerdb.Record) { r.Redirect = target })
		}
	}
}

func getSmallXattr(dirfd int, name, attr string) ([]byte, bool) {
	var buf [4096]byte
	k, err := getxattrAt(dirfd, name, attr, buf[:])
	if err != nil {
		return nil, false
	}
	return append([]byte(nil), buf[:k]...), true
}
