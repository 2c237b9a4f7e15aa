package fs

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/unionfs/unionfs/copyup"
	"github.com/unionfs/unionfs/layerdb"
)

// StateDir is the reserved directory at the root of every layer that holds
// the layer's union metadata (state.db) and, by default, the copy-up work
// directory. It is never visible through the mount.
const StateDir = ".unionfs"

// StateDBName is the bbolt database inside StateDir.
const StateDBName = "state.db"

// layer is one directory of the stack. Lower layers are immutable for the
// life of the mount, so everything cached about them stays true.
type layer struct {
	idx  int    // position in the stack: 0 is the top
	path string // absolute path, for messages
	fd   int    // O_PATH|O_DIRECTORY descriptor of the layer root
	dev  uint64 // st_dev of the root

	// records holds what the layer's own state database says, by
	// directory then by name. Empty for a plain directory. For lower layers it
	// is loaded once at mount; the upper keeps its live copy in Union.
	records map[string]map[string]layerdb.Record

	links linkGroups // hard-link groups, found on first need

	// meta holds what an image says about files that an unprivileged
	// unpack could not put on disk (owner, set-id bits, device nodes,
	// xattrs), by path; nil for most layers.
	meta map[string]layerdb.Meta
}

// openLayer opens dir as a layer root. The descriptor is O_PATH: it pins the
// directory and anchors every *at(2) call, so a rename of the layer's parent
// after mount cannot redirect us elsewhere.
func openLayer(dir string, idx int) (*layer, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("%s is not a directory", dir)
		}
		return nil, fmt.Errorf("open layer %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat layer %s: %w", dir, err)
	}
	return &layer{idx: idx, path: dir, fd: fd, dev: st.Dev}, nil
}

// loadRecords reads a lower layer's state database, if it has one, into
// memory and closes it again: the layer cannot change under the mount, and
// holding no lock lets an upper from one mount be a lower of several others.
func (l *layer) loadRecords() error {
	dbPath := path.Join(l.path, StateDir, StateDBName)
	var st unix.Stat_t
	if err := unix.Fstatat(l.fd, StateDir+"/"+StateDBName, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return nil
		}
		return fmt.Errorf("stat %s: %w", dbPath, err)
	}
	db, err := layerdb.Open(dbPath, layerdb.Options{ReadOnly: true})
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	defer db.Close()
	recs, err := db.Records()
	if err != nil {
		return fmt.Errorf("read %s: %w", dbPath, err)
	}
	l.records = groupRecords(recs)
	metas, err := db.Metas()
	if err != nil {
		return fmt.Errorf("read %s: %w", dbPath, err)
	}
	if len(metas) > 0 {
		l.meta = metas
	}
	return nil
}

// groupRecords indexes records by parent directory, so that a directory's
// whiteouts are found without scanning every record.
func groupRecords(recs map[string]layerdb.Record) map[string]map[string]layerdb.Record {
	out := make(map[string]map[string]layerdb.Record)
	for p, r := range recs {
		dir, name := splitPath(p)
		m := out[dir]
		if m == nil {
			m = make(map[string]layerdb.Record)
			out[dir] = m
		}
		m[name] = r
	}
	return out
}

// applyMeta puts what the image says about the file at p over its stat.
func (l *layer) applyMeta(p string, st *unix.Stat_t) {
	if l.meta == nil {
		return
	}
	if m, ok := l.meta[p]; ok {
		st.Uid, st.Gid, st.Mode, st.Rdev = m.UID, m.GID, m.Mode, m.Rdev
	}
}

// override is the copy-up override for the file at p, if the image has
// meta for it.
func (l *layer) override(p string) *copyup.Override {
	m, ok := l.meta[p]
	if !ok {
		return nil
	}
	return &copyup.Override{UID: m.UID, GID: m.GID, Mode: m.Mode, Rdev: m.Rdev, Xattrs: m.Xattrs}
}

// record returns what this layer says about name in directory dir.
func (l *layer) record(dir, name string) (layerdb.Record, bool) {
	r, ok := l.records[dir][name]
	return r, ok
}

// splitPath splits a layer-relative path into its parent and last element.
// The root is ("", "").
func splitPath(p string) (dir, name string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

// joinPath joins a layer-relative directory and a name.
func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// relPath turns a layer-relative path into something *at(2) accepts for the
// root itself.
func relPath(p string) string {
	if p == "" {
		return "."
	}
	return p
}
