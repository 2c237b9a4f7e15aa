package fs

import (
	"strings"

	"github.com/unionfs/unionfs/layerdb"
)

// recordTree is the in-memory copy of the upper's records, grouped by parent
// directory, so that moving or deleting a directory's subtree visits the
// directories that have records rather than every record.
type recordTree map[string]map[string]layerdb.Record

func newRecordTree(recs map[string]layerdb.Record) recordTree {
	t := make(recordTree)
	for p, r := range recs {
		t.put(p, r)
	}
	return t
}

func (t recordTree) get(p string) (layerdb.Record, bool) {
	dir, name := splitPath(p)
	r, ok := t[dir][name]
	return r, ok
}

func (t recordTree) put(p string, r layerdb.Record) {
	dir, name := splitPath(p)
	m := t[dir]
	if m == nil {
		m = make(map[string]layerdb.Record)
		t[dir] = m
	}
	m[name] = r
}

func (t recordTree) del(p string) {
	dir, name := splitPath(p)
	if m := t[dir]; m != nil {
		delete(m, name)
		if len(m) == 0 {
			delete(t, dir)
		}
	}
}

// under reports whether directory d is p or lies beneath it.
func under(d, p string) bool {
	return p == "" || d == p || strings.HasPrefix(d, p+"/")
}

// deleteTree removes the record at p and every record beneath it.
func (t recordTree) deleteTree(p string) {
	if p != "" {
		t.del(p)
	}
	for d := range t {
		if under(d, p) {
			delete(t, d)
		}
	}
}

// moveTree moves the record at from and everything beneath it to to,
// replacing what was there.
func (t recordTree) moveTree(from, to string) {
	if from == to {
		return
	}
	t.deleteTree(to)
	if r, ok := t.get(from); ok {
		t.del(from)
		t.put(to, r)
	}
	moved := make(map[string]map[string]layerdb.Record)
	for d, m := range t {
		if under(d, from) {
			moved[to+d[len(from):]] = m
			delete(t, d)
		}
	}
	for d, m := range moved {
		t[d] = m
	}
}
