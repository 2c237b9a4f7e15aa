package fs

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

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
// layer that has it shows it. It is kept small (a directory of the index
// holds one per name, and there may be hundreds of thousands): its path in
// the layer is derived from the directory's, and what only directories
// need lives in side tables of the index.
type lowerEntry struct {
	name string
	ino  uint64 // real inode number in the topmost layer
	mode uint32 // S_IFMT bits
	top  uint16 // the merged lower directory (lowerIndex.dirs) it comes from
}

// subdir is what the index knows of a child directory: the merged lower
// directories it appears in, top down, as far as the listings reach, and
// where a redirect continues it (overlayfs redirect_dir) in the layers
// below the one at stack position redirectAt.
type subdir struct {
	in         []uint16
	redirect   string
	redirectAt int
}

// lowerIndex is the merged view of one directory across the lower layers.
// Lower layers never change under a mount, so it is built once per
// directory and then answers every lookup and listing with no system call:
// this is what keeps a lookup's cost flat in the number of layers.
type lowerIndex struct {
	dirs    []lowerRef         // the lower directories merged, top down
	entries []lowerEntry       // sorted by name
	subdirs map[string]*subdir // the entries that are directories
}

func (x *lowerIndex) lookup(name string) *lowerEntry {
	i, ok := slices.BinarySearchFunc(x.entries, name, func(e lowerEntry, name string) int {
		return strings.Compare(e.name, name)
	})
	if !ok {
		return nil
	}
	return &x.entries[i]
}

// topRef is where the entry's file is in its topmost layer.
func (x *lowerIndex) topRef(e *lowerEntry) lowerRef {
	d := x.dirs[e.top]
	return lowerRef{d.layer, joinPath(d.path, e.name)}
}

// buildLowerIndex merges the listings of dirs, top down. A name is taken
// from the topmost layer that has it; a directory keeps merging with the
// same-named directories below until a non-directory, an opaque marker, a
// whiteout or a redirect stops it.
func buildLowerIndex(dirs []lowerRef) (*lowerIndex, error) {
	x := &lowerIndex{dirs: dirs, subdirs: make(map[string]*subdir)}
	byName := make(map[string]int)
	stopped := make(map[string]bool)
	lists := readLowerDirs(dirs)
	for di, d := range dirs {
		ents, m, err := lists[di].ents, lists[di].markers, lists[di].err
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				continue
			}
			return nil, err
		}
		for _, e := range ents {
			if d.path == "" && e.name == StateDir || stopped[e.name] || m.isMarker(e.name) {
				continue
			}
			if _, ok := byName[e.name]; ok {
				// Only directories are still open for merging.
				if sd := x.subdirs[e.name]; sd != nil && e.mode == unix.S_IFDIR {
					sd.in = append(sd.in, uint16(di))
				} else {
					stopped[e.name] = true
				}
				continue
			}
			mode := e.mode
			if d.layer.meta != nil {
				if m, ok := d.layer.meta[joinPath(d.path, e.name)]; ok {
					mode = m.Mode & unix.S_IFMT // a device's placeholder file
				}
			}
			if mode == unix.S_IFDIR {
				x.subdirs[e.name] = &subdir{in: []uint16{uint16(di)}}
			} else {
				stopped[e.name] = true
			}
			byName[e.name] = len(x.entries)
			x.entries = append(x.entries, lowerEntry{name: e.name, ino: e.ino, mode: mode, top: uint16(di)})
		}
		// What this layer says about names applies to the layers below it.
		for name, rec := range m.records {
			if rec.Redirect != "" && !stopped[name] {
				if sd := x.subdirs[name]; sd != nil && sd.in[len(sd.in)-1] == uint16(di) {
					sd.redirect, sd.redirectAt = rec.Redirect, d.layer.idx
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
	slices.SortFunc(x.entries, func(a, b lowerEntry) int { return strings.Compare(a.name, b.name) })
	x.entries = slices.Clip(x.entries)
	return x, nil
}

// lowerDir is one lower directory's listing and markers.
type lowerDir struct {
	ents    []rawDirent
	markers *dirMarkers
	err     error
}

// indexReaders is how many lower directories are read at once. A deep
// stack means many directories, each a few system calls (open, getdents,
// a listxattr per subdirectory for overlayfs markers); the first lookup in
// the directory waits for all of them.
const indexReaders = 4

// readLowerDirs lists dirs and collects their markers, several at a time
// when there are many. It reads them all, also those below an opaque one
// that the merge will not use: listing them is what costs, not merging.
func readLowerDirs(dirs []lowerRef) []lowerDir {
	out := make([]lowerDir, len(dirs))
	read := func(i int) {
		d := dirs[i]
		out[i].ents, out[i].err = readDirAt(d.layer.fd, d.path)
		if out[i].err == nil {
			out[i].markers = markersOf(d, out[i].ents)
		}
	}
	if len(dirs) <= 2 {
		for i := range dirs {
			read(i)
		}
		return out
	}
	var next atomic.Int32
	var wg sync.WaitGroup
	for range min(indexReaders, len(dirs)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(dirs) {
					return
				}
				read(i)
			}
		})
	}
	wg.Wait()
	return out
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
// entry le of index x.
func (u *Union) childLowers(x *lowerIndex, le *lowerEntry) []lowerRef {
	sd := x.subdirs[le.name]
	if sd == nil {
		return nil
	}
	dirs := make([]lowerRef, 0, len(sd.in))
	for _, i := range sd.in {
		d := x.dirs[i]
		dirs = append(dirs, lowerRef{d.layer, joinPath(d.path, le.name)})
	}
	if sd.redirect != "" {
		dirs = append(dirs, u.probeLowers(sd.redirect, sd.redirectAt+1)...)
	}
	return dirs
}
