package layerdb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Sentinel errors; test for them with errors.Is.
var (
	// ErrNotFound: no record or index entry for the key.
	ErrNotFound = errors.New("not found")
	// ErrLocked: Open timed out waiting for bbolt's file lock.
	ErrLocked = errors.New("database is in use by another process")
	// ErrCorrupt: not a valid bbolt file, truncated, or not laid out as a state database.
	ErrCorrupt = errors.New("database is corrupt or not a unionfs state database")
	// ErrVersion: a state database written by a newer format version.
	ErrVersion = errors.New("unsupported state database version")
	// ErrInvalidPath: a path that is not "" or clean and relative (see package
	// doc), or a MoveTreeChange whose source and destination overlap.
	ErrInvalidPath = errors.New("invalid path")
)

const (
	formatVersion  = 1
	defaultTimeout = 2 * time.Second
	fileMode       = 0o600
)

var (
	rootBucket    = []byte("unionfs.v1")
	rootPrefix    = []byte("unionfs.v") // any other unionfs.vN is a newer format
	versionKey    = []byte("version")
	pathsBucket   = []byte("paths")
	originsBucket = []byte("origins")
	indexBucket   = []byte("index")
)

// Options configure Open.
type Options struct {
	ReadOnly bool          // open O_RDONLY with a shared lock; never creates the file
	Timeout  time.Duration // bbolt flock timeout; 0 (or negative) means 2s. Never waits forever.
	NoSync   bool          // skip fsync on commit; for tests and benchmarks only
}

// dbFile is an open database file: a layer's state or the image store.
type dbFile struct {
	bdb  *bolt.DB
	path string
	kind string // "state" or "store", for messages
}

// Close closes the database, releasing its file lock.
func (f *dbFile) Close() error {
	if err := f.bdb.Close(); err != nil {
		return fmt.Errorf("close %s database %s: %w", f.kind, f.path, err)
	}
	return nil
}

// Path returns the path the database was opened with.
func (f *dbFile) Path() string { return f.path }

// openFile opens (creating it, unless opts.ReadOnly) and validates a
// database file of the given kind and format.
func openFile(path, kind string, opts Options, f *format) (dbFile, error) {
	check := f.validate
	if !opts.ReadOnly {
		created, err := f.ensure(path)
		if err != nil {
			return dbFile{}, fmt.Errorf("create %s database %s: %w", kind, path, err)
		}
		// A writable bbolt.Open reads the freelist page before we can check
		// that the file is not truncated (and faults if it is). A read-only
		// open does not, so validate that way first, for a clear error and
		// no fault; a file this call made needs no such care.
		if !created {
			ro := opts
			ro.ReadOnly = true
			bdb, err := openBoltFile(path, ro, check)
			if err == nil {
				err = bdb.Close()
			}
			if err != nil {
				return dbFile{}, fmt.Errorf("open %s database %s: %w", kind, path, err)
			}
		}
	}
	bdb, err := openBoltFile(path, opts, check)
	if err != nil {
		return dbFile{}, fmt.Errorf("open %s database %s: %w", kind, path, err)
	}
	return dbFile{bdb: bdb, path: path, kind: kind}, nil
}

// DB is an open layer state database.
type DB struct{ dbFile }

// Open opens or (unless opts.ReadOnly) creates the database at path; see the
// package doc for what is created and what is rejected.
func Open(path string, opts Options) (*DB, error) {
	f, err := openFile(path, "state", opts, stateFormat)
	if err != nil {
		return nil, err
	}
	return &DB{f}, nil
}

// openBoltFile opens path with bbolt and checks it with check. It never
// creates the file (bbolt would otherwise create and initialise a missing
// or empty one), and turns bbolt's panics and faults on a damaged file
// into ErrCorrupt.
func openBoltFile(path string, opts Options, check func(tx *bolt.Tx, size int64) error) (bdb *bolt.DB, err error) {
	var file *os.File
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			// Free the file lock. If bbolt.Open itself panicked it returned no DB:
			// unlock explicitly, since its memory map (leaked) keeps the open file
			// description, and with it the flock, alive after Close.
			if bdb != nil {
				bdb.Close()
			} else if file != nil {
				syscall.Flock(int(file.Fd()), syscall.LOCK_UN)
				file.Close()
			}
			bdb, err = nil, fmt.Errorf("%w: %v", ErrCorrupt, p)
		}
	}()
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	bdb, err = bolt.Open(path, fileMode, &bolt.Options{
		Timeout:  timeout,
		ReadOnly: opts.ReadOnly,
		NoSync:   opts.NoSync,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag&^os.O_CREATE, perm)
			if err != nil {
				return nil, err
			}
			// Checked here, on the descriptor bbolt will use, because bbolt
			// initialises a zero-length file as a fresh database.
			fi, err := f.Stat()
			switch {
			case err != nil:
			case !fi.Mode().IsRegular():
				err = fmt.Errorf("%w: not a regular file", ErrCorrupt)
			case fi.Size() == 0:
				err = fmt.Errorf("%w: file is empty", ErrCorrupt)
			}
			if err != nil {
				f.Close()
				return nil, err
			}
			file = f
			return f, nil
		},
	})
	if err != nil {
		return nil, classifyOpenError(path, err)
	}
	fi, err := file.Stat()
	if err == nil {
		err = bdb.View(func(tx *bolt.Tx) error { return check(tx, fi.Size()) })
	}
	if err != nil {
		bdb.Close() // the validation error is the one worth reporting
		return nil, err
	}
	return bdb, nil
}

// classifyOpenError maps bbolt's open errors onto ours. Errors from the OS
// (permissions, I/O, missing file) pass through; content errors become ErrCorrupt.
func classifyOpenError(path string, err error) error {
	var pe *fs.PathError
	var errno syscall.Errno
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return ErrLocked
	case errors.Is(err, ErrCorrupt):
		return err
	case errors.As(err, &pe) && pe.Path == path:
		return fmt.Errorf("%s: %w", pe.Op, pe.Err) // the caller already names the file
	case errors.As(err, &pe), errors.As(err, &errno):
		return err
	default: // bbolt's invalid meta, checksum, "file size too small", ...
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
}

// format describes one kind of database: its versioned root bucket, the
// sub-buckets a valid file has, and how its directory is made.
type format struct {
	root, prefix []byte // root bucket; any other prefix+N is another version
	version      uint32
	subs         [][]byte
	dirMode      os.FileMode
}

var stateFormat = &format{
	root: rootBucket, prefix: rootPrefix, version: formatVersion,
	subs:    [][]byte{pathsBucket, originsBucket, indexBucket},
	dirMode: 0o700,
}

// validate checks that tx sees a complete database of this format in a file
// of fileSize bytes.
func (f *format) validate(tx *bolt.Tx, fileSize int64) error {
	// bbolt does not check this itself and would fault reading past the end of the map.
	if hw := tx.Size(); fileSize < hw {
		return fmt.Errorf("%w: file has %d bytes but its pages extend to %d (truncated)", ErrCorrupt, fileSize, hw)
	}
	root := tx.Bucket(f.root)
	if root == nil {
		err := fmt.Errorf("%w: no %s bucket", ErrCorrupt, f.root)
		tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if bytes.HasPrefix(name, f.prefix) {
				err = fmt.Errorf("%w: found bucket %q, this build reads %s", ErrVersion, name, f.root)
			}
			return nil
		})
		return err
	}
	v := root.Get(versionKey)
	switch {
	case v == nil:
		return fmt.Errorf("%w: no version key", ErrCorrupt)
	case len(v) != 4 || binary.BigEndian.Uint32(v) == 0:
		return fmt.Errorf("%w: bad version key %x", ErrCorrupt, v)
	case binary.BigEndian.Uint32(v) != f.version:
		return fmt.Errorf("%w: version %d, this build reads %d", ErrVersion, binary.BigEndian.Uint32(v), f.version)
	}
	for _, name := range f.subs {
		if root.Bucket(name) == nil {
			return fmt.Errorf("%w: no %s bucket", ErrCorrupt, name)
		}
	}
	return nil
}

// ensure creates the database at path if there is no file there yet. It
// builds the database under a temporary name and links it into place, so
// that the path never holds a half-initialised database (see package doc).
func (f *format) ensure(path string) (created bool, err error) {
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		return false, err // nil if it exists: openFile validates it
	}
	dir := filepath.Dir(path)
	_, err = os.Stat(dir)
	newDir := errors.Is(err, fs.ErrNotExist)
	if err := os.MkdirAll(dir, f.dirMode); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return false, err
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // after a successful link this just drops the extra name
	err = f.init(tmpName)
	if err == nil {
		// bbolt wrote it without syncing its commit: one sync for all.
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, err
	}
	// Link, unlike rename, fails if another process created the database meanwhile;
	// then we use theirs.
	switch err := os.Link(tmpName, path); {
	case err == nil:
		created = true
	case !errors.Is(err, fs.ErrExist):
		return false, err
	}
	if err := syncDir(dir); err != nil {
		return false, err
	}
	if newDir {
		return created, syncDir(filepath.Dir(dir))
	}
	return created, nil
}

// init turns the empty file at name into a database of this format; the
// caller syncs it.
func (f *format) init(name string) error {
	bdb, err := bolt.Open(name, fileMode, &bolt.Options{Timeout: defaultTimeout, NoSync: true})
	if err != nil {
		return err
	}
	err = bdb.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucket(f.root)
		if err != nil {
			return err
		}
		for _, name := range f.subs {
			if _, err := root.CreateBucket(name); err != nil {
				return err
			}
		}
		return root.Put(versionKey, binary.BigEndian.AppendUint32(nil, f.version))
	})
	if cerr := bdb.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
