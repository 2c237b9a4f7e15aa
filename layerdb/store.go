package layerdb

// The image store's metadata database, normally ROOT/store.db. Unlike a
// layer's state.db it describes many layers: which images exist, which
// unpacked layers they use and who else (a pull in progress, a mounted image)
// holds a layer, so that garbage collection never deletes a layer in use.
//
// # On-disk format (version 1)
//
//	unionfs.store.v1                top-level bucket
//	    version -> uint32 = 1
//	    images/  key: image key ("docker.io/library/alpine:3.20" or NAME@DIGEST)  value: JSON Image
//	    layers/  key: DiffID ("sha256:<hex>")                                     value: JSON Layer
//	    blobs/   key: compressed digest                                           value: DiffID
//	    leases/  key: lease ID                                                    value: JSON Lease
//
// Values are JSON; a value that does not decode, or whose key disagrees with
// its content, is ErrCorrupt. A top-level bucket unionfs.store.vN other than
// v1, or a version other than 1, is ErrVersion.
//
// # Invariants
//
//   - Every DiffID in an image's Layers has a layer record, and the image's
//     key is in that record's Users; a layer's Users name only existing
//     images. PutImage and DeleteImage keep both sides in one transaction.
//   - A layer record exists only once its directory is complete: AddLayer
//     runs the caller's commit (the rename of a fully unpacked staging
//     directory into place) inside the transaction that writes the record.
//   - A layer with no Users and no live Lease may be collected; Collect
//     decides and deletes in one transaction, calling back for the
//     directory work while it holds the database's write lock.
//   - Like a state database, the file is created under a temporary name and
//     linked into place, and every open has a lock timeout (ErrLocked).

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	// ErrExists: the record to add is already there.
	ErrExists = errors.New("already exists")
	// ErrInvalid: a store argument that is malformed (a digest that is not
	// "sha256:<hex>", an image without a name, a lease without a PID).
	ErrInvalid = errors.New("invalid argument")
)

var (
	storeBucket       = []byte("unionfs.store.v1")
	storePrefix       = []byte("unionfs.store.v")
	storeImagesBucket = []byte("images")
	storeLayersBucket = []byte("layers")
	storeBlobsBucket  = []byte("blobs")
	storeLeasesBucket = []byte("leases")
	storeSubBuckets   = [][]byte{storeImagesBucket, storeLayersBucket, storeBlobsBucket, storeLeasesBucket}
)

const storeFormatVersion = 1

// Image is one named image: a repository and a tag (or the manifest digest
// it was pulled by) and the layers it is made of.
type Image struct {
	Name     string    `json:"name"`               // repository, e.g. "docker.io/library/alpine"
	Tag      string    `json:"tag,omitempty"`      // e.g. "3.20"; empty when pulled by digest
	Digest   string    `json:"digest,omitempty"`   // what the name resolved to: an index or Manifest
	Manifest string    `json:"manifest"`           // digest of the image's own manifest, "sha256:<hex>"
	Config   string    `json:"config"`             // config digest: the image ID
	Created  time.Time `json:"created"`            // creation time from the image config
	Pulled   time.Time `json:"pulled"`             // when it was stored
	Size     int64     `json:"size"`               // unpacked size: sum of the layers' tar sizes
	Layers   []string  `json:"layers"`             // DiffIDs, bottom layer first
	Platform string    `json:"platform,omitempty"` // "os/arch[/variant]"
}

// Key is the image's key in the store: NAME:TAG, or without a tag
// NAME@DIGEST (NAME@MANIFEST if Digest is empty).
func (i Image) Key() string {
	switch {
	case i.Tag != "":
		return i.Name + ":" + i.Tag
	case i.Digest != "":
		return i.Name + "@" + i.Digest
	}
	return i.Name + "@" + i.Manifest
}

// Layer is one unpacked layer, content-addressed by the digest of its
// uncompressed tar.
type Layer struct {
	DiffID     string    `json:"diffID"`
	Compressed []string  `json:"compressed,omitempty"` // digests of the blobs it was unpacked from
	Size       int64     `json:"size"`                 // bytes of the uncompressed tar
	Users      []string  `json:"users,omitempty"`      // keys of the images that use it, sorted
	Added      time.Time `json:"added"`
}

// Lease keeps layers from being collected while a process uses them: a
// pull in progress, or a mount of an image.
type Lease struct {
	ID      string    `json:"id"`
	PID     int       `json:"pid"`             // the holding process
	Start   uint64    `json:"start,omitempty"` // its start time (/proc/PID/stat field 22), so a reused PID is not taken for it
	Layers  []string  `json:"layers"`          // DiffIDs held; they need not be stored yet
	Created time.Time `json:"created"`
}

// StoreDB is an open image store database.
type StoreDB struct{ dbFile }

// OpenStore opens or (unless opts.ReadOnly) creates the store database at path.
func OpenStore(path string, opts Options) (*StoreDB, error) {
	f, err := openFile(path, "store", opts, storeFormat)
	if err != nil {
		return nil, err
	}
	return &StoreDB{f}, nil
}

var storeFormat = &format{
	root: storeBucket, prefix: storePrefix, version: storeFormatVersion,
	subs: storeSubBuckets, dirMode: 0o755,
}

// storeTx is the store's buckets inside one transaction.
type storeTx struct {
	images, layers, blobs, leases *bolt.Bucket
}

func (s *StoreDB) txn(writable bool, op string, fn func(*storeTx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: bbolt panicked: %v", ErrCorrupt, p)
		}
		if err != nil {
			err = fmt.Errorf("store database %s: %s: %w", s.path, op, err)
		}
	}()
	run := s.bdb.View
	if writable {
		run = s.bdb.Update
	}
	return run(func(tx *bolt.Tx) error {
		root := tx.Bucket(storeBucket)
		if root == nil {
			return fmt.Errorf("%w: no %s bucket", ErrCorrupt, storeBucket)
		}
		t := &storeTx{root.Bucket(storeImagesBucket), root.Bucket(storeLayersBucket),
			root.Bucket(storeBlobsBucket), root.Bucket(storeLeasesBucket)}
		if t.images == nil || t.layers == nil || t.blobs == nil || t.leases == nil {
			return fmt.Errorf("%w: missing sub-bucket", ErrCorrupt)
		}
		return fn(t)
	})
}

// validDigest reports whether d is "algorithm:hex" with a lowercase hex part
// of the algorithm's length (sha256 and sha512 are known).
func validDigest(d string) bool {
	alg, hex, ok := strings.Cut(d, ":")
	if !ok {
		return false
	}
	switch alg {
	case "sha256":
		ok = len(hex) == 64
	case "sha512":
		ok = len(hex) == 128
	default:
		return false
	}
	for _, c := range []byte(hex) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return ok
}

func checkDigest(what, d string) error {
	if !validDigest(d) {
		return fmt.Errorf("%w: %s %q is not a digest", ErrInvalid, what, d)
	}
	return nil
}

func (i *Image) check() error {
	if i.Name == "" || strings.ContainsAny(i.Name, "@\x00") || strings.ContainsAny(i.Tag, ":@/\x00") {
		return fmt.Errorf("%w: bad image name %q tag %q", ErrInvalid, i.Name, i.Tag)
	}
	if err := checkDigest("manifest", i.Manifest); err != nil {
		return err
	}
	if i.Digest != "" {
		if err := checkDigest("digest", i.Digest); err != nil {
			return err
		}
	}
	if err := checkDigest("config", i.Config); err != nil {
		return err
	}
	for _, l := range i.Layers {
		if err := checkDigest("layer", l); err != nil {
			return err
		}
	}
	return nil
}

func getJSON[T any](b *bolt.Bucket, key string) (T, bool, error) {
	var v T
	raw := b.Get([]byte(key))
	if raw == nil {
		return v, false, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, false, fmt.Errorf("%w: %s: %v", ErrCorrupt, key, err)
	}
	return v, true, nil
}

func putJSON(b *bolt.Bucket, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), raw)
}

func forEachJSON[T any](b *bolt.Bucket, fn func(key string, v T) error) error {
	return b.ForEach(func(k, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrCorrupt, k, err)
		}
		return fn(string(k), v)
	})
}

func (t *storeTx) layer(diffID string) (Layer, bool, error) {
	l, ok, err := getJSON[Layer](t.layers, diffID)
	if err == nil && ok && l.DiffID != diffID {
		err = fmt.Errorf("%w: layer record %s names %s", ErrCorrupt, diffID, l.DiffID)
	}
	return l, ok, err
}

func (t *storeTx) image(key string) (Image, bool, error) {
	i, ok, err := getJSON[Image](t.images, key)
	if err == nil && ok && i.Key() != key {
		err = fmt.Errorf("%w: image record %s names %s", ErrCorrupt, key, i.Key())
	}
	return i, ok, err
}

// setUser adds (or removes) user in the Users of each layer in diffIDs.
func (t *storeTx) setUser(diffIDs []string, user string, add bool) error {
	for _, d := range diffIDs {
		l, ok, err := t.layer(d)
		if err != nil {
			return err
		}
		if !ok {
			if add {
				return fmt.Errorf("layer %s: %w", d, ErrNotFound)
			}
			continue // a corrupt store is not made worse by dropping an image
		}
		i, found := slices.BinarySearch(l.Users, user)
		switch {
		case add && !found:
			l.Users = slices.Insert(l.Users, i, user)
		case !add && found:
			l.Users = slices.Delete(l.Users, i, i+1)
		default:
			continue
		}
		if err := putJSON(t.layers, d, l); err != nil {
			return err
		}
	}
	return nil
}

// PutImage records img under img.Key(), replacing (and returning) the image
// that had that key. Every layer of img must be stored (else ErrNotFound);
// the layers' Users are updated in the same transaction. Layers that only
// the replaced image used are left for Collect.
func (s *StoreDB) PutImage(img Image) (old Image, replaced bool, err error) {
	if err := img.check(); err != nil {
		return Image{}, false, err
	}
	key := img.Key()
	img.Layers = slices.Clone(img.Layers)
	err = s.txn(true, "put image "+key, func(t *storeTx) error {
		var err error
		if old, replaced, err = t.image(key); err != nil {
			return err
		}
		if replaced {
			if err := t.setUser(old.Layers, key, false); err != nil {
				return err
			}
		}
		if err := t.setUser(img.Layers, key, true); err != nil {
			return err
		}
		return putJSON(t.images, key, img)
	})
	return old, replaced, err
}

// Image returns the image with the given key, or ErrNotFound.
func (s *StoreDB) Image(key string) (img Image, err error) {
	err = s.txn(false, "get image "+key, func(t *storeTx) error {
		var ok bool
		var err error
		if img, ok, err = t.image(key); err == nil && !ok {
			err = ErrNotFound
		}
		return err
	})
	return img, err
}

// Images returns every image, sorted by key.
func (s *StoreDB) Images() ([]Image, error) {
	var out []Image
	err := s.txn(false, "list images", func(t *storeTx) error {
		return forEachJSON(t.images, func(k string, i Image) error {
			if i.Key() != k {
				return fmt.Errorf("%w: image record %s names %s", ErrCorrupt, k, i.Key())
			}
			out = append(out, i)
			return nil
		})
	})
	return out, err
}

// DeleteImage removes the image with the given key and returns it, or
// ErrNotFound. Its layers lose it as a user; Collect deletes those left unused.
func (s *StoreDB) DeleteImage(key string) (img Image, err error) {
	err = s.txn(true, "delete image "+key, func(t *storeTx) error {
		var ok bool
		var err error
		if img, ok, err = t.image(key); err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		if err := t.setUser(img.Layers, key, false); err != nil {
			return err
		}
		return t.images.Delete([]byte(key))
	})
	return img, err
}

// AddLayer records a new layer. commit, if not nil, runs inside the
// transaction before the record is written: the caller moves the layer's
// complete directory into place there, so that no other store user (a
// collector sweeping orphans) sees the directory without its record. If
// commit fails nothing is recorded. If the DiffID is already stored, the
// result is ErrExists, commit is not called, and the record only gains
// l.Compressed as further blob digests.
func (s *StoreDB) AddLayer(l Layer, commit func() error) error {
	if err := checkDigest("layer", l.DiffID); err != nil {
		return err
	}
	for _, c := range l.Compressed {
		if err := checkDigest("blob", c); err != nil {
			return err
		}
	}
	exists := false
	err := s.txn(true, "add layer "+l.DiffID, func(t *storeTx) error {
		have, ok, err := t.layer(l.DiffID)
		if err != nil {
			return err
		}
		if exists = ok; ok {
			// Committed, then reported: the record learns the new blob digests.
			if err := t.addBlobs(&have, l.Compressed); err != nil {
				return err
			}
			return putJSON(t.layers, have.DiffID, have)
		}
		if commit != nil {
			if err := commit(); err != nil {
				return err
			}
		}
		nl := Layer{DiffID: l.DiffID, Size: l.Size, Added: l.Added}
		if err := t.addBlobs(&nl, l.Compressed); err != nil {
			return err
		}
		return putJSON(t.layers, nl.DiffID, nl)
	})
	if err == nil && exists {
		err = fmt.Errorf("layer %s: %w", l.DiffID, ErrExists)
	}
	return err
}

func (t *storeTx) addBlobs(l *Layer, blobs []string) error {
	for _, c := range blobs {
		if i, found := slices.BinarySearch(l.Compressed, c); !found {
			l.Compressed = slices.Insert(l.Compressed, i, c)
		}
		if err := t.blobs.Put([]byte(c), []byte(l.DiffID)); err != nil {
			return err
		}
	}
	return nil
}

// Layer returns the layer with the given DiffID, or ErrNotFound.
func (s *StoreDB) Layer(diffID string) (l Layer, err error) {
	err = s.txn(false, "get layer "+diffID, func(t *storeTx) error {
		var ok bool
		var err error
		if l, ok, err = t.layer(diffID); err == nil && !ok {
			err = ErrNotFound
		}
		return err
	})
	return l, err
}

// LayerByBlob returns the layer unpacked from the blob with the given
// compressed digest, or ErrNotFound.
func (s *StoreDB) LayerByBlob(digest string) (l Layer, err error) {
	err = s.txn(false, "get blob "+digest, func(t *storeTx) error {
		d := t.blobs.Get([]byte(digest))
		if d == nil {
			return ErrNotFound
		}
		var ok bool
		var err error
		if l, ok, err = t.layer(string(d)); err == nil && !ok {
			err = ErrNotFound
		}
		return err
	})
	return l, err
}

// Layers returns every layer, sorted by DiffID.
func (s *StoreDB) Layers() ([]Layer, error) {
	var out []Layer
	err := s.txn(false, "list layers", func(t *storeTx) error {
		return forEachJSON(t.layers, func(k string, l Layer) error {
			if l.DiffID != k {
				return fmt.Errorf("%w: layer record %s names %s", ErrCorrupt, k, l.DiffID)
			}
			out = append(out, l)
			return nil
		})
	})
	return out, err
}

// AddLease records a lease; ErrExists if its ID is taken. Its layers need
// not be stored yet (a pull leases the layers it is about to store).
func (s *StoreDB) AddLease(l Lease) error {
	if l.ID == "" || l.PID <= 0 {
		return fmt.Errorf("%w: lease needs an ID and a PID", ErrInvalid)
	}
	for _, d := range l.Layers {
		if err := checkDigest("layer", d); err != nil {
			return err
		}
	}
	return s.txn(true, "add lease "+l.ID, func(t *storeTx) error {
		if t.leases.Get([]byte(l.ID)) != nil {
			return ErrExists
		}
		return putJSON(t.leases, l.ID, l)
	})
}

// DeleteLease removes a lease, or returns ErrNotFound.
func (s *StoreDB) DeleteLease(id string) error {
	return s.txn(true, "delete lease "+id, func(t *storeTx) error {
		if t.leases.Get([]byte(id)) == nil {
			return ErrNotFound
		}
		return t.leases.Delete([]byte(id))
	})
}

// Leases returns every lease, sorted by ID.
func (s *StoreDB) Leases() ([]Lease, error) {
	var out []Lease
	err := s.txn(false, "list leases", func(t *storeTx) error {
		return forEachJSON(t.leases, func(_ string, l Lease) error {
			out = append(out, l)
			return nil
		})
	})
	return out, err
}

// Collector says how Collect tells live leases from stale ones and does the
// directory work. Its functions run inside Collect's write transaction, so
// no other store user changes the store meanwhile.
type Collector struct {
	// Live reports whether a lease's holder still runs; stale leases are
	// deleted. Nil: every lease is live.
	Live func(Lease) bool
	// Remove is called for each layer to delete, before its record goes: it
	// should move the layer's directory out of the store (a rename), so that
	// a crash leaves a record whose directory is gone rather than an
	// unrecorded directory in use. An error aborts the whole collection.
	Remove func(diffID string) error
	// Sweep, if set, is called last with a function that tells whether a
	// DiffID is (still) recorded, to collect directories without a record.
	Sweep func(recorded func(diffID string) bool) error
}

// Collect deletes stale leases and every layer that no image uses and no
// live lease holds, in one transaction, and returns the deleted DiffIDs.
func (s *StoreDB) Collect(c Collector) (removed []string, err error) {
	err = s.txn(true, "collect", func(t *storeTx) error {
		removed = nil
		held := make(map[string]bool)
		var stale []string
		err := forEachJSON(t.leases, func(k string, l Lease) error {
			if c.Live != nil && !c.Live(l) {
				stale = append(stale, k)
				return nil
			}
			for _, d := range l.Layers {
				held[d] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range stale {
			if err := t.leases.Delete([]byte(k)); err != nil {
				return err
			}
		}
		var unused []Layer
		err = forEachJSON(t.layers, func(_ string, l Layer) error {
			if len(l.Users) == 0 && !held[l.DiffID] {
				unused = append(unused, l)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, l := range unused {
			if c.Remove != nil {
				if err := c.Remove(l.DiffID); err != nil {
					return err
				}
			}
			for _, b := range l.Compressed {
				if string(t.blobs.Get([]byte(b))) == l.DiffID {
					if err := t.blobs.Delete([]byte(b)); err != nil {
						return err
					}
				}
			}
			if err := t.layers.Delete([]byte(l.DiffID)); err != nil {
				return err
			}
			removed = append(removed, l.DiffID)
		}
		if c.Sweep != nil {
			return c.Sweep(func(d string) bool { return t.layers.Get([]byte(d)) != nil })
		}
		return nil
	})
	if err != nil {
		removed = nil
	}
	return removed, err
}
