package layerdb

import (
	"bytes"
	"errors"
	"maps"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func metaEqual(a, b Meta) bool {
	return a.UID == b.UID && a.GID == b.GID && a.Mode == b.Mode && a.Rdev == b.Rdev &&
		maps.EqualFunc(a.Xattrs, b.Xattrs, bytes.Equal)
}

func TestMetaRoundTrip(t *testing.T) {
	db := newTestDB(t)
	if m, err := db.Metas(); err != nil || len(m) != 0 {
		t.Fatalf("Metas of a fresh database = %v, %v", m, err)
	}
	want := map[string]Meta{
		"":                {Mode: syscall.S_IFDIR | 0o755},
		"usr/bin/passwd":  {UID: 0, GID: 0, Mode: syscall.S_IFREG | 0o4755},
		"dev/null":        {Mode: syscall.S_IFCHR | 0o666, Rdev: 1<<8 | 3},
		"home/u":          {UID: 1000, GID: 1000, Mode: syscall.S_IFDIR | 0o1777},
		"usr/bin/ping":    {Mode: syscall.S_IFREG | 0o755, Xattrs: map[string][]byte{"security.capability": {1, 0, 0, 2}, "user.a": {}}},
		"etc/shadow.lock": {Mode: syscall.S_IFREG | 0o2640, GID: 42},
	}
	var changes []Change
	for p, m := range want {
		changes = append(changes, MetaChange(p, m))
	}
	if err := db.Apply(changes...); err != nil {
		t.Fatal(err)
	}
	got, err := db.Metas()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(got, want, metaEqual) {
		t.Errorf("Metas = %v\nwant %v", got, want)
	}
	m, err := db.GetMeta("dev/null")
	if err != nil || !metaEqual(m, want["dev/null"]) {
		t.Errorf("GetMeta = %+v, %v", m, err)
	}
	if err := db.DeleteMeta("dev/null"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetMeta("dev/null"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetMeta after delete = %v", err)
	}
	// Meta and records live side by side.
	if err := db.Apply(PutChange("a", Record{Opaque: true}), MetaChange("b", Meta{Mode: 0o100644})); err != nil {
		t.Fatal(err)
	}
	if r, err := db.Get("a"); err != nil || !r.Opaque {
		t.Errorf("record a = %v, %v", r, err)
	}
}

func TestMetaInvalid(t *testing.T) {
	db := newTestDB(t)
	for _, c := range []struct {
		path string
		m    Meta
		want error
	}{
		{"/abs", Meta{}, ErrInvalidPath},
		{"a/../b", Meta{}, ErrInvalidPath},
		{"a", Meta{Xattrs: map[string][]byte{"": nil}}, ErrInvalid},
		{"a", Meta{Xattrs: map[string][]byte{"a\x00b": nil}}, ErrInvalid},
		{"a", Meta{Xattrs: map[string][]byte{strings.Repeat("x", 256): nil}}, ErrInvalid},
		{"a", Meta{Xattrs: map[string][]byte{"user.big": make([]byte, 64<<10+1)}}, ErrInvalid},
	} {
		if err := db.SetMeta(c.path, c.m); !errors.Is(err, c.want) {
			t.Errorf("SetMeta(%q) = %v, want %v", c.path, err, c.want)
		}
	}
	if m, _ := db.Metas(); len(m) != 0 {
		t.Errorf("invalid SetMeta left %v", m)
	}
}

func TestMetaDecodeStrict(t *testing.T) {
	good, err := encodeMeta(Meta{Mode: 0o100644, Xattrs: map[string][]byte{"a": {1}, "b": {2}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeMeta(good); err != nil {
		t.Fatal(err)
	}
	unsorted := bytes.Clone(good)
	// Swap the two names "a" and "b".
	i, j := bytes.Index(unsorted, []byte{0, 1, 'a'}), bytes.Index(unsorted, []byte{0, 1, 'b'})
	unsorted[i+2], unsorted[j+2] = 'b', 'a'
	for name, b := range map[string][]byte{
		"short":     good[:10],
		"trailing":  append(bytes.Clone(good), 0),
		"truncated": good[:len(good)-1],
		"unsorted":  unsorted,
	} {
		if _, err := decodeMeta(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: decode = %v, want ErrCorrupt", name, err)
		}
	}
}

func TestMetaNewerVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := mustOpen(t, path, Options{})
	db.Close()
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	bdb.Update(func(tx *bolt.Tx) error { _, err := tx.Bucket(rootBucket).CreateBucket([]byte("meta.v2")); return err })
	bdb.Close()
	db = mustOpen(t, path, Options{})
	defer db.Close()
	if _, err := db.Metas(); !errors.Is(err, ErrVersion) {
		t.Errorf("Metas with meta.v2 = %v, want ErrVersion", err)
	}
	if err := db.SetMeta("a", Meta{}); !errors.Is(err, ErrVersion) {
		t.Errorf("SetMeta with meta.v2 = %v, want ErrVersion", err)
	}
	// Records are unaffected.
	if _, err := db.Records(); err != nil {
		t.Errorf("Records = %v", err)
	}
}

func FuzzMetaDecode(f *testing.F) {
	for _, m := range []Meta{{}, {Mode: 0o20666, Rdev: 259}, {Xattrs: map[string][]byte{"user.x": []byte("y"), "z": nil}}} {
		b, _ := encodeMeta(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		again, err := encodeMeta(m)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("not canonical: %x -> %+v -> %x (%v)", b, m, again, err)
		}
	})
}
