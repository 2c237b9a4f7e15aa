package imgpull

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/unionfs/unionfs/layerdb"
)

// FuzzUnpack: whatever the bytes, Unpack never panics and never creates,
// changes or removes anything outside the layer directory; if it succeeds,
// the layer's state database is valid.
func FuzzUnpack(f *testing.F) {
	f.Add(mkTar(f, tfile("a", "1"), tdir("d"), tfile("d/.wh.x", ""), tfile("d/.wh..wh..opq", "")))
	f.Add(mkTar(f, tsymlink("evil", "/"), tfile("evil/x", "1"), tsymlink("up", "../outside"), tfile("up/secret", "2")))
	f.Add(mkTar(f, tlink("hl", "../outside/secret"), tlink("h2", "/etc/passwd")))
	f.Add(mkTar(f, tchar("dev/null", 1, 3), tfifo("p"), tfileMode("s", "x", 0o6755, 0, 0)))
	f.Add(mkTar(f, tfile("a", "1"), tfile("a/b", "2"), tdir("a"), tfile("../x", "")))
	f.Add(mkTar(f, tdir(".unionfs"), tfile(".unionfs/state.db", "x"), tsymlink("r", "/"), tfile("r/.unionfs/state.db", "y")))
	f.Add(append(rawSparse("s", 1<<40, "x"), rawEnd()...))
	f.Fuzz(func(t *testing.T, data []byte) {
		fx := newLayerFixture(t)
		_, err := Unpack(bytes.NewReader(data), fx.layer, UnpackOptions{
			Limits: Limits{MaxBytes: 4 << 20, MaxEntries: 256},
			NoSync: true,
		})
		fx.checkContained(t)
		if err != nil {
			return
		}
		p := filepath.Join(fx.layer, StateDBPath)
		if _, serr := os.Lstat(p); serr != nil {
			return
		}
		db, err := layerdb.Open(p, layerdb.Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("state database after a successful unpack: %v", err)
		}
		defer db.Close()
		if _, err := db.Records(); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Metas(); err != nil {
			t.Fatal(err)
		}
	})
}
