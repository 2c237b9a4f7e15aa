package imgpull

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Test helpers that build layer tars, including ones archive/tar refuses to
// write (sparse maps, raw PAX records).

type tent struct {
	hdr  tar.Header
	body string
}

var testTime = time.Unix(1700000000, 0)

func tfile(name, body string) tent {
	return tent{tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: testTime}, body}
}

func tfileMode(name, body string, mode int64, uid, gid int) tent {
	e := tfile(name, body)
	e.hdr.Mode, e.hdr.Uid, e.hdr.Gid = mode, uid, gid
	return e
}

func tdir(name string) tent {
	return tent{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: testTime}}
}

func tsymlink(name, target string) tent {
	return tent{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: testTime}}
}

func tlink(name, target string) tent {
	return tent{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, ModTime: testTime}}
}

func tchar(name string, major, minor int64) tent {
	return tent{hdr: tar.Header{Typeflag: tar.TypeChar, Name: name, Mode: 0o666, Devmajor: major, Devminor: minor, ModTime: testTime}}
}

func tfifo(name string) tent {
	return tent{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: name, Mode: 0o640, ModTime: testTime}}
}

// mkTar writes entries with archive/tar.
func mkTar(t testing.TB, ents ...tent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("write header %q: %v", h.Name, err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rawHeader is a ustar header block, for entries archive/tar will not write.
func rawHeader(name string, typ byte, size int64) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], fmt.Sprintf("%011o\x00", testTime.Unix()))
	b[156] = typ
	copy(b[257:263], "ustar\x00")
	copy(b[263:265], "00")
	copy(b[148:156], "        ")
	var sum int64
	for _, c := range b {
		sum += int64(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func pad512(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// paxRecord formats one "LEN key=value\n" record; LEN counts itself.
func paxRecord(k, v string) string {
	rest := " " + k + "=" + v + "\n"
	n := len(rest) + 1
	for len(fmt.Sprint(n))+len(rest) != n {
		n++
	}
	return fmt.Sprint(n) + rest
}

// rawSparse is a PAX GNU sparse 1.0 file: realSize logical bytes holding
// data at offset 0, the rest a hole.
func rawSparse(name string, realSize int64, data string) []byte {
	recs := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") +
		paxRecord("GNU.sparse.name", name) + paxRecord("GNU.sparse.realsize", fmt.Sprint(realSize))
	var out []byte
	out = append(out, rawHeader("PaxHeaders/"+name, 'x', int64(len(recs)))...)
	out = append(out, pad512([]byte(recs))...)
	sparseMap := pad512([]byte(fmt.Sprintf("1\n0\n%d\n", len(data))))
	body := append(sparseMap, data...)
	out = append(out, rawHeader("GNUSparseFile.0/"+name, '0', int64(len(body)))...)
	return append(out, pad512(body)...)
}

// rawEnd is the end-of-archive marker.
func rawEnd() []byte { return make([]byte, 1024) }

// layerFixture is a layer directory inside a parent that also holds a
// sentinel directory: after an unpack, the parent must hold exactly these
// two, and the sentinel be unchanged.
type layerFixture struct {
	parent, layer, outside string
}

func newLayerFixture(t testing.TB) layerFixture {
	t.Helper()
	parent := t.TempDir()
	f := layerFixture{parent, filepath.Join(parent, "layer"), filepath.Join(parent, "outside")}
	for _, d := range []string{f.layer, f.outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(f.outside, "secret"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// checkContained reports anything an unpack did outside the layer.
func (f layerFixture) checkContained(t testing.TB) {
	t.Helper()
	ents, err := os.ReadDir(f.parent)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"layer", "outside"}) {
		t.Fatalf("unpack escaped: parent now holds %v", names)
	}
	ents, err = os.ReadDir(f.outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "secret" {
		t.Fatalf("unpack escaped: outside/ holds %v", ents)
	}
	if b, err := os.ReadFile(filepath.Join(f.outside, "secret")); err != nil || string(b) != "keep" {
		t.Fatalf("unpack escaped: outside/secret is %q, %v", b, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(f.outside, &st); err != nil || st.Mode&0o7777 != 0o755 {
		t.Fatalf("unpack escaped: outside/ mode %o, %v", st.Mode&0o7777, err)
	}
}

// tree lists a layer directory: path -> "type mode [content|target]",
// without the state directory.
func tree(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		if rel == reservedDir {
			return filepath.SkipDir
		}
		typ := map[os.FileMode]string{0: "-", os.ModeDir: "d", os.ModeSymlink: "L", os.ModeNamedPipe: "p"}[fi.Mode().Type()]
		desc := fmt.Sprintf("%s %o", typ, fi.Mode().Perm())
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + string(b)
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		}
		out[rel] = strings.TrimSpace(desc)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
