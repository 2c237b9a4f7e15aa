package fs

import (
	"maps"
	"testing"

	"github.com/unionfs/unionfs/layerdb"
)

func flat(t recordTree) map[string]layerdb.Record {
	out := make(map[string]layerdb.Record)
	for d, m := range t {
		for n, r := range m {
			out[joinPath(d, n)] = r
		}
	}
	return out
}

func TestRecordTree(t *testing.T) {
	w := layerdb.Record{Opaque: true}
	r := layerdb.Record{Redirect: "x"}
	start := map[string]layerdb.Record{
		"a": r, "a/b": w, "a/b/c": w, "a/bc": w, "ab": w, "z/y": w,
	}
	tests := []struct {
		name string
		op   func(recordTree)
		want map[string]layerdb.Record
	}{
		{"delete tree", func(t recordTree) { t.deleteTree("a/b") },
			map[string]layerdb.Record{"a": r, "a/bc": w, "ab": w, "z/y": w}},
		{"delete all", func(t recordTree) { t.deleteTree("") }, map[string]layerdb.Record{}},
		{"move tree", func(t recordTree) { t.moveTree("a", "q/n") },
			map[string]layerdb.Record{"q/n": r, "q/n/b": w, "q/n/b/c": w, "q/n/bc": w, "ab": w, "z/y": w}},
		{"move onto existing", func(t recordTree) { t.moveTree("a/b", "z") },
			map[string]layerdb.Record{"a": r, "a/bc": w, "ab": w, "z": w, "z/c": w}},
		{"move to itself", func(t recordTree) { t.moveTree("a", "a") }, start},
		{"put and del", func(t recordTree) { t.put("n/m", w); t.del("ab"); t.del("missing") },
			map[string]layerdb.Record{"a": r, "a/b": w, "a/b/c": w, "a/bc": w, "n/m": w, "z/y": w}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tree := newRecordTree(start)
			tc.op(tree)
			if got := flat(tree); !maps.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
