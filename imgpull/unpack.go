package imgpull

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unionfs/unionfs/layerdb"
	"github.com/unionfs/unionfs/whiteout"
)

// Defaults for Limits.
const (
	DefaultMaxBytes   = 32 << 30 // 32 GiB of uncompressed tar, and of unpacked file data
	DefaultMaxEntries = 1 << 20  // tar entries, whiteouts included
)

// Limits cap what one layer may make the unpacker do, against
// decompression, sparse-file and entry-count bombs. Zero means the default.
type Limits struct {
	// MaxBytes caps both the uncompressed tar stream and the sum of the
	// logical sizes of its regular files (a sparse file counts its full size).
	MaxBytes int64
	// MaxEntries caps the number of tar headers.
	MaxEntries int
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	return l
}

// UnpackOptions configure Unpack.
type UnpackOptions struct {
	Limits
	// Rootless records ownership, setuid/setgid bits and xattrs in the
	// layer's meta instead of putting them on disk (which a normal user
	// cannot). Pull sets it when not running as root.
	Rootless bool
	// NoSync skips the final syncfs; for tests.
	NoSync bool
}

// UnpackResult says what Unpack wrote besides files.
type UnpackResult struct {
	Entries int                       // tar headers read
	Bytes   int64                     // bytes of the uncompressed tar stream, to its end
	Records map[string]layerdb.Record // whiteouts and opaque directories
	Metas   map[string]layerdb.Meta   // metadata the directory cannot hold
}

// reservedDir is the layer's own state directory (fs.StateDir): a layer's
// tar may not create, replace or white out anything there.
const reservedDir = ".unionfs"

// StateDBPath is where a layer directory keeps its records and meta.
const StateDBPath = reservedDir + "/state.db"

// errSkip marks an entry that is ignored (a reserved path).
var errSkip = errors.New("skipped")

// Unpack extracts the layer tar read from r into the existing, empty
// directory dir, then writes the layer's whiteouts, opaque directories and
// meta to dir/.unionfs/state.db. It reads r to its end (past the tar's end
// marker) so that a digest computed over r covers every byte. See the
// package documentation for the rules it applies to hostile content.
func Unpack(r io.Reader, dir string, opts UnpackOptions) (*UnpackResult, error) {
	u, err := newUnpacker(dir, opts)
	if err != nil {
		return nil, err
	}
	defer u.close()
	lr := &limitReader{r: r, max: u.limits.MaxBytes}
	if err := u.run(tar.NewReader(lr)); err != nil {
		return nil, err
	}
	// Drain to EOF: trailing zero blocks, and anything after them.
	if _, err := io.Copy(io.Discard, lr); err != nil {
		return nil, fmt.Errorf("read layer: %w", err)
	}
	if err := u.finish(); err != nil {
		return nil, err
	}
	if err := u.writeState(dir); err != nil {
		return nil, err
	}
	if !opts.NoSync {
		if err := syncfs(dir); err != nil {
			return nil, fmt.Errorf("sync %s: %w", dir, err)
		}
	}
	return &UnpackResult{Entries: u.entries, Bytes: lr.n, Records: u.records, Metas: u.metas}, nil
}

// limitReader fails with ErrLimit once more than max bytes were read.
type limitReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > l.max {
		return n, fmt.Errorf("%w: uncompressed layer exceeds %d bytes", ErrLimit, l.max)
	}
	return n, err
}

type unpacker struct {
	root     int    // O_PATH descriptor of the layer root
	rootPath string // what /proc/self/fd says the root is
	limits   Limits
	rootless bool

	entries int
	data    int64 // logical bytes of regular files
	records map[string]layerdb.Record
	metas   map[string]layerdb.Meta
	// dirs holds each directory's header, applied once all entries are in
	// (so that creating children does not change its mtime and a read-only
	// mode does not stop the unpack); nil for a directory created implicitly.
	dirs map[string]*tar.Header
	buf  []byte
}

func newUnpacker(dir string, opts UnpackOptions) (*unpacker, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open layer directory %s: %w", dir, err)
	}
	u := &unpacker{
		root:     fd,
		limits:   opts.Limits.withDefaults(),
		rootless: opts.Rootless,
		records:  make(map[string]layerdb.Record),
		metas:    make(map[string]layerdb.Meta),
		dirs:     map[string]*tar.Header{"": nil},
		buf:      make([]byte, 128<<10),
	}
	if u.rootPath, err = fdPath(fd); err != nil {
		u.close()
		return nil, err
	}
	return u, nil
}

func (u *unpacker) close() { unix.Close(u.root) }

func fdPath(fd int) (string, error) {
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", fmt.Errorf("resolve descriptor: %w (is /proc mounted?)", err)
	}
	return p, nil
}

func (u *unpacker) run(tr *tar.Reader) error {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: read tar: %w", ErrInvalidLayer, err)
		}
		if u.entries++; u.entries > u.limits.MaxEntries {
			return fmt.Errorf("%w: layer has more than %d entries", ErrLimit, u.limits.MaxEntries)
		}
		if err := u.entry(hdr, tr); err != nil && !errors.Is(err, errSkip) {
			return fmt.Errorf("%s: %w", safeName(hdr.Name), err)
		}
	}
}

// safeName quotes a tar name for an error message.
func safeName(s string) string {
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return strconv.Quote(s)
}

// cleanName turns a tar path into a layer-relative path: leading slashes
// go (as GNU tar does), "." and ".." are resolved lexically, and a name
// that climbs above the root is refused. "" is the root.
func cleanName(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: NUL in name", ErrInvalidLayer)
	}
	p := path.Clean("/" + name)
	// Clean("/" + x) never climbs above "/": detect ".." lexically instead.
	if rel := path.Clean(strings.TrimLeft(name, "/")); rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%w: path climbs out of the layer", ErrInvalidLayer)
	}
	return strings.TrimPrefix(p, "/"), nil
}

func reserved(canon string) bool {
	return canon == reservedDir || strings.HasPrefix(canon, reservedDir+"/")
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func (u *unpacker) entry(hdr *tar.Header, tr *tar.Reader) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	kind, dir, target := whiteout.ParsePath(name)
	for c := range strings.SplitSeq(dir, "/") {
		if whiteout.IsReserved(c) {
			return errSkip // inside AUFS bookkeeping (".wh..wh.plnk/..."): no real entry lives there
		}
	}
	switch kind {
	case whiteout.Whiteout:
		fd, cdir, err := u.mkdirAll(dir)
		if err != nil {
			return err
		}
		unix.Close(fd)
		if p := join(cdir, target); !reserved(p) {
			u.records[p] = layerdb.Record{Opaque: true}
		}
		return nil
	case whiteout.Opaque:
		fd, cdir, err := u.mkdirAll(dir)
		if err != nil {
			return err
		}
		unix.Close(fd)
		u.records[cdir] = layerdb.Record{Opaque: true}
		return nil
	case whiteout.Meta:
		return nil // AUFS bookkeeping
	case whiteout.Invalid:
		return fmt.Errorf("%w: invalid whiteout name", ErrInvalidLayer)
	}
	if name == "" {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: the layer root must be a directory", ErrInvalidLayer)
		}
		u.dirs[""] = hdr
		return nil
	}
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeGNULongName, tar.TypeGNULongLink, tar.TypeXHeader:
		return nil
	case tar.TypeDir, tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse, tar.TypeSymlink,
		tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		return nil // unknown types (contiguous files, volume labels...) are ignored, as docker does
	}
	parent, base := path.Split(name)
	pfd, cparent, err := u.mkdirAll(strings.TrimSuffix(parent, "/"))
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	canon := join(cparent, base)
	if reserved(canon) {
		return errSkip
	}
	if err := u.clear(pfd, base, canon, hdr.Typeflag == tar.TypeDir); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return u.mkdir(pfd, base, canon, hdr)
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		return u.file(pfd, base, canon, hdr, tr)
	case tar.TypeSymlink:
		return u.symlink(pfd, base, canon, hdr)
	case tar.TypeLink:
		return u.link(pfd, base, canon, hdr)
	case tar.TypeChar, tar.TypeBlock:
		return u.device(pfd, base, canon, hdr)
	case tar.TypeFifo:
		return u.fifo(pfd, base, canon, hdr)
	}
	return nil
}

// openDir opens the directory rel of the layer with every symlink on the
// way resolved as if the layer root were "/" (RESOLVE_IN_ROOT): nothing can
// lead outside. It returns the descriptor and the directory's real
// layer-relative path, as the kernel resolved it.
func (u *unpacker) openDir(rel string) (int, string, error) {
	p := rel
	if p == "" {
		p = "."
	}
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	var fd int
	var err error
	for {
		fd, err = unix.Openat2(u.root, p, &how)
		if !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EAGAIN) {
			break
		}
	}
	if err != nil {
		return -1, "", err
	}
	real, err := fdPath(fd)
	if err != nil {
		unix.Close(fd)
		return -1, "", err
	}
	switch {
	case real == u.rootPath:
		return fd, "", nil
	case strings.HasPrefix(real, u.rootPath+"/"):
		return fd, real[len(u.rootPath)+1:], nil
	}
	unix.Close(fd)
	return -1, "", fmt.Errorf("%w: %s resolved outside the layer", ErrInvalidLayer, rel)
}

// mkdirAll opens the directory rel, creating it and its missing parents
// (mode 0755, owner root, as docker does) first.
func (u *unpacker) mkdirAll(rel string) (int, string, error) {
	fd, canon, err := u.openDir(rel)
	if !errors.Is(err, unix.ENOENT) {
		if err == nil && reserved(canon) {
			unix.Close(fd)
			return -1, "", errSkip
		}
		return fd, canon, err
	}
	if rel == "" {
		return -1, "", err
	}
	parent, base := path.Split(rel)
	pfd, cparent, err := u.mkdirAll(strings.TrimSuffix(parent, "/"))
	if err != nil {
		return -1, "", err
	}
	c := join(cparent, base)
	if reserved(c) {
		unix.Close(pfd)
		return -1, "", errSkip
	}
	err = unix.Mkdirat(pfd, base, 0o700)
	unix.Close(pfd)
	if err == nil {
		if _, ok := u.dirs[c]; !ok {
			u.dirs[c] = nil
		}
	} else if !errors.Is(err, unix.EEXIST) {
		return -1, "", err
	}
	fd, canon, err = u.openDir(rel)
	if err != nil {
		// EEXIST above and still missing: a dangling symlink is in the way.
		return -1, "", fmt.Errorf("%w: directory %s: %w", ErrInvalidLayer, safeName(rel), err)
	}
	return fd, canon, nil
}

// clear makes room for a new entry at base: a later entry replaces an
// earlier one of the same name (last wins, as docker), except that a
// directory over a directory merges. Nothing is ever written through the
// old entry: a file is unlinked, never truncated, so a hard link to it
// keeps the old content.
func (u *unpacker) clear(pfd int, base, canon string, isDir bool) error {
	var st unix.Stat_t
	err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	delete(u.metas, canon)
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if isDir {
			return nil
		}
		if err := u.removeAll(canon); err != nil {
			return err
		}
		for p := range u.metas {
			if strings.HasPrefix(p, canon+"/") {
				delete(u.metas, p)
			}
		}
		for p := range u.dirs {
			if p == canon || strings.HasPrefix(p, canon+"/") {
				delete(u.dirs, p)
			}
		}
		return nil
	}
	return unix.Unlinkat(pfd, base, 0)
}

// removeAll removes the subtree at the canonical (symlink-free) path canon.
// os.Root never follows a symlink out of the layer.
func (u *unpacker) removeAll(canon string) error {
	r, err := os.OpenRoot(u.rootPath)
	if err != nil {
		return err
	}
	defer r.Close()
	return r.RemoveAll(canon)
}

func (u *unpacker) mkdir(pfd int, base, canon string, hdr *tar.Header) error {
	if err := unix.Mkdirat(pfd, base, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	u.dirs[canon] = hdr
	return nil
}

func (u *unpacker) file(pfd int, base, canon string, hdr *tar.Header, tr *tar.Reader) error {
	if hdr.Size < 0 || hdr.Size > u.limits.MaxBytes-u.data {
		return fmt.Errorf("%w: unpacked files exceed %d bytes", ErrLimit, u.limits.MaxBytes)
	}
	u.data += hdr.Size
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), canon)
	err = u.copySparse(f, tr, hdr.Size)
	if err == nil {
		err = u.attrs(fd, pfd, base, canon, hdr, unix.S_IFREG)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// copySparse copies size bytes from r to f, seeking over blocks of zeros so
// that sparse files (and zero-filled bombs that got under the limits) stay
// sparse on disk.
func (u *unpacker) copySparse(f *os.File, r io.Reader, size int64) error {
	var zeros [128 << 10]byte
	var written int64
	for written < size {
		n, err := io.ReadFull(r, u.buf[:min(int64(len(u.buf)), size-written)])
		if n > 0 {
			if bytes.Equal(u.buf[:n], zeros[:n]) {
				if _, serr := f.Seek(int64(n), io.SeekCurrent); serr != nil {
					return serr
				}
			} else if _, werr := f.Write(u.buf[:n]); werr != nil {
				return werr
			}
			written += int64(n)
		}
		if err != nil {
			return fmt.Errorf("%w: read file data: %w", ErrInvalidLayer, err)
		}
	}
	return f.Truncate(size)
}

func (u *unpacker) symlink(pfd int, base, canon string, hdr *tar.Header) error {
	if hdr.Linkname == "" || strings.IndexByte(hdr.Linkname, 0) >= 0 {
		return fmt.Errorf("%w: bad symlink target", ErrInvalidLayer)
	}
	// The target is content: it is stored as is and never followed here
	// except by openDir, inside the root.
	if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
		return err
	}
	return u.attrs(-1, pfd, base, canon, hdr, unix.S_IFLNK)
}

func (u *unpacker) link(pfd int, base, canon string, hdr *tar.Header) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("hard link target: %w", err)
	}
	if target == "" {
		return fmt.Errorf("%w: hard link to the layer root", ErrInvalidLayer)
	}
	tparent, tbase := path.Split(target)
	tfd, ctparent, err := u.openDir(strings.TrimSuffix(tparent, "/"))
	if err != nil {
		return fmt.Errorf("%w: hard link target %s: %w", ErrInvalidLayer, safeName(hdr.Linkname), err)
	}
	defer unix.Close(tfd)
	ctarget := join(ctparent, tbase)
	if reserved(ctarget) {
		return fmt.Errorf("%w: hard link into %s", ErrInvalidLayer, reservedDir)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(tfd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("%w: hard link target %s: %w", ErrInvalidLayer, safeName(hdr.Linkname), err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("%w: hard link to a directory", ErrInvalidLayer)
	}
	if ctarget == canon {
		return nil // clear() would have removed the target: nothing to link to
	}
	if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
		return err
	}
	if m, ok := u.metas[ctarget]; ok {
		u.metas[canon] = m
	}
	return nil
}

// device records a character or block device in meta and leaves an empty,
// unreadable regular file as its placeholder: device nodes are never
// created, not even by root.
func (u *unpacker) device(pfd int, base, canon string, hdr *tar.Header) error {
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	typ := uint32(unix.S_IFCHR)
	if hdr.Typeflag == tar.TypeBlock {
		typ = unix.S_IFBLK
	}
	m := u.meta(hdr, typ)
	m.Rdev = unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	u.metas[canon] = m
	return setTimes(pfd, base, hdr)
}

func (u *unpacker) fifo(pfd int, base, canon string, hdr *tar.Header) error {
	if err := unix.Mknodat(pfd, base, unix.S_IFIFO|0o600, 0); err != nil {
		return err
	}
	return u.attrs(-1, pfd, base, canon, hdr, unix.S_IFIFO)
}

// meta is what the header says about an entry of type typ.
func (u *unpacker) meta(hdr *tar.Header, typ uint32) layerdb.Meta {
	return layerdb.Meta{
		UID:    uint32(hdr.Uid),
		GID:    uint32(hdr.Gid),
		Mode:   typ | uint32(hdr.Mode)&0o7777,
		Xattrs: xattrsOf(hdr),
	}
}

func xattrsOf(hdr *tar.Header) map[string][]byte {
	var x map[string][]byte
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && name != "" && len(name) <= 255 && len(v) <= 64<<10 {
			if x == nil {
				x = make(map[string][]byte)
			}
			x[name] = []byte(v)
		}
	}
	return x
}

// diskXattr reports whether an image xattr may be set on the layer's
// files: never the overlay markers, which would change what the union
// shows (they are kept in meta).
func diskXattr(name string) bool {
	return !strings.HasPrefix(name, "trusted.overlay.") && !strings.HasPrefix(name, "user.overlay.") &&
		!strings.HasPrefix(name, "user.fuseoverlayfs.")
}

// attrs applies the header's owner, mode, xattrs and times to a new entry:
// through fd when it is open (regular files, directories), else by name in
// pfd. Rootless, and for what cannot go on disk, it records meta instead.
func (u *unpacker) attrs(fd, pfd int, base, canon string, hdr *tar.Header, typ uint32) error {
	perm := uint32(hdr.Mode) & 0o7777
	m := u.meta(hdr, typ)
	needMeta := u.rootless
	if u.rootless {
		// The union serves owner and mode from meta. On disk the entry stays
		// usable by the user serving it (and collecting it later), and keeps
		// no setuid/setgid bit.
		perm = perm&^0o6000 | 0o400
		if typ == unix.S_IFDIR {
			perm |= 0o700
		}
	} else {
		var err error
		if fd >= 0 {
			err = unix.Fchown(fd, hdr.Uid, hdr.Gid)
		} else {
			err = unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return fmt.Errorf("chown: %w", err)
		}
		for name, v := range m.Xattrs {
			if typ == unix.S_IFLNK || typ == unix.S_IFIFO || !diskXattr(name) || setXattr(fd, name, v) != nil {
				needMeta = true // kept in meta, served by the union
			}
		}
	}
	if typ != unix.S_IFLNK {
		var err error
		if fd >= 0 {
			err = unix.Fchmod(fd, perm)
		} else {
			err = unix.Fchmodat(pfd, base, perm, 0)
		}
		if err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	if needMeta {
		u.metas[canon] = m
	}
	if hdr.ModTime.IsZero() {
		return nil
	}
	if fd >= 0 {
		return unix.Futimes(fd, timevals(hdr))
	}
	return setTimes(pfd, base, hdr)
}

func setXattr(fd int, name string, v []byte) error {
	if fd < 0 {
		return unix.ENOTSUP // only through an open file: never by a path
	}
	return unix.Fsetxattr(fd, name, v, 0)
}

func times(hdr *tar.Header) (atime, mtime time.Time) {
	mtime = hdr.ModTime
	atime = hdr.AccessTime
	if atime.IsZero() {
		atime = mtime
	}
	return atime, mtime
}

func timevals(hdr *tar.Header) []unix.Timeval {
	a, m := times(hdr)
	return []unix.Timeval{unix.NsecToTimeval(a.UnixNano()), unix.NsecToTimeval(m.UnixNano())}
}

func setTimes(pfd int, base string, hdr *tar.Header) error {
	a, m := times(hdr)
	ts := []unix.Timespec{unix.NsecToTimespec(a.UnixNano()), unix.NsecToTimespec(m.UnixNano())}
	return unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// finish gives every directory its mode, owner, xattrs and times, deepest
// first, once nothing more is created in it.
func (u *unpacker) finish() error {
	paths := make([]string, 0, len(u.dirs))
	for p := range u.dirs {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	slices.Reverse(paths)
	for _, p := range paths {
		if err := u.fixDir(p, u.dirs[p]); err != nil {
			return fmt.Errorf("directory %s: %w", safeName(p), err)
		}
	}
	return nil
}

func (u *unpacker) fixDir(canon string, hdr *tar.Header) error {
	if hdr == nil {
		hdr = &tar.Header{Typeflag: tar.TypeDir, Mode: 0o755}
	}
	p := canon
	if p == "" {
		p = "."
	}
	fd, err := unix.Openat2(u.root, p, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV,
	})
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
		return nil // replaced by a later entry
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return u.attrs(fd, -1, "", canon, hdr, unix.S_IFDIR)
}

// writeState stores the layer's records and meta in its state database,
// in one transaction. A layer without either gets no database.
func (u *unpacker) writeState(dir string) error {
	if len(u.records) == 0 && len(u.metas) == 0 {
		return nil
	}
	// Reserved names were skipped, so nothing of the layer's is there.
	if _, err := os.Lstat(filepath.Join(dir, reservedDir)); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s exists in the unpacked layer", ErrInvalidLayer, reservedDir)
	}
	changes := make([]layerdb.Change, 0, len(u.records)+len(u.metas))
	for _, p := range slices.Sorted(maps.Keys(u.records)) {
		changes = append(changes, layerdb.PutChange(p, u.records[p]))
	}
	for _, p := range slices.Sorted(maps.Keys(u.metas)) {
		changes = append(changes, layerdb.MetaChange(p, u.metas[p]))
	}
	db, err := layerdb.Open(filepath.Join(dir, StateDBPath), layerdb.Options{NoSync: true})
	if err != nil {
		return err
	}
	err = db.Apply(changes...)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncfs flushes the filesystem holding dir: one call for every file of
// the layer, before it is recorded as complete.
func syncfs(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}
