package fs

import (
	"errors"

	"golang.org/x/sys/unix"

	"github.com/unionfs/unionfs/layerdb"
	"github.com/unionfs/unionfs/whiteout"
)

// lowerRef is a directory (or file) at path inside one lower layer.
type lowerRef struct {
	layer *layer
	path  string
}

// lowerEntry is one name of a merged lower directory, as the topmost lower
// layer that has it shows it.
type lowerEntry struct {
	name string
	mode uint32   // S_IFMT bits
	ino  uint64   // real inode number in the topmost layer
	top  lowerRef // the topmost lower entry
	// dirs lists, for a directory, every lower directory that merges into
	// it, top down, as far as the parents' listings reach.
	dirs []lowerRef
	// redirect, when set, is where the layers below the one at stack
	// position redirectAt continue this directory (overlayfs redirect_dir);
	// they are probed on demand.
	redirect   string
	redirectAt int
}

// lowerIndex is the merged view of one directory across the lower layers.
// Lower layers never change under a mount, so it is built once per
// directory and then answers every lookup and listing with no system call:
// this is what keeps a lookup's cost flat in the number of layers.
type lowerIndex struct {
	entries []lowerEntry
	byName  map[string]int32
}

func (x *lowerIndex) lookup(name string) *lowerEntry {
	if i, ok := x.byName[name]; ok {
		return &x.entries[i]
	}
	return nil
}

// buildLowerIndex merges the listings of dirs, top down. A name is taken
// from the topmost layer that has it; a directory keeps merging with the
// same-named directories below until a non-directory, an opaque marker, a
// whiteout or a redirect stops it.
func buildLowerIndex(dirs []lowerRef) (*lowerIndex, error) {
	x := &lowerIndex{byName: make(map[string]int32)}
	stopped := make(map[string]bool)
	for _, d := range dirs {
		ents, err := readDirAt(d.layer.fd, d.path)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				continue
			}
			return nil, err
		}
		m := markersOf(d, ents)
		for _, e := range ents {
			if d.path == "" && e.name == StateDir || stopped[e.name] || m.isMarker(e.name) {
				continue
			}
			ref := lowerRef{d.layer, joinPath(d.path, e.name)}
			if i, ok := x.byName[e.name]; ok {
				// Only directories are still open for merging.
				if e.mode == unix.S_IFDIR {
					x.entries[i].dirs = append(x.entries[i].dirs, ref)
				} else {
					stopped[e.name] = true
				}
				continue
			}
			mode := e.mode
			if m, ok := d.layer.meta[ref.path]; ok {
				mode = m.Mode & unix.S_IFMT // a device's placeholder file
			}
			le := lowerEntry{name: e.name, mode: mode, ino: e.ino, top: ref}
			if e.mode == unix.S_IFDIR {
				le.dirs = []lowerRef{ref}
			} else {
				stopped[e.name] = true
			}
			x.byName[e.name] = int32(len(x.entries))
			x.entries = append(x.entries, le)
		}
		// What this layer says about names applies to the layers below it.
		for name, rec := range m.records {
			if rec.Redirect != "" && !stopped[name] {
				if le := x.lookup(name); le != nil && le.mode == unix.S_IFDIR && le.dirs[len(le.dirs)-1].layer == d.layer {
					le.redirect, le.redirectAt = rec.Redirect, d.layer.idx
					stopped[name] = true
				}
			}
			if rec.Opaque {
				stopped[name] = true
			}
		}
		if m.opaque {
			break
		}
	}
	return x, nil
}

// probeLowers finds the lower directories at path p in the layers from stack
// position from downwards, for a directory whose lower half was moved by a
// redirect. It stops where a layer has a non-directory, a whiteout or an
// opaque marker there, and follows further redirects.
func (u *Union) probeLowers(p string, from int) []lowerRef {
	var out []lowerRef
	for k := from; k < len(u.layers); k++ {
		l := u.layers[k]
		var st unix.Stat_t
		err := lstatAt(l.fd, p, &st)
		isDir := err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR
		if err == nil && !isDir {
			break
		}
		if isDir {
			out = append(out, lowerRef{l, p})
		}
		rec, parentOpaque := l.markerAt(p, isDir)
		if rec.Opaque || parentOpaque {
			break
		}
		if rec.Redirect != "" && isDir {
			p = rec.Redirect
		}
	}
	return out
}

// markerAt is what layer l says about path p for the layers below it: its
// state database's record merged with the on-disk markers (see
// dirMarkers), and whether p's parent directory is opaque in l.
func (l *layer) markerAt(p string, isDir bool) (rec layerdb.Record, parentOpaque bool) {
	dir, name := splitPath(p)
	rec, _ = l.record(dir, name)
	dfd, err := openBeneath(l.fd, dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return rec, false
	}
	defer unix.Close(dfd)
	m := &dirMarkers{}
	if isDir {
		m.dirXattrs(dfd, dir, name)
	} else if unix.Faccessat(dfd, whiteout.Name(name), unix.F_OK, unix.AT_SYMLINK_NOFOLLOW) == nil {
		rec.Opaque = true
	}
	if r, ok := m.records[name]; ok {
		rec.Opaque = rec.Opaque || r.Opaque
		if r.Redirect != "" {
			rec.Redirect = r.Redirect
		}
	}
	opq := unix.Faccessat(dfd, whiteout.OpaqueName, unix.F_OK, unix.AT_SYMLINK_NOFOLLOW) == nil
	return rec, opq
}

// childLowers returns every lower directory that merges into the directory
// entry le.
func (u *Union) childLowers(le *lowerEntry) []lowerRef {
	if le.redirect == "" {
		return le.dirs
	}
	dirs := append([]lowerRef(nil), le.dirs...)
	return append(dirs, u.probeLowers(le.redirect, le.redirectAt+1)...)
}
