package layerdb

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"testing"
)

// newTestDB opens a fresh writable database in t's temp dir, closed at cleanup.
func newTestDB(t *testing.T) *DB {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), ".unionfs", "state.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	return db
}

func seed(t *testing.T, db *DB, recs map[string]Record) {
	t.Helper()
	var cs []Change
	for p, r := range recs {
		cs = append(cs, PutChange(p, r))
	}
	if err := db.Apply(cs...); err != nil {
		t.Fatal(err)
	}
}

var (
	opq = Record{Opaque: true}
	wh  = Record{Opaque: true} // a whiteout is an opaque record with no entry in the layer
)

func redir(p string) Record { return Record{Redirect: p} }

func TestChanges(t *testing.T) {
	tests := []struct {
		name    string
		before  map[string]Record
		changes []Change
		want    map[string]Record
		wantErr error
	}{
		{
			name:    "put root",
			changes: []Change{PutChange("", opq)},
			want:    map[string]Record{"": opq},
		},
		{
			name:    "put replaces",
			before:  map[string]Record{"a": opq},
			changes: []Change{PutChange("a", Record{Opaque: true, Redirect: "x/y"})},
			want:    map[string]Record{"a": {Opaque: true, Redirect: "x/y"}},
		},
		{
			name:    "put zero record is kept",
			changes: []Change{PutChange("a", Record{})},
			want:    map[string]Record{"a": {}},
		},
		{
			name:    "delete absent",
			before:  map[string]Record{"a": wh},
			changes: []Change{DeleteChange("b")},
			want:    map[string]Record{"a": wh},
		},
		{
			name:    "delete is not recursive",
			before:  map[string]Record{"a": opq, "a/b": wh},
			changes: []Change{DeleteChange("a")},
			want:    map[string]Record{"a/b": wh},
		},
		{
			name:    "delete root only",
			before:  map[string]Record{"": opq, "a": wh},
			changes: []Change{DeleteChange("")},
			want:    map[string]Record{"a": wh},
		},
		{
			name: "delete tree stops at name boundary",
			before: map[string]Record{
				"a": opq, "a/b": opq, "a/b/c": wh, "a/b/c/d": wh,
				"a/bc": wh, "a/b!": wh, "a/b.x": wh, "a/b-": wh, "b": wh,
			},
			changes: []Change{DeleteTreeChange("a/b")},
			want:    map[string]Record{"a": opq, "a/bc": wh, "a/b!": wh, "a/b.x": wh, "a/b-": wh, "b": wh},
		},
		{
			name:    "delete tree of leaf",
			before:  map[string]Record{"a": opq, "ab": wh},
			changes: []Change{DeleteTreeChange("a")},
			want:    map[string]Record{"ab": wh},
		},
		{
			name:    "delete tree absent",
			before:  map[string]Record{"a": opq},
			changes: []Change{DeleteTreeChange("z/y")},
			want:    map[string]Record{"a": opq},
		},
		{
			name:    "delete tree root is everything",
			before:  map[string]Record{"": opq, "a": opq, "a/b": wh, "z": redir("q")},
			changes: []Change{DeleteTreeChange("")},
			want:    map[string]Record{},
		},
		{
			name: "move subtree",
			before: map[string]Record{
				"a/b": {Opaque: true, Redirect: "orig/b"}, "a/b/c": wh, "a/b/c/d": opq,
				"a/bc": wh, "a/b!": wh, "x": opq,
			},
			changes: []Change{MoveTreeChange("a/b", "x/y")},
			want: map[string]Record{
				"a/bc": wh, "a/b!": wh, "x": opq,
				"x/y": {Opaque: true, Redirect: "orig/b"}, "x/y/c": wh, "x/y/c/d": opq,
			},
		},
		{
			name: "move onto existing subtree replaces it",
			before: map[string]Record{
				"a": redir("r"), "a/k": wh,
				"z": opq, "z/old": wh, "z/old/deep": opq, "z/k": opq, "zz": wh, "z.x": wh,
			},
			changes: []Change{MoveTreeChange("a", "z")},
			want:    map[string]Record{"z": redir("r"), "z/k": wh, "zz": wh, "z.x": wh},
		},
		{
			name:    "move of absent source clears destination",
			before:  map[string]Record{"z": opq, "z/c": wh, "zed": wh},
			changes: []Change{MoveTreeChange("a", "z")},
			want:    map[string]Record{"zed": wh},
		},
		{
			name:    "move to sibling with shared name prefix",
			before:  map[string]Record{"a/b": opq, "a/b/c": wh},
			changes: []Change{MoveTreeChange("a/b", "a/bc")},
			want:    map[string]Record{"a/bc": opq, "a/bc/c": wh},
		},
		{
			name:    "move children only",
			before:  map[string]Record{"d/x": wh, "d/y/z": wh},
			changes: []Change{MoveTreeChange("d", "e/f")},
			want:    map[string]Record{"e/f/x": wh, "e/f/y/z": wh},
		},
		{
			name:    "move onto itself is a no-op",
			before:  map[string]Record{"a": opq, "a/b": wh},
			changes: []Change{MoveTreeChange("a", "a")},
			want:    map[string]Record{"a": opq, "a/b": wh},
		},
		{
			name:    "move into own subtree",
			before:  map[string]Record{"a": opq, "a/b": wh},
			changes: []Change{MoveTreeChange("a", "a/b/c")},
			wantErr: ErrInvalidPath,
		},
		{
			name:    "move onto ancestor",
			before:  map[string]Record{"a": opq, "a/b": wh},
			changes: []Change{MoveTreeChange("a/b", "a")},
			wantErr: ErrInvalidPath,
		},
		{
			name:    "move root",
			before:  map[string]Record{"a": opq},
			changes: []Change{MoveTreeChange("", "b")},
			wantErr: ErrInvalidPath,
		},
		{
			name:    "changes apply in order",
			changes: []Change{PutChange("a/b", wh), MoveTreeChange("a", "c"), PutChange("a", opq)},
			want:    map[string]Record{"a": opq, "c/b": wh},
		},
		{
			name:    "apply is all or nothing",
			before:  map[string]Record{"a": opq},
			changes: []Change{DeleteChange("a"), PutChange("b", wh), PutChange("/bad", wh)},
			wantErr: ErrInvalidPath,
		},
		{
			name:    "invalid redirect",
			changes: []Change{PutChange("a", redir("../etc"))},
			wantErr: ErrInvalidPath,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := newTestDB(t)
			seed(t, db, tt.before)
			err := db.Apply(tt.changes...)
			want := tt.want
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Apply: got %v, want %v", err, tt.wantErr)
				}
				want = tt.before
			case err != nil:
				t.Fatalf("Apply: %v", err)
			}
			got, err := db.Records()
			if err != nil {
				t.Fatal(err)
			}
			if want == nil {
				want = map[string]Record{}
			}
			if !maps.Equal(got, want) {
				t.Errorf("records:\n got %v\nwant %v", got, want)
			}
		})
	}
}

func TestZeroChange(t *testing.T) {
	db := newTestDB(t)
	seed(t, db, map[string]Record{"a": opq})
	if err := db.Apply(DeleteChange("a"), Change{}); err == nil {
		t.Fatal("Apply with a zero Change succeeded")
	}
	if _, err := db.Get("a"); err != nil {
		t.Fatalf("the batch was partly applied: %v", err)
	}
}

func TestSingleOps(t *testing.T) {
	db := newTestDB(t)
	if _, err := db.Get("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of absent path: %v, want ErrNotFound", err)
	}
	steps := []struct {
		name string
		do   func() error
		want map[string]Record
	}{
		{"put", func() error { return db.Put("a/b", redir("c/d")) }, map[string]Record{"a/b": redir("c/d")}},
		{"put root", func() error { return db.Put("", opq) }, map[string]Record{"": opq, "a/b": redir("c/d")}},
		{"put boundary", func() error { return db.Put("a/bc", wh) }, map[string]Record{"": opq, "a/b": redir("c/d"), "a/bc": wh}},
		{"delete tree", func() error { return db.DeleteTree("a/b") }, map[string]Record{"": opq, "a/bc": wh}},
		{"delete", func() error { return db.Delete("") }, map[string]Record{"a/bc": wh}},
		{"delete absent", func() error { return db.Delete("nope") }, map[string]Record{"a/bc": wh}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got, err := db.Records()
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got, s.want) {
			t.Fatalf("after %s: got %v, want %v", s.name, got, s.want)
		}
		for p, r := range s.want {
			if g, err := db.Get(p); err != nil || g != r {
				t.Fatalf("after %s: Get(%q) = %v, %v; want %v", s.name, p, g, err, r)
			}
		}
	}
}

func TestInvalidPaths(t *testing.T) {
	db := newTestDB(t)
	for _, p := range []string{"/", "/a", "a/", "a//b", ".", "..", "a/./b", "a/../b", "../a", "a\x00b"} {
		t.Run(p, func(t *testing.T) {
			for name, err := range map[string]error{
				"put":          db.Put(p, opq),
				"delete":       db.Delete(p),
				"delete tree":  db.DeleteTree(p),
				"move from":    db.Apply(MoveTreeChange(p, "x")),
				"move to":      db.Apply(MoveTreeChange("x", p)),
				"redirect":     db.Put("x", redir(p)),
				"index":        db.Apply(IndexChange(1, p)),
				"get":          func() error { _, err := db.Get(p); return err }(),
				"index (root)": db.Apply(IndexChange(1, "")),
			} {
				if !errors.Is(err, ErrInvalidPath) {
					t.Errorf("%s: got %v, want ErrInvalidPath", name, err)
				}
			}
		})
	}
}

func TestOriginsAndIndex(t *testing.T) {
	db := newTestDB(t)
	if err := db.SetOrigin(10, 1000); err != nil {
		t.Fatal(err)
	}
	if err := db.Apply(OriginChange(11, 1001), OriginChange(1<<63, 7), OriginChange(12, 9),
		IndexChange(1000, ".unionfs/index/3e8"), IndexChange(1<<64-1, "i/x")); err != nil {
		t.Fatal(err)
	}
	if err := db.Apply(DeleteOriginChange(12), DeleteIndexChange(42), OriginChange(11, 1002)); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteOrigin(99); err != nil {
		t.Fatal(err)
	}
	origins, err := db.Origins()
	if err != nil {
		t.Fatal(err)
	}
	if want := map[uint64]uint64{10: 1000, 11: 1002, 1 << 63: 7}; !maps.Equal(origins, want) {
		t.Errorf("Origins = %v, want %v", origins, want)
	}
	index, err := db.Index()
	if err != nil {
		t.Fatal(err)
	}
	if want := map[uint64]string{1000: ".unionfs/index/3e8", 1<<64 - 1: "i/x"}; !maps.Equal(index, want) {
		t.Errorf("Index = %v, want %v", index, want)
	}
	if p, err := db.IndexGet(1000); err != nil || p != ".unionfs/index/3e8" {
		t.Errorf("IndexGet(1000) = %q, %v", p, err)
	}
	if err := db.Apply(DeleteIndexChange(1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.IndexGet(1000); !errors.Is(err, ErrNotFound) {
		t.Errorf("IndexGet after delete: %v, want ErrNotFound", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	db := newTestDB(t)
	done := make(chan error)
	for g := range 4 {
		go func() {
			for i := range 20 {
				p := fmt.Sprintf("g/%d/%d", g, i)
				if err := db.Put(p, wh); err != nil {
					done <- err
					return
				}
				if _, err := db.Get(p); err != nil {
					done <- err
					return
				}
				if _, err := db.Records(); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	recs, err := db.Records()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 80 {
		t.Errorf("got %d records, want 80", len(recs))
	}
}
