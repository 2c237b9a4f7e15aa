package imgpull

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unionfs/unionfs/layerdb"
	"github.com/unionfs/unionfs/whiteout"
)

// DiffOptions configure Diff.
type DiffOptions struct {
	// Lowers are the layer directories under the upper, topmost first. They
	// are read only for renamed directories: a rename is recorded as a
	// redirect to the old path, which an OCI layer cannot express, so the
	// directory's whole merged content is written at its new path. Without
	// Lowers, an upper with a renamed directory is an error.
	Lowers []string
	// StateDB, if set, is read instead of the upper's own state database:
	// a copy taken from a live mount, whose server holds the database.
	StateDB string
}

// ErrNeedLowers: Diff met a renamed directory and was given no lower layers.
var ErrNeedLowers = errors.New("the upper has a renamed directory: its lower layers are needed")

// Diff writes the changes recorded in the upper directory as an OCI layer
// tar to w: every entry of the upper (its reserved .unionfs directory
// aside), each deletion recorded in its state database as a ".wh.NAME"
// whiteout, each opaque directory with a ".wh..wh..opq" marker, and each
// renamed directory as its full content at the new path (marked opaque)
// plus a whiteout at the old one. Within a directory, the opaque marker
// comes first, then whiteouts, then entries by name. Owners, modes, device
// numbers and xattrs recorded in a layer's meta win over the disk's.
//
// The upper must not be in use by a mount (its database is locked then),
// unless o.StateDB names a copy of its database.
func Diff(w io.Writer, upper string, o DiffOptions) error {
	d := &differ{tw: tar.NewWriter(w), links: make(map[[2]uint64]string)}
	defer d.close()
	for i, dir := range append([]string{upper}, o.Lowers...) {
		dbPath := filepath.Join(dir, StateDBPath)
		if i == 0 && o.StateDB != "" {
			dbPath = o.StateDB
		}
		l, err := openDiffLayer(dir, dbPath)
		if err != nil {
			return err
		}
		d.layers = append(d.layers, l)
	}
	up := d.layers[0]
	if rec, ok := up.records[""]; ok && rec.Opaque {
		if err := d.marker("", whiteout.OpaqueName); err != nil {
			return err
		}
	}
	if err := d.walkUpper(""); err != nil {
		return err
	}
	// Whiteouts whose parent directory is not in the upper.
	for _, p := range slices.Sorted(func(yield func(string) bool) {
		for p := range up.records {
			if !yield(p) {
				return
			}
		}
	}) {
		rec := up.records[p]
		dir, name := splitPath(p)
		if !rec.Opaque || p == "" || d.visited(dir) {
			continue
		}
		if _, err := up.root.Lstat(relOrDot(dir)); !errors.Is(err, fs.ErrNotExist) {
			continue // under a non-directory, or unreadable: nothing to delete there
		}
		if err := d.marker(dir, whiteout.Name(name)); err != nil {
			return err
		}
	}
	return d.tw.Close()
}

type diffLayer struct {
	dir      string
	root     *os.Root
	records  map[string]layerdb.Record
	children map[string][]string // record paths by parent directory
	metas    map[string]layerdb.Meta
}

func openDiffLayer(dir, dbPath string) (*diffLayer, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	l := &diffLayer{dir: dir, root: root, children: make(map[string][]string)}
	if _, err := os.Lstat(dbPath); err == nil {
		db, err := layerdb.Open(dbPath, layerdb.Options{ReadOnly: true, Timeout: 500 * time.Millisecond})
		if errors.Is(err, layerdb.ErrLocked) {
			root.Close()
			return nil, fmt.Errorf("%s is in use by a mount: unmount it first (unionfs umount)", dir)
		}
		if err != nil {
			root.Close()
			return nil, err
		}
		l.records, err = db.Records()
		if err == nil {
			l.metas, err = db.Metas()
		}
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			root.Close()
			return nil, err
		}
	}
	for p := range l.records {
		if p != "" {
			dir, name := splitPath(p)
			l.children[dir] = append(l.children[dir], name)
		}
	}
	return l, nil
}

type differ struct {
	tw     *tar.Writer
	layers []*diffLayer // the upper, then the lowers topmost first
	links  map[[2]uint64]string
	visits map[string]bool
}

func (d *differ) close() {
	for _, l := range d.layers {
		l.root.Close()
	}
}

func (d *differ) visit(p string) {
	if d.visits == nil {
		d.visits = make(map[string]bool)
	}
	d.visits[p] = true
}

func (d *differ) visited(p string) bool { return d.visits[p] }

func splitPath(p string) (dir, name string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

func relOrDot(p string) string {
	if p == "" {
		return "."
	}
	return p
}

// list returns the names in directory p of layer l, sorted, without the
// reserved state directory at the layer root.
func (l *diffLayer) list(p string) ([]fs.DirEntry, error) {
	f, err := l.root.Open(relOrDot(p))
	if err != nil {
		return nil, err
	}
	ents, err := f.ReadDir(-1)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	ents = slices.DeleteFunc(ents, func(e fs.DirEntry) bool { return p == "" && e.Name() == reservedDir })
	slices.SortFunc(ents, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return ents, nil
}

// marker writes an empty whiteout or opaque marker in dir.
func (d *differ) marker(dir, name string) error {
	return d.tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     join(dir, name),
		Mode:     0o644,
		ModTime:  time.Unix(0, 0),
		Format:   tar.FormatPAX,
	})
}

// walkUpper writes the upper's directory p: markers, then entries.
func (d *differ) walkUpper(p string) error {
	d.visit(p)
	up := d.layers[0]
	ents, err := up.list(p)
	if err != nil {
		return err
	}
	present := make(map[string]bool, len(ents))
	for _, e := range ents {
		present[e.Name()] = true
	}
	var whiteouts []string
	for _, name := range up.children[p] {
		if up.records[join(p, name)].Opaque && !present[name] {
			whiteouts = append(whiteouts, name)
		}
	}
	slices.Sort(whiteouts)
	for _, name := range whiteouts {
		if err := d.marker(p, whiteout.Name(name)); err != nil {
			return err
		}
	}
	for _, e := range ents {
		child := join(p, e.Name())
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if done, err := d.diskMarker(p, e.Name(), fi); err != nil {
			return err
		} else if done {
			continue
		}
		if !fi.IsDir() {
			if err := d.entry(up, child, child, fi); err != nil {
				return err
			}
			continue
		}
		if err := d.entry(up, child, child, fi); err != nil {
			return err
		}
		rec := up.records[child]
		switch {
		case rec.Redirect != "":
			if len(d.layers) == 1 {
				return fmt.Errorf("%s (%s was %s): %w; give them with --lower or --image", up.dir, child, rec.Redirect, ErrNeedLowers)
			}
			if err := d.marker(child, whiteout.OpaqueName); err != nil {
				return err
			}
			srcs := append([]src{{0, child}}, d.probe(rec.Redirect, 1)...)
			if err := d.walkMerged(child, srcs); err != nil {
				return err
			}
		case rec.Opaque:
			if err := d.marker(child, whiteout.OpaqueName); err != nil {
				return err
			}
			fallthrough
		default:
			if err := d.walkUpper(child); err != nil {
				return err
			}
		}
	}
	return nil
}

// diskMarker writes the whiteout forms other tools leave on disk in an
// upper (OCI ".wh." files, overlayfs 0:0 character devices) as OCI
// markers. It reports whether name was such a marker.
func (d *differ) diskMarker(dir, name string, fi fs.FileInfo) (bool, error) {
	if whiteout.IsReserved(name) {
		switch kind, target := whiteout.Parse(name); kind {
		case whiteout.Whiteout:
			return true, d.marker(dir, whiteout.Name(target))
		case whiteout.Opaque:
			return true, d.marker(dir, whiteout.OpaqueName)
		}
		return true, nil
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && whiteout.IsOverlayWhiteout(st.Mode, uint64(st.Rdev)) {
		return true, d.marker(dir, whiteout.Name(name))
	}
	return false, nil
}

// src is a directory of one layer that contributes to a merged directory.
type src struct {
	layer int
	path  string
}

// probe finds the directories at p in the layers from index from down, as
// the mount does for a redirected directory: it stops at a non-directory,
// a whiteout or an opaque marker, and follows further redirects.
func (d *differ) probe(p string, from int) []src {
	var out []src
	for k := from; k < len(d.layers); k++ {
		l := d.layers[k]
		fi, err := l.root.Lstat(relOrDot(p))
		isDir := err == nil && fi.IsDir()
		if err == nil && !isDir {
			break
		}
		dir, name := splitPath(p)
		if _, err := l.root.Lstat(join(dir, whiteout.Name(name))); err == nil {
			break
		}
		if isDir {
			out = append(out, src{k, p})
			if _, err := l.root.Lstat(join(p, whiteout.OpaqueName)); err == nil {
				break
			}
		}
		if rec, ok := l.records[p]; ok {
			if rec.Opaque {
				break
			}
			if rec.Redirect != "" && isDir {
				p = rec.Redirect
			}
		}
	}
	return out
}

type mergedEntry struct {
	name  string
	layer *diffLayer
	path  string // in layer
	fi    fs.FileInfo
	dirs  []src
}

// merge lists the union of the directories srcs (topmost first) with the
// mount's rules: a higher entry hides a lower one, directories merge
// until a whiteout, opaque marker or non-directory stops them, and a
// redirect continues below at another path.
func (d *differ) merge(srcs []src) ([]*mergedEntry, error) {
	byName := make(map[string]*mergedEntry)
	hidden := make(map[string]bool) // for the layers below the current one
	for _, s := range srcs {
		l := d.layers[s.layer]
		ents, err := l.list(s.path)
		if err != nil {
			return nil, err
		}
		opaque := false
		var hides []string
		for _, e := range ents {
			name := e.Name()
			if whiteout.IsReserved(name) {
				switch kind, target := whiteout.Parse(name); kind {
				case whiteout.Whiteout:
					hides = append(hides, target)
				case whiteout.Opaque:
					opaque = true
				}
				continue
			}
			fi, err := e.Info()
			if err != nil {
				return nil, err
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && whiteout.IsOverlayWhiteout(st.Mode, uint64(st.Rdev)) {
				hides = append(hides, name)
				continue
			}
			if hidden[name] {
				continue
			}
			p := join(s.path, name)
			me := byName[name]
			if me == nil {
				me = &mergedEntry{name: name, layer: l, path: p, fi: fi}
				byName[name] = me
			}
			if !fi.IsDir() || !me.fi.IsDir() {
				hides = append(hides, name)
				continue
			}
			me.dirs = append(me.dirs, src{s.layer, p})
			if rec := l.records[p]; rec.Redirect != "" {
				me.dirs = append(me.dirs, d.probe(rec.Redirect, s.layer+1)...)
				hides = append(hides, name)
			}
		}
		for _, name := range l.children[s.path] {
			if l.records[join(s.path, name)].Opaque {
				hides = append(hides, name)
			}
		}
		for _, name := range hides {
			hidden[name] = true
		}
		if opaque {
			break
		}
	}
	out := make([]*mergedEntry, 0, len(byName))
	for _, me := range byName {
		out = append(out, me)
	}
	slices.SortFunc(out, func(a, b *mergedEntry) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// walkMerged writes the full merged content of the directories srcs at
// tarDir.
func (d *differ) walkMerged(tarDir string, srcs []src) error {
	d.visit(tarDir)
	ents, err := d.merge(srcs)
	if err != nil {
		return err
	}
	for _, me := range ents {
		name := join(tarDir, me.name)
		if err := d.entry(me.layer, me.path, name, me.fi); err != nil {
			return err
		}
		if me.fi.IsDir() {
			if err := d.walkMerged(name, me.dirs); err != nil {
				return err
			}
		}
	}
	return nil
}

// entry writes one entry of layer l at path p under the tar name name.
func (d *differ) entry(l *diffLayer, p, name string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("stat %s: no system data", p)
	}
	mode, uid, gid, rdev := st.Mode, st.Uid, st.Gid, uint64(st.Rdev)
	var xattrs map[string][]byte
	m, hasMeta := l.metas[p]
	if hasMeta {
		mode, uid, gid, rdev, xattrs = m.Mode, m.UID, m.GID, m.Rdev, m.Xattrs
		if mode&unix.S_IFMT == 0 {
			mode |= st.Mode & unix.S_IFMT
		}
	}
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(mode & 0o7777),
		Uid:     int(uid),
		Gid:     int(gid),
		ModTime: time.Unix(st.Mtim.Unix()),
		Format:  tar.FormatPAX,
	}
	var f *os.File
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
	case unix.S_IFREG:
		key := [2]uint64{uint64(st.Dev), st.Ino}
		if first, ok := d.links[key]; ok && st.Nlink > 1 {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			return d.tw.WriteHeader(hdr)
		}
		if st.Nlink > 1 {
			d.links[key] = name
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
	case unix.S_IFLNK:
		target, err := l.root.Readlink(p)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if mode&unix.S_IFMT == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(rdev)), int64(unix.Minor(rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return nil // sockets are not part of an image, as in docker
	}
	if hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeDir {
		var err error
		if f, err = l.root.Open(p); err != nil {
			return err
		}
		defer f.Close()
		if !hasMeta {
			if xattrs, err = fileXattrs(f); err != nil {
				return fmt.Errorf("xattrs of %s: %w", p, err)
			}
		}
	}
	for k, v := range xattrs {
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = make(map[string]string)
		}
		hdr.PAXRecords["SCHILY.xattr."+k] = string(v)
	}
	if err := d.tw.WriteHeader(hdr); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
		return nil
	}
	if n, err := io.CopyN(d.tw, f, hdr.Size); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s shrank from %d to %d bytes while being read", p, hdr.Size, n)
		}
		return err
	}
	return nil
}

// fileXattrs reads the xattrs an image should carry: not the overlay
// markers, not the host's SELinux label.
func fileXattrs(f *os.File) (map[string][]byte, error) {
	fd := int(f.Fd())
	buf := make([]byte, 4096)
	n, err := unix.Flistxattr(fd, buf)
	if errors.Is(err, unix.ERANGE) {
		if n, err = unix.Flistxattr(fd, nil); err == nil {
			buf = make([]byte, n)
			n, err = unix.Flistxattr(fd, buf)
		}
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out map[string][]byte
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" || !diskXattr(name) || name == "security.selinux" {
			continue
		}
		v := make([]byte, 64<<10)
		k, err := unix.Fgetxattr(fd, name, v)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = make(map[string][]byte)
		}
		out[name] = v[:k]
	}
	return out, nil
}
