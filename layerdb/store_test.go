package layerdb

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func digestOf(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }

func newTestStore(t *testing.T) *StoreDB {
	t.Helper()
	s, err := OpenStore(filepath.Join(t.TempDir(), "store.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func addLayers(t *testing.T, s *StoreDB, ids ...string) {
	t.Helper()
	for _, d := range ids {
		if err := s.AddLayer(Layer{DiffID: d, Size: 10}, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func testImage(name, tag string, layers ...string) Image {
	return Image{Name: name, Tag: tag, Manifest: digestOf('f'), Config: digestOf('e'),
		Created: time.Unix(1, 0).UTC(), Layers: layers, Platform: "linux/amd64"}
}

func users(t *testing.T, s *StoreDB, d string) []string {
	t.Helper()
	l, err := s.Layer(d)
	if err != nil {
		t.Fatal(err)
	}
	return l.Users
}

func TestStoreImagesAndUsers(t *testing.T) {
	s := newTestStore(t)
	a, b, c := digestOf('a'), digestOf('b'), digestOf('c')
	addLayers(t, s, a, b, c)

	img1 := testImage("docker.io/library/x", "1", a, b)
	if _, replaced, err := s.PutImage(img1); err != nil || replaced {
		t.Fatalf("PutImage = %v, replaced %v", err, replaced)
	}
	img2 := testImage("docker.io/library/y", "", a, c)
	if _, _, err := s.PutImage(img2); err != nil {
		t.Fatal(err)
	}
	if got := users(t, s, a); !slices.Equal(got, []string{img1.Key(), img2.Key()}) {
		t.Errorf("users of a = %v", got)
	}
	if img2.Key() != "docker.io/library/y@"+digestOf('f') {
		t.Errorf("key without tag = %q", img2.Key())
	}
	got, err := s.Image(img1.Key())
	if err != nil || !slices.Equal(got.Layers, img1.Layers) || got.Platform != "linux/amd64" || !got.Created.Equal(img1.Created) {
		t.Fatalf("Image = %+v, %v", got, err)
	}

	// Retagging x:1 to other layers moves its use.
	img1b := testImage("docker.io/library/x", "1", c)
	old, replaced, err := s.PutImage(img1b)
	if err != nil || !replaced || !slices.Equal(old.Layers, img1.Layers) {
		t.Fatalf("PutImage replace = %+v %v %v", old, replaced, err)
	}
	if got := users(t, s, b); len(got) != 0 {
		t.Errorf("users of b after retag = %v", got)
	}
	if got := users(t, s, c); !slices.Equal(got, []string{img1.Key(), img2.Key()}) {
		t.Errorf("users of c = %v", got)
	}

	imgs, err := s.Images()
	if err != nil || len(imgs) != 2 || imgs[0].Key() != img1.Key() {
		t.Fatalf("Images = %v, %v", imgs, err)
	}

	if _, err := s.DeleteImage(img2.Key()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteImage(img2.Key()); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteImage = %v, want ErrNotFound", err)
	}
	if _, err := s.Image(img2.Key()); !errors.Is(err, ErrNotFound) {
		t.Errorf("Image after delete = %v", err)
	}
	if got := users(t, s, a); len(got) != 0 {
		t.Errorf("users of a = %v", got)
	}
}

func TestStorePutImageNeedsLayers(t *testing.T) {
	s := newTestStore(t)
	addLayers(t, s, digestOf('a'))
	_, _, err := s.PutImage(testImage("r/x", "t", digestOf('a'), digestOf('b')))
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("PutImage with a missing layer = %v, want ErrNotFound", err)
	}
	// All or nothing: layer a did not gain the user.
	if got := users(t, s, digestOf('a')); len(got) != 0 {
		t.Errorf("users of a = %v after failed PutImage", got)
	}
	if imgs, _ := s.Images(); len(imgs) != 0 {
		t.Errorf("Images = %v", imgs)
	}
}

func TestStoreInvalid(t *testing.T) {
	s := newTestStore(t)
	for _, img := range []Image{
		testImage("", "t"),
		testImage("a@b", "t"),
		testImage("r/x", "a:b"),
		{Name: "r/x", Tag: "t", Manifest: "sha256:abc", Config: digestOf('e')},
		{Name: "r/x", Tag: "t", Manifest: digestOf('f'), Config: "md5:" + strings.Repeat("a", 32)},
		testImage("r/x", "t", "sha256:"+strings.Repeat("A", 64)),
	} {
		if _, _, err := s.PutImage(img); !errors.Is(err, ErrInvalid) {
			t.Errorf("PutImage(%+v) = %v, want ErrInvalid", img, err)
		}
	}
	if err := s.AddLayer(Layer{DiffID: "x"}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("AddLayer bad digest = %v", err)
	}
	if err := s.AddLease(Lease{ID: "", PID: 1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("AddLease without ID = %v", err)
	}
}

func TestStoreAddLayerCommit(t *testing.T) {
	s := newTestStore(t)
	a := digestOf('a')
	boom := errors.New("boom")
	if err := s.AddLayer(Layer{DiffID: a}, func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("AddLayer with failing commit = %v", err)
	}
	if _, err := s.Layer(a); !errors.Is(err, ErrNotFound) {
		t.Fatalf("layer recorded although commit failed: %v", err)
	}
	called := 0
	commit := func() error { called++; return nil }
	if err := s.AddLayer(Layer{DiffID: a, Compressed: []string{digestOf('1')}, Size: 5}, commit); err != nil {
		t.Fatal(err)
	}
	if err := s.AddLayer(Layer{DiffID: a, Compressed: []string{digestOf('2')}}, commit); !errors.Is(err, ErrExists) {
		t.Fatalf("second AddLayer = %v, want ErrExists", err)
	}
	if called != 1 {
		t.Errorf("commit called %d times, want 1", called)
	}
	l, err := s.LayerByBlob(digestOf('2'))
	if err != nil || l.DiffID != a || l.Size != 5 || !slices.Equal(l.Compressed, []string{digestOf('1'), digestOf('2')}) {
		t.Fatalf("LayerByBlob = %+v, %v", l, err)
	}
	if _, err := s.LayerByBlob(digestOf('3')); !errors.Is(err, ErrNotFound) {
		t.Errorf("LayerByBlob unknown = %v", err)
	}
}

func TestStoreCollect(t *testing.T) {
	s := newTestStore(t)
	a, b, c, d := digestOf('a'), digestOf('b'), digestOf('c'), digestOf('d')
	addLayers(t, s, a, b, c, d)
	if _, _, err := s.PutImage(testImage("r/x", "t", a)); err != nil {
		t.Fatal(err)
	}
	// b is held by a live lease, c by a stale one, d by nothing.
	if err := s.AddLease(Lease{ID: "live", PID: 1, Layers: []string{b}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddLease(Lease{ID: "stale", PID: 2, Layers: []string{c}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddLease(Lease{ID: "live", PID: 1}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate lease = %v", err)
	}
	var removedDirs []string
	var swept bool
	removed, err := s.Collect(Collector{
		Live:   func(l Lease) bool { return l.PID == 1 },
		Remove: func(d string) error { removedDirs = append(removedDirs, d); return nil },
		Sweep: func(recorded func(string) bool) error {
			swept = true
			if !recorded(a) || !recorded(b) || recorded(c) || recorded(d) {
				t.Errorf("Sweep sees a=%v b=%v c=%v d=%v", recorded(a), recorded(b), recorded(c), recorded(d))
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{c, d}; !slices.Equal(removed, want) || !slices.Equal(removedDirs, want) {
		t.Errorf("removed %v, dirs %v, want %v", removed, removedDirs, want)
	}
	if !swept {
		t.Error("Sweep not called")
	}
	leases, err := s.Leases()
	if err != nil || len(leases) != 1 || leases[0].ID != "live" {
		t.Errorf("Leases = %v, %v", leases, err)
	}
	if err := s.DeleteLease("live"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteLease("live"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteLease twice = %v", err)
	}

	// A failing Remove aborts everything.
	boom := errors.New("boom")
	if _, err := s.Collect(Collector{Remove: func(string) error { return boom }}); !errors.Is(err, boom) {
		t.Fatalf("Collect = %v", err)
	}
	if _, err := s.Layer(b); err != nil {
		t.Errorf("layer b gone after aborted collect: %v", err)
	}
	layers, err := s.Layers()
	if err != nil || len(layers) != 2 {
		t.Errorf("Layers = %v, %v", layers, err)
	}
}

func TestStorePersistsAndLocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "root", "store.db")
	s, err := OpenStore(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	addLayers(t, s, digestOf('a'))
	if _, err := OpenStore(path, Options{Timeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Errorf("second open = %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenStore(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.Layer(digestOf('a')); err != nil {
		t.Errorf("after reopen: %v", err)
	}
	if err := ro.AddLayer(Layer{DiffID: digestOf('b')}, nil); err == nil {
		t.Error("AddLayer on a read-only store succeeded")
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("store dir holds %v, want only store.db", ents)
	}
}

func TestStoreOpenRejects(t *testing.T) {
	dir := t.TempDir()
	// A layer state database is not a store.
	statePath := filepath.Join(dir, "state.db")
	db, err := Open(statePath, Options{})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := OpenStore(statePath, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("OpenStore(state.db) = %v, want ErrCorrupt", err)
	}
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(empty, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("OpenStore(empty) = %v, want ErrCorrupt", err)
	}
	newer := filepath.Join(dir, "v2.db")
	bdb, err := bolt.Open(newer, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	bdb.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("unionfs.store.v2")); return err })
	bdb.Close()
	if _, err := OpenStore(newer, Options{}); !errors.Is(err, ErrVersion) {
		t.Errorf("OpenStore(v2) = %v, want ErrVersion", err)
	}
	if _, err := OpenStore(filepath.Join(dir, "missing.db"), Options{ReadOnly: true}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("read-only open of a missing store = %v", err)
	}
}

func TestStoreCorruptValue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := OpenStore(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	bdb.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(storeBucket).Bucket(storeLayersBucket).Put([]byte(digestOf('a')), []byte("{not json"))
	})
	bdb.Close()
	s, err = OpenStore(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Layer(digestOf('a')); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Layer(corrupt) = %v", err)
	}
	if _, err := s.Layers(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Layers(corrupt) = %v", err)
	}
}
