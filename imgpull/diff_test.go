package imgpull

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/unionfs/unionfs/layerdb"
)

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, body := range files {
		full := filepath.Join(root, p)
		dir := filepath.Dir(full)
		if strings.HasSuffix(p, "/") {
			dir = full
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(p, "/") {
			continue
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func putRecords(t *testing.T, layer string, recs map[string]layerdb.Record) {
	t.Helper()
	db, err := layerdb.Open(filepath.Join(layer, StateDBPath), layerdb.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for p, r := range recs {
		if err := db.Put(p, r); err != nil {
			t.Fatal(err)
		}
	}
}

type tarEntry struct {
	hdr  *tar.Header
	body string
}

func readTar(t *testing.T, b []byte) ([]string, map[string]tarEntry) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var names []string
	m := make(map[string]tarEntry)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names, m
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		names = append(names, h.Name)
		m[h.Name] = tarEntry{h, string(body)}
	}
}

func TestDiffUpper(t *testing.T) {
	upper := t.TempDir()
	writeFiles(t, upper, map[string]string{
		"etc/motd": "changed", "new": "n", "opq/inside": "i", "keep/": "", "var/": "",
	})
	if err := os.Symlink("/etc/motd", filepath.Join(upper, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(upper, "new"), filepath.Join(upper, "new2")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(upper, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	putRecords(t, upper, map[string]layerdb.Record{
		"gone":            {Opaque: true},
		"etc/old":         {Opaque: true},
		"opq":             {Opaque: true},
		"var/log/old.log": {Opaque: true}, // var/log is not in the upper
		"etc/motd":        {Opaque: true}, // a file over a whiteout: the file is enough
	})
	var buf bytes.Buffer
	if err := Diff(&buf, upper, DiffOptions{}); err != nil {
		t.Fatal(err)
	}
	names, m := readTar(t, buf.Bytes())
	want := []string{".wh.gone", "etc/", ".wh.old", "etc/motd", "fifo", "keep/", "link", "new", "new2",
		"opq/", "opq/.wh..wh..opq", "opq/inside", "var/", "var/log/.wh.old.log"}
	want[2] = "etc/.wh.old"
	if !slices.Equal(names, want) {
		t.Fatalf("entries:\n got %q\nwant %q", names, want)
	}
	if e := m["etc/motd"]; e.body != "changed" || e.hdr.Typeflag != tar.TypeReg {
		t.Errorf("etc/motd = %+v", e)
	}
	if e := m["link"]; e.hdr.Typeflag != tar.TypeSymlink || e.hdr.Linkname != "/etc/motd" {
		t.Errorf("link = %+v", e.hdr)
	}
	if e := m["new2"]; e.hdr.Typeflag != tar.TypeLink || e.hdr.Linkname != "new" {
		t.Errorf("new2 = %+v", e.hdr)
	}
	if e := m["fifo"]; e.hdr.Typeflag != tar.TypeFifo {
		t.Errorf("fifo = %+v", e.hdr)
	}
	for _, n := range names {
		if strings.HasPrefix(n, ".unionfs") {
			t.Errorf("state directory exported: %s", n)
		}
	}

	// What Diff writes, Unpack reads back to the same records.
	layer := t.TempDir()
	if _, err := Unpack(bytes.NewReader(buf.Bytes()), layer, UnpackOptions{NoSync: true}); err != nil {
		t.Fatal(err)
	}
	recs, _ := stateOf(t, layer)
	wantRecs := map[string]layerdb.Record{"gone": wh, "etc/old": wh, "opq": wh, "var/log/old.log": wh}
	if !mapsEqual(recs, wantRecs) {
		t.Errorf("round trip records = %v, want %v", recs, wantRecs)
	}
}

func TestDiffRenamedDirectory(t *testing.T) {
	lower2 := t.TempDir() // bottom
	lower1 := t.TempDir()
	upper := t.TempDir()
	writeFiles(t, lower2, map[string]string{"a/x": "x", "a/sub/y": "y", "a/z": "z", "b/stale": "s"})
	writeFiles(t, lower1, map[string]string{"a/w": "w"})
	putRecords(t, lower1, map[string]layerdb.Record{"a/z": {Opaque: true}})
	// "mv a b" through the mount, then a new file in b and a deletion of b/x.
	writeFiles(t, upper, map[string]string{"b/added": "+"})
	putRecords(t, upper, map[string]layerdb.Record{
		"a":   {Opaque: true},
		"b":   {Redirect: "a"},
		"b/x": {Opaque: true},
	})
	var buf bytes.Buffer
	if err := Diff(&buf, upper, DiffOptions{}); !errors.Is(err, ErrNeedLowers) {
		t.Fatalf("Diff without lowers = %v, want ErrNeedLowers", err)
	}
	buf.Reset()
	if err := Diff(&buf, upper, DiffOptions{Lowers: []string{lower1, lower2}}); err != nil {
		t.Fatal(err)
	}
	names, m := readTar(t, buf.Bytes())
	want := []string{".wh.a", "b/", "b/.wh..wh..opq", "b/added", "b/sub/", "b/sub/y", "b/w"}
	if !slices.Equal(names, want) {
		t.Fatalf("entries:\n got %q\nwant %q", names, want)
	}
	if m["b/sub/y"].body != "y" || m["b/w"].body != "w" {
		t.Errorf("content: %q %q", m["b/sub/y"].body, m["b/w"].body)
	}
}

func TestDiffUsesMeta(t *testing.T) {
	upper := t.TempDir()
	writeFiles(t, upper, map[string]string{"dev/null": "", "usr/bin/passwd": "pw"})
	db, err := layerdb.Open(filepath.Join(upper, StateDBPath), layerdb.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Apply(
		layerdb.MetaChange("dev/null", layerdb.Meta{Mode: unix.S_IFCHR | 0o666, Rdev: unix.Mkdev(1, 3)}),
		layerdb.MetaChange("usr/bin/passwd", layerdb.Meta{Mode: unix.S_IFREG | 0o4755, UID: 0, GID: 0,
			Xattrs: map[string][]byte{"security.capability": {1}}}),
	)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Diff(&buf, upper, DiffOptions{}); err != nil {
		t.Fatal(err)
	}
	_, m := readTar(t, buf.Bytes())
	if h := m["dev/null"].hdr; h == nil || h.Typeflag != tar.TypeChar || h.Devmajor != 1 || h.Devminor != 3 || h.Mode != 0o666 {
		t.Errorf("dev/null = %+v", h)
	}
	if h := m["usr/bin/passwd"].hdr; h == nil || h.Mode != 0o4755 || h.PAXRecords["SCHILY.xattr.security.capability"] != "\x01" {
		t.Errorf("passwd = %+v", h)
	}
}

func TestDiffRefusesAMountedUpper(t *testing.T) {
	upper := t.TempDir()
	db, err := layerdb.Open(filepath.Join(upper, StateDBPath), layerdb.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := Diff(io.Discard, upper, DiffOptions{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("Diff of a locked upper = %v", err)
	}
}
