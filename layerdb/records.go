package layerdb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Record is what a layer says about one path.
type Record struct {
	// Opaque: layers below this one contribute nothing at this path or beneath it.
	// If this layer has no entry at the path, the record acts as a whiteout (deletion);
	// if it has a directory there, the directory is opaque.
	Opaque bool
	// Redirect, if non-empty, is the path (relative to the layer roots) at which layers
	// below this one are consulted for this directory instead of its own path
	// (as overlayfs redirect_dir).
	Redirect string
}

const (
	flagOpaque   = 1 << 0
	flagRedirect = 1 << 1
)

func encodeRecord(r Record) []byte {
	var flags byte
	if r.Opaque {
		flags |= flagOpaque
	}
	if r.Redirect != "" {
		flags |= flagRedirect
	}
	return append([]byte{flags}, r.Redirect...)
}

// decodeRecord is strict so that the encoding stays canonical and a value we
// do not understand (e.g. from a newer build) is never half-read.
func decodeRecord(b []byte) (Record, error) {
	if len(b) == 0 {
		return Record{}, fmt.Errorf("%w: empty record", ErrCorrupt)
	}
	flags, rest := b[0], b[1:]
	if unknown := flags &^ (flagOpaque | flagRedirect); unknown != 0 {
		return Record{}, fmt.Errorf("%w: record has unknown flags %#x", ErrCorrupt, unknown)
	}
	r := Record{Opaque: flags&flagOpaque != 0}
	switch {
	case flags&flagRedirect == 0 && len(rest) != 0:
		return Record{}, fmt.Errorf("%w: record has %d trailing bytes", ErrCorrupt, len(rest))
	case flags&flagRedirect != 0 && (len(rest) == 0 || !validPath(string(rest))):
		return Record{}, fmt.Errorf("%w: record has bad redirect %q", ErrCorrupt, rest)
	}
	r.Redirect = string(rest)
	return r, nil
}

// validPath reports whether p is "" or a clean relative path "a/b/c".
func validPath(p string) bool {
	if p == "" {
		return true
	}
	if strings.IndexByte(p, 0) >= 0 {
		return false
	}
	for c := range strings.SplitSeq(p, "/") {
		if c == "" || c == "." || c == ".." {
			return false
		}
	}
	return true
}

func checkPath(p string) error {
	if !validPath(p) {
		return fmt.Errorf("%w %q", ErrInvalidPath, p)
	}
	return nil
}

// pathKey is the bbolt key of p: "/" + p, since bbolt rejects the empty key.
func pathKey(p string) []byte { return append([]byte{'/'}, p...) }

func inoKey(ino uint64) []byte { return binary.BigEndian.AppendUint64(nil, ino) }

// within reports whether p is in the subtree of dir.
func within(p, dir string) bool {
	return dir == "" || p == dir || strings.HasPrefix(p, dir+"/")
}

// subtreeKeys returns copies of the keys (and values) in the subtree of p.
// Copies, because bbolt's slices are not valid across the writes that follow.
func subtreeKeys(b *bolt.Bucket, p string) (keys, vals [][]byte) {
	prefix := pathKey(p)
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		// The prefix range of "/a/b" also holds "/a/bc" and "/a/b!": not ours.
		if p == "" || len(k) == len(prefix) || k[len(prefix)] == '/' {
			keys = append(keys, bytes.Clone(k))
			vals = append(vals, bytes.Clone(v))
		}
	}
	return keys, vals
}

func deleteKeys(b *bolt.Bucket, keys [][]byte) error {
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// buckets are the sub-buckets of the root bucket inside one transaction.
type buckets struct{ paths, origins, index *bolt.Bucket }

func getBuckets(tx *bolt.Tx) (buckets, error) {
	root := tx.Bucket(rootBucket)
	if root == nil {
		return buckets{}, fmt.Errorf("%w: no %s bucket", ErrCorrupt, rootBucket)
	}
	b := buckets{root.Bucket(pathsBucket), root.Bucket(originsBucket), root.Bucket(indexBucket)}
	if b.paths == nil || b.origins == nil || b.index == nil {
		return buckets{}, fmt.Errorf("%w: missing sub-bucket", ErrCorrupt)
	}
	return b, nil
}

// Change is one modification for Apply. Build it with the *Change functions;
// the zero Change is invalid. Argument errors surface from Apply.
type Change struct {
	apply func(buckets) error
}

func badChange(err error) Change { return Change{func(buckets) error { return err }} }

// PutChange creates or replaces the record at path.
func PutChange(path string, r Record) Change {
	if err := checkPath(path); err != nil {
		return badChange(fmt.Errorf("put: %w", err))
	}
	if r.Redirect != "" && !validPath(r.Redirect) {
		return badChange(fmt.Errorf("put %q: redirect: %w %q", path, ErrInvalidPath, r.Redirect))
	}
	return Change{func(b buckets) error { return b.paths.Put(pathKey(path), encodeRecord(r)) }}
}

// DeleteChange removes the record at path, if any.
func DeleteChange(path string) Change {
	if err := checkPath(path); err != nil {
		return badChange(fmt.Errorf("delete: %w", err))
	}
	return Change{func(b buckets) error { return b.paths.Delete(pathKey(path)) }}
}

// DeleteTreeChange removes the records at and beneath path ("" means all).
func DeleteTreeChange(path string) Change {
	if err := checkPath(path); err != nil {
		return badChange(fmt.Errorf("delete tree: %w", err))
	}
	return Change{func(b buckets) error {
		keys, _ := subtreeKeys(b.paths, path)
		return deleteKeys(b.paths, keys)
	}}
}

// MoveTreeChange moves the record at oldPath and all records beneath oldPath/
// to the same relative places beneath newPath, replacing (deleting first) any
// records at or beneath newPath, as rename(2) replaces its target. Moving a
// path onto itself is a no-op; moving it into its own subtree or onto one of
// its ancestors is ErrInvalidPath (rename(2) rejects those too).
func MoveTreeChange(oldPath, newPath string) Change {
	for _, p := range []string{oldPath, newPath} {
		if err := checkPath(p); err != nil {
			return badChange(fmt.Errorf("move tree: %w", err))
		}
	}
	if oldPath == newPath {
		return Change{func(buckets) error { return nil }}
	}
	if within(newPath, oldPath) || within(oldPath, newPath) {
		return badChange(fmt.Errorf("move tree %q to %q: %w: source and destination overlap",
			oldPath, newPath, ErrInvalidPath))
	}
	return Change{func(b buckets) error {
		oldKeys, vals := subtreeKeys(b.paths, oldPath)
		newKeys, _ := subtreeKeys(b.paths, newPath)
		if err := deleteKeys(b.paths, append(newKeys, oldKeys...)); err != nil {
			return err
		}
		oldLen, newPrefix := len(pathKey(oldPath)), pathKey(newPath)
		for i, k := range oldKeys {
			if err := b.paths.Put(append(bytes.Clone(newPrefix), k[oldLen:]...), vals[i]); err != nil {
				return err
			}
		}
		return nil
	}}
}

// OriginChange records that the upper file with inode upperIno has union inode unionIno.
func OriginChange(upperIno, unionIno uint64) Change {
	return Change{func(b buckets) error { return b.origins.Put(inoKey(upperIno), inoKey(unionIno)) }}
}

// DeleteOriginChange removes the origin of upperIno, if any.
func DeleteOriginChange(upperIno uint64) Change {
	return Change{func(b buckets) error { return b.origins.Delete(inoKey(upperIno)) }}
}

// IndexChange records the index entry (an upper-relative path) of union inode unionIno.
func IndexChange(unionIno uint64, upperPath string) Change {
	if err := checkPath(upperPath); err != nil || upperPath == "" {
		return badChange(fmt.Errorf("index %d: %w %q", unionIno, ErrInvalidPath, upperPath))
	}
	return Change{func(b buckets) error { return b.index.Put(inoKey(unionIno), []byte(upperPath)) }}
}

// DeleteIndexChange removes the index entry of unionIno, if any.
func DeleteIndexChange(unionIno uint64) Change {
	return Change{func(b buckets) error { return b.index.Delete(inoKey(unionIno)) }}
}

// Apply runs changes in order in one transaction: all of them or none.
func (db *DB) Apply(changes ...Change) error {
	if len(changes) == 0 {
		return nil
	}
	return db.txn(true, "apply", func(b buckets) error {
		for _, c := range changes {
			if c.apply == nil {
				return errors.New("zero Change")
			}
			if err := c.apply(b); err != nil {
				return err
			}
		}
		return nil
	})
}

// Put creates or replaces the record at path.
func (db *DB) Put(path string, r Record) error { return db.Apply(PutChange(path, r)) }

// Delete removes the record at path; it is not an error if there is none.
func (db *DB) Delete(path string) error { return db.Apply(DeleteChange(path)) }

// DeleteTree removes the record at path and every record beneath it; "" means all.
func (db *DB) DeleteTree(path string) error { return db.Apply(DeleteTreeChange(path)) }

// SetOrigin records that the upper file with inode upperIno has union inode unionIno.
func (db *DB) SetOrigin(upperIno, unionIno uint64) error {
	return db.Apply(OriginChange(upperIno, unionIno))
}

// DeleteOrigin removes the origin of upperIno, if any.
func (db *DB) DeleteOrigin(upperIno uint64) error { return db.Apply(DeleteOriginChange(upperIno)) }

// Get returns the record at path, or ErrNotFound.
func (db *DB) Get(path string) (r Record, err error) {
	err = db.txn(false, fmt.Sprintf("get %q", path), func(b buckets) error {
		if err := checkPath(path); err != nil {
			return err
		}
		v := b.paths.Get(pathKey(path))
		if v == nil {
			return ErrNotFound
		}
		var derr error
		r, derr = decodeRecord(v)
		return derr
	})
	return r, err
}

// Records returns every record, keyed by path, e.g. to fill an in-memory cache.
func (db *DB) Records() (map[string]Record, error) {
	m := make(map[string]Record)
	err := db.txn(false, "read records", func(b buckets) error {
		return b.paths.ForEach(func(k, v []byte) error {
			p := string(k[1:]) // bbolt has no zero-length keys
			if k[0] != '/' || !validPath(p) {
				return fmt.Errorf("%w: bad path key %q", ErrCorrupt, k)
			}
			r, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("record %q: %w", p, err)
			}
			m[p] = r
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Origins returns every inode origin: upper inode number to union inode number.
func (db *DB) Origins() (map[uint64]uint64, error) {
	m := make(map[uint64]uint64)
	err := db.txn(false, "read origins", func(b buckets) error {
		return b.origins.ForEach(func(k, v []byte) error {
			if len(k) != 8 || len(v) != 8 {
				return fmt.Errorf("%w: bad origin %x -> %x", ErrCorrupt, k, v)
			}
			m[binary.BigEndian.Uint64(k)] = binary.BigEndian.Uint64(v)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// IndexGet returns the index entry path of union inode unionIno, or ErrNotFound.
func (db *DB) IndexGet(unionIno uint64) (p string, err error) {
	err = db.txn(false, fmt.Sprintf("get index %d", unionIno), func(b buckets) error {
		v := b.index.Get(inoKey(unionIno))
		if v == nil {
			return ErrNotFound
		}
		var derr error
		p, derr = decodeIndex(v)
		return derr
	})
	return p, err
}

// Index returns every index entry: union inode number to upper-relative path.
func (db *DB) Index() (map[uint64]string, error) {
	m := make(map[uint64]string)
	err := db.txn(false, "read index", func(b buckets) error {
		return b.index.ForEach(func(k, v []byte) error {
			p, err := decodeIndex(v)
			if err != nil {
				return err
			}
			if len(k) != 8 {
				return fmt.Errorf("%w: bad index key %x", ErrCorrupt, k)
			}
			m[binary.BigEndian.Uint64(k)] = p
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

func decodeIndex(v []byte) (string, error) {
	if len(v) == 0 || !validPath(string(v)) {
		return "", fmt.Errorf("%w: bad index path %q", ErrCorrupt, v)
	}
	return string(v), nil
}

// txn runs fn in one bbolt transaction and names the file and op in any error.
// The file was validated at Open, but a page corrupted since (or in a way
// validation cannot see) can make bbolt panic or fault: report that as
// ErrCorrupt rather than crash the filesystem server.
func (db *DB) txn(writable bool, op string, fn func(buckets) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: bbolt panicked: %v", ErrCorrupt, p)
		}
		if err != nil {
			err = fmt.Errorf("state database %s: %s: %w", db.path, op, err)
		}
	}()
	run := db.bdb.View
	if writable {
		run = db.bdb.Update
	}
	return run(func(tx *bolt.Tx) error {
		b, err := getBuckets(tx)
		if err != nil {
			return err
		}
		return fn(b)
	})
}
