package layerdb

// Per-path file metadata that a layer directory cannot hold on disk: an
// image unpacked by a normal user cannot chown its files to root, keep a
// setuid bit meaningfully, create a device node or set trusted.* xattrs.
// The unpacker records what the image says here, and the filesystem serves
// it in place of what is on disk.
//
// # On-disk format (meta version 1)
//
// A sub-bucket of the state database's root bucket:
//
//	unionfs.v1
//	    meta.v1/  key: "/" + path (as paths/)   value: meta record
//
// A meta record (all integers big-endian):
//
//	uid    uint32
//	gid    uint32
//	mode   uint32   full st_mode: file type bits, permissions, setuid/setgid/sticky
//	rdev   uint64   device number (Linux encoding) for S_IFCHR/S_IFBLK, else 0
//	count  uint32   number of xattrs, then per xattr, sorted by name, names unique:
//	    nameLen uint16, name (1..255 bytes, no NUL), valueLen uint32, value (<= 64 KiB)
//
// The encoding is canonical; a record with trailing bytes, unsorted or
// repeated names, an empty or oversized name or value is ErrCorrupt. The
// bucket is created by the first write; a database without it has no meta.
// A sub-bucket meta.vN for N != 1 is ErrVersion. Readers of the version-1
// state format that do not know meta.v1 ignore it, so adding meta does not
// change the state database's format version.
//
// Meta is written by the image unpacker for lower layers, which never
// change. The tree changes (DeleteTreeChange, MoveTreeChange) act on records
// only: a writer that keeps meta in an upper must move or delete it itself.
//
// A device node (and anything else the unpacker could not create) exists
// in the layer directory as an empty regular file, a placeholder, so that
// the name is there for lookups and listings; its meta Mode carries the real
// file type.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

var (
	metaBucket = []byte("meta.v1")
	metaPrefix = []byte("meta.v")
)

const (
	maxXattrName  = 255
	maxXattrValue = 64 << 10
	metaFixedLen  = 4 + 4 + 4 + 8 + 4
)

// Meta is what the image says about one file, where that differs from
// what the layer directory can show.
type Meta struct {
	UID, GID uint32
	Mode     uint32            // st_mode including the file type bits
	Rdev     uint64            // device number, for character and block devices
	Xattrs   map[string][]byte // extended attributes, by full name ("security.capability")
}

func encodeMeta(m Meta) ([]byte, error) {
	b := make([]byte, 0, metaFixedLen)
	b = binary.BigEndian.AppendUint32(b, m.UID)
	b = binary.BigEndian.AppendUint32(b, m.GID)
	b = binary.BigEndian.AppendUint32(b, m.Mode)
	b = binary.BigEndian.AppendUint64(b, m.Rdev)
	names := make([]string, 0, len(m.Xattrs))
	for name, v := range m.Xattrs {
		if name == "" || len(name) > maxXattrName || bytes.IndexByte([]byte(name), 0) >= 0 {
			return nil, fmt.Errorf("%w: xattr name %q", ErrInvalid, name)
		}
		if len(v) > maxXattrValue {
			return nil, fmt.Errorf("%w: xattr %s value has %d bytes (max %d)", ErrInvalid, name, len(v), maxXattrValue)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	b = binary.BigEndian.AppendUint32(b, uint32(len(names)))
	for _, name := range names {
		b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
		b = append(b, name...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(m.Xattrs[name])))
		b = append(b, m.Xattrs[name]...)
	}
	return b, nil
}

func decodeMeta(b []byte) (Meta, error) {
	bad := func(what string) (Meta, error) { return Meta{}, fmt.Errorf("%w: meta record: %s", ErrCorrupt, what) }
	if len(b) < metaFixedLen {
		return bad("short")
	}
	m := Meta{
		UID:  binary.BigEndian.Uint32(b[0:]),
		GID:  binary.BigEndian.Uint32(b[4:]),
		Mode: binary.BigEndian.Uint32(b[8:]),
		Rdev: binary.BigEndian.Uint64(b[12:]),
	}
	n := binary.BigEndian.Uint32(b[20:])
	b = b[metaFixedLen:]
	prev := ""
	for i := uint32(0); i < n; i++ {
		if len(b) < 2 {
			return bad("truncated xattr name")
		}
		nl := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if nl == 0 || nl > maxXattrName || len(b) < nl+4 {
			return bad("bad xattr name length")
		}
		name := string(b[:nl])
		if bytes.IndexByte(b[:nl], 0) >= 0 || (i > 0 && name <= prev) {
			return bad("xattr names not sorted, unique and NUL-free")
		}
		b = b[nl:]
		vl := binary.BigEndian.Uint32(b)
		b = b[4:]
		if vl > maxXattrValue || uint32(len(b)) < vl {
			return bad("bad xattr value length")
		}
		if m.Xattrs == nil {
			m.Xattrs = make(map[string][]byte) // no size hint: n is untrusted
		}
		m.Xattrs[name] = bytes.Clone(b[:vl])
		b = b[vl:]
		prev = name
	}
	if len(b) != 0 {
		return bad("trailing bytes")
	}
	return m, nil
}

// metaBucketIn returns the meta bucket of the transaction that b belongs to,
// creating it if create is set (nil if it does not exist and !create).
func metaBucketIn(b buckets, create bool) (*bolt.Bucket, error) {
	root := b.paths.Tx().Bucket(rootBucket)
	var other []byte
	root.ForEachBucket(func(k []byte) error {
		if bytes.HasPrefix(k, metaPrefix) && !bytes.Equal(k, metaBucket) {
			other = bytes.Clone(k)
		}
		return nil
	})
	if other != nil {
		return nil, fmt.Errorf("%w: found bucket %q, this build reads %s", ErrVersion, other, metaBucket)
	}
	if create {
		return root.CreateBucketIfNotExists(metaBucket)
	}
	return root.Bucket(metaBucket), nil
}

// MetaChange creates or replaces the meta of path.
func MetaChange(path string, m Meta) Change {
	if err := checkPath(path); err != nil {
		return badChange(fmt.Errorf("set meta: %w", err))
	}
	v, err := encodeMeta(m)
	if err != nil {
		return badChange(fmt.Errorf("set meta %q: %w", path, err))
	}
	return Change{func(b buckets) error {
		mb, err := metaBucketIn(b, true)
		if err != nil {
			return err
		}
		return mb.Put(pathKey(path), v)
	}}
}

// DeleteMetaChange removes the meta of path, if any.
func DeleteMetaChange(path string) Change {
	if err := checkPath(path); err != nil {
		return badChange(fmt.Errorf("delete meta: %w", err))
	}
	return Change{func(b buckets) error {
		mb, err := metaBucketIn(b, false)
		if err != nil || mb == nil {
			return err
		}
		return mb.Delete(pathKey(path))
	}}
}

// SetMeta creates or replaces the meta of path.
func (db *DB) SetMeta(path string, m Meta) error { return db.Apply(MetaChange(path, m)) }

// DeleteMeta removes the meta of path; it is not an error if there is none.
func (db *DB) DeleteMeta(path string) error { return db.Apply(DeleteMetaChange(path)) }

// GetMeta returns the meta of path, or ErrNotFound.
func (db *DB) GetMeta(path string) (m Meta, err error) {
	err = db.txn(false, fmt.Sprintf("get meta %q", path), func(b buckets) error {
		if err := checkPath(path); err != nil {
			return err
		}
		mb, err := metaBucketIn(b, false)
		if err != nil {
			return err
		}
		var v []byte
		if mb != nil {
			v = mb.Get(pathKey(path))
		}
		if v == nil {
			return ErrNotFound
		}
		m, err = decodeMeta(v)
		return err
	})
	return m, err
}

// Metas returns the meta of every path that has one.
func (db *DB) Metas() (map[string]Meta, error) {
	out := make(map[string]Meta)
	err := db.txn(false, "read meta", func(b buckets) error {
		mb, err := metaBucketIn(b, false)
		if err != nil || mb == nil {
			return err
		}
		return mb.ForEach(func(k, v []byte) error {
			p := string(k[1:])
			if k[0] != '/' || !validPath(p) {
				return fmt.Errorf("%w: bad meta key %q", ErrCorrupt, k)
			}
			m, err := decodeMeta(v)
			if err != nil {
				return fmt.Errorf("meta %q: %w", p, err)
			}
			out[p] = m
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
