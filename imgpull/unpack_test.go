package imgpull

import (
	"bytes"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/unionfs/unionfs/layerdb"
)

func unpackInto(t testing.TB, dir string, data []byte, opts UnpackOptions) (*UnpackResult, error) {
	t.Helper()
	opts.NoSync = true
	return Unpack(bytes.NewReader(data), dir, opts)
}

func stateOf(t testing.TB, dir string) (map[string]layerdb.Record, map[string]layerdb.Meta) {
	t.Helper()
	p := filepath.Join(dir, StateDBPath)
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return map[string]layerdb.Record{}, map[string]layerdb.Meta{}
	}
	db, err := layerdb.Open(p, layerdb.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	recs, err := db.Records()
	if err != nil {
		t.Fatal(err)
	}
	metas, err := db.Metas()
	if err != nil {
		t.Fatal(err)
	}
	return recs, metas
}

var wh = layerdb.Record{Opaque: true}

// TestUnpackHostile is the table of layers that try to reach outside their
// directory or to break the store: each either fails with the given error
// or yields the given tree, and never touches anything outside.
func TestUnpackHostile(t *testing.T) {
	for _, c := range []struct {
		name    string
		tar     func(t testing.TB) []byte
		wantErr error
		want    map[string]string // entries that must be present, "" = must be absent
		records map[string]layerdb.Record
	}{
		{
			name: "absolute path lands inside",
			tar:  func(t testing.TB) []byte { return mkTar(t, tfile("/etc/passwd", "x")) },
			want: map[string]string{"etc/passwd": "- 644 x", "etc": "d 755"},
		},
		{
			name:    "dotdot climbs out",
			tar:     func(t testing.TB) []byte { return mkTar(t, tfile("../outside/secret", "pwned")) },
			wantErr: ErrInvalidLayer,
		},
		{
			name:    "dotdot in the middle climbs out",
			tar:     func(t testing.TB) []byte { return mkTar(t, tfile("a/../../outside/x", "pwned")) },
			wantErr: ErrInvalidLayer,
		},
		{
			name: "dotdot that stays inside is fine",
			tar:  func(t testing.TB) []byte { return mkTar(t, tfile("a/../b", "ok")) },
			want: map[string]string{"b": "- 644 ok", "a": ""},
		},
		{
			name: "write through an absolute symlink stays inside",
			tar: func(t testing.TB) []byte {
				return mkTar(t, tsymlink("evil", "/"), tfile("evil/escaped", "x"))
			},
			want: map[string]string{"evil": "L 777 -> /", "escaped": "- 644 x"},
		},
		{
			name: "write through a relative symlink out stays inside",
			tar: func(t testing.TB) []byte {
				return mkTar(t, tdir("outside"), tsymlink("up", "../../../outside"), tfile("up/secret", "pwned"))
			},
			want: map[string]string{"outside/secret": "- 644 pwned"},
		},
		{
			name: "write through a dangling symlink fails",
			tar: func(t testing.TB) []byte {
				return mkTar(t, tsymlink("dangle", "../../nowhere"), tfile("dangle/x", "pwned"))
			},
			wantErr: ErrInvalidLayer,
		},
		{
			name: "replacing a symlink never writes through it",
			tar: func(t testing.TB) []byte {
				return mkTar(t, tsymlink("f", "../outside/secret"), tfile("f", "mine"))
			},
			want: map[string]string{"f": "- 644 mine"},
		},
		{
			name:    "hard link to outside",
			tar:     func(t testing.TB) []byte { return mkTar(t, tlink("hl", "../outside/secret")) },
			wantErr: ErrInvalidLayer,
		},
		{
			name:    "hard link to an absolute host path",
			tar:     func(t testing.TB) []byte { return mkTar(t, tlink("hl", "/etc/passwd")) },
			wantErr: ErrInvalidLayer,
		},
		{
			name: "hard link through a symlink resolves inside",
			tar: func(t testing.TB) []byte {
				return mkTar(t, tfile("real", "r"), tsymlink("sl", "/"), tlink("hl", "sl/real"))
			},
			want: map[string]string{"hl": "- 644 r"},
		},
		{
			name:    "hard link to a directory",
			tar:     func(t testing.TB) []byte { return mkTar(t, tdir("d"), tlink("hl", "d")) },
			wantErr: ErrInvalidLayer,
		},
		{
			name: "device nodes become placeholders",
			tar:  func(t testing.TB) []byte { return mkTar(t, tchar("dev/null", 1, 3)) },
			want: map[string]string{"dev/null": "- 600"},
		},
		{
			name:    "bare whiteout name",
			tar:     func(t testing.TB) []byte { return mkTar(t, tfile("a/.wh.", "")) },
			wantErr: ErrInvalidLayer,
		},
		{
			name:    "whiteout of dotdot",
			tar:     func(t testing.TB) []byte { return mkTar(t, tfile(".wh..", "")) },
			wantErr: ErrInvalidLayer,
		},
		{
			name: "AUFS bookkeeping is skipped",
			tar:  func(t testing.TB) []byte { return mkTar(t, tfile(".wh..wh.plnk/1", ""), tfile(".wh..wh.aufs", "")) },
			want: map[string]string{".wh..wh.aufs": "", ".wh..wh.plnk": ""},
		},
		{
			name: "the state directory cannot be written",
			tar: func(t testing.TB) []byte {
				return mkTar(t, tdir(".unionfs"), tfile(".unionfs/state.db", "junk"), tfile("ok", "1"))
			},
			want: map[string]string{"ok": "- 644 1"},
		},
		{
			name: "the state directory cannot be reached through a symlink",
			tar: func(t testing.TB) []byte {
				return mkTar(t, tsymlink("root", "/"), tdir("root/.unionfs"), tfile("root/.unionfs/state.db", "junk"),
					tsymlink(".unionfs", "/tmp"), tlink(".unionfs", "root"))
			},
			want: map[string]string{"root": "L 777 -> /"},
		},
		{
			name:    "the state directory cannot be a hard link target",
			tar:     func(t testing.TB) []byte { return mkTar(t, tlink("x", ".unionfs/state.db")) },
			wantErr: ErrInvalidLayer,
		},
		{
			name:    "whiteouts of the state directory are dropped",
			tar:     func(t testing.TB) []byte { return mkTar(t, tfile(".wh..unionfs", ""), tfile(".wh.x", "")) },
			records: map[string]layerdb.Record{"x": wh},
		},
		{
			name: "duplicate entries: the last wins",
			tar: func(t testing.TB) []byte {
				return mkTar(t, tfile("a", "one"), tlink("keep", "a"), tfile("a", "two"),
					tdir("d"), tfile("d/child", "c"), tfile("d", "now a file"),
					tfile("f", "was a file"), tdir("f"), tfile("f/x", "x"),
					tdir("m"), tfile("m/1", "1"), tdir("m"))
			},
			want: map[string]string{"a": "- 644 two", "keep": "- 644 one", "d": "- 644 now a file",
				"d/child": "", "f": "d 755", "f/x": "- 644 x", "m/1": "- 644 1"},
		},
		{
			name: "a file where a directory is needed",
			tar: func(t testing.TB) []byte {
				return mkTar(t, tfile("a", "file"), tfile("a/b", "x"))
			},
			wantErr: unix.ENOTDIR,
		},
		{
			name: "root entry must be a directory",
			tar: func(t testing.TB) []byte {
				return mkTar(t, tfile(".", "x"))
			},
			wantErr: ErrInvalidLayer,
		},
		{
			name: "trailing garbage after the archive is drained",
			tar: func(t testing.TB) []byte {
				return append(mkTar(t, tfile("a", "1")), bytes.Repeat([]byte("junk"), 1000)...)
			},
			want: map[string]string{"a": "- 644 1"},
		},
		{
			name:    "truncated archive",
			tar:     func(t testing.TB) []byte { b := mkTar(t, tfile("a", strings.Repeat("x", 2000))); return b[:1000] },
			wantErr: ErrInvalidLayer,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newLayerFixture(t)
			_, err := unpackInto(t, f.layer, c.tar(t), UnpackOptions{})
			f.checkContained(t)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("Unpack = %v, want %v", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			got := tree(t, f.layer)
			for p, want := range c.want {
				if got[p] != want {
					t.Errorf("%s: got %q, want %q (tree %v)", p, got[p], want, got)
				}
			}
			recs, _ := stateOf(t, f.layer)
			if c.records != nil && !maps.Equal(recs, c.records) {
				t.Errorf("records = %v, want %v", recs, c.records)
			}
			for p := range got {
				if strings.Contains(p, ".wh.") && c.want[p] == "" {
					t.Errorf("whiteout file %s on disk", p)
				}
			}
		})
	}
}

func TestUnpackWhiteouts(t *testing.T) {
	f := newLayerFixture(t)
	data := mkTar(t,
		tfile(".wh.gone", ""),
		tfile("dir/.wh.x", ""), // parent not in the tar: created
		tdir("opq"), tfile("opq/.wh..wh..opq", ""), tfile("opq/keep", "k"),
		tfile("both", "new"), tfile(".wh.both", ""), // both take effect
		tdir("sub"), tfile("sub/.wh.dir", ""), tdir("sub/dir"), tfile("sub/dir/f", "f"),
	)
	res, err := unpackInto(t, f.layer, data, UnpackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]layerdb.Record{"gone": wh, "dir/x": wh, "opq": wh, "both": wh, "sub/dir": wh}
	recs, _ := stateOf(t, f.layer)
	if !maps.Equal(recs, want) || !maps.Equal(res.Records, want) {
		t.Errorf("records = %v (result %v), want %v", recs, res.Records, want)
	}
	got := tree(t, f.layer)
	for _, p := range []string{"dir", "opq/keep", "both", "sub/dir/f"} {
		if got[p] == "" {
			t.Errorf("%s missing: %v", p, got)
		}
	}
	for p := range got {
		if strings.Contains(p, ".wh.") {
			t.Errorf("whiteout file %s on disk", p)
		}
	}
}

func TestUnpackRootlessMeta(t *testing.T) {
	f := newLayerFixture(t)
	setuid := tfileMode("usr/bin/passwd", "pw", 0o4755, 0, 0)
	setuid.hdr.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": "\x01\x02", "SCHILY.xattr.user.k": "v"}
	shadow := tfileMode("etc/shadow", "s", 0o000, 0, 42)
	locked := tdir("locked")
	locked.hdr.Mode, locked.hdr.Uid = 0o500, 7
	data := mkTar(t, setuid, shadow, tchar("dev/null", 1, 3), tfifo("run/fifo"),
		tsymlink("lnk", "usr/bin/passwd"), tlink("usr/bin/passwd2", "usr/bin/passwd"),
		locked, tfile("locked/inner", "i"))
	if _, err := unpackInto(t, f.layer, data, UnpackOptions{Rootless: true}); err != nil {
		t.Fatal(err)
	}
	_, metas := stateOf(t, f.layer)
	check := func(p string, mode uint32, uid, gid uint32) layerdb.Meta {
		t.Helper()
		m, ok := metas[p]
		if !ok {
			t.Fatalf("no meta for %s (have %v)", p, slices.Collect(maps.Keys(metas)))
		}
		if m.Mode != mode || m.UID != uid || m.GID != gid {
			t.Errorf("meta %s = mode %o uid %d gid %d, want %o %d %d", p, m.Mode, m.UID, m.GID, mode, uid, gid)
		}
		return m
	}
	m := check("usr/bin/passwd", unix.S_IFREG|0o4755, 0, 0)
	if string(m.Xattrs["security.capability"]) != "\x01\x02" || string(m.Xattrs["user.k"]) != "v" {
		t.Errorf("xattrs = %q", m.Xattrs)
	}
	check("usr/bin/passwd2", unix.S_IFREG|0o4755, 0, 0)
	check("etc/shadow", unix.S_IFREG, 0, 42)
	if d := check("dev/null", unix.S_IFCHR|0o666, 0, 0); d.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("dev/null rdev = %#x", d.Rdev)
	}
	check("run/fifo", unix.S_IFIFO|0o640, 0, 0)
	check("lnk", unix.S_IFLNK|0o777, 0, 0)
	check("locked", unix.S_IFDIR|0o500, 7, 0)
	check("", unix.S_IFDIR|0o755, 0, 0)
	check("usr", unix.S_IFDIR|0o755, 0, 0) // implicit parent

	// On disk: no setuid bit, readable by the user serving the layer, no device.
	var st unix.Stat_t
	for p, want := range map[string]uint32{
		"usr/bin/passwd": unix.S_IFREG | 0o755,
		"etc/shadow":     unix.S_IFREG | 0o400,
		"dev/null":       unix.S_IFREG | 0o600,
		"run/fifo":       unix.S_IFIFO | 0o640,
		"locked":         unix.S_IFDIR | 0o700,
	} {
		if err := unix.Lstat(filepath.Join(f.layer, p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode != want {
			t.Errorf("%s on disk: mode %o, want %o", p, st.Mode, want)
		}
		if int(st.Uid) != os.Geteuid() {
			t.Errorf("%s on disk: uid %d, want ours (%d)", p, st.Uid, os.Geteuid())
		}
	}
}

func TestUnpackAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chown on disk") // the rootless path is TestUnpackRootlessMeta
	}
	f := newLayerFixture(t)
	setuid := tfileMode("usr/bin/passwd", "pw", 0o4755, 0, 0)
	owned := tfileMode("home/u/f", "f", 0o640, 1000, 1001)
	ovl := tdir("o")
	ovl.hdr.PAXRecords = map[string]string{"SCHILY.xattr.trusted.overlay.opaque": "y"}
	data := mkTar(t, setuid, owned, tchar("dev/null", 1, 3), ovl)
	if _, err := unpackInto(t, f.layer, data, UnpackOptions{}); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(f.layer, "usr/bin/passwd"), &st); err != nil || st.Mode != unix.S_IFREG|0o4755 {
		t.Errorf("passwd mode %o, %v", st.Mode, err)
	}
	if err := unix.Lstat(filepath.Join(f.layer, "home/u/f"), &st); err != nil || st.Uid != 1000 || st.Gid != 1001 {
		t.Errorf("home/u/f owner %d:%d, %v", st.Uid, st.Gid, err)
	}
	if st.Mtim.Sec != testTime.Unix() {
		t.Errorf("mtime %d, want %d", st.Mtim.Sec, testTime.Unix())
	}
	_, metas := stateOf(t, f.layer)
	if _, ok := metas["usr/bin/passwd"]; ok {
		t.Error("as root, an ordinary file got meta")
	}
	if m := metas["dev/null"]; m.Mode != unix.S_IFCHR|0o666 {
		t.Errorf("dev/null meta = %+v", m)
	}
	// The overlay opaque xattr is never put on disk (it would change the union); it is kept in meta.
	if _, err := unix.Lgetxattr(filepath.Join(f.layer, "o"), "trusted.overlay.opaque", make([]byte, 8)); err == nil {
		t.Error("trusted.overlay.opaque set on disk")
	}
	if string(metas["o"].Xattrs["trusted.overlay.opaque"]) != "y" {
		t.Errorf("o meta = %+v", metas["o"])
	}
}

func TestUnpackLimits(t *testing.T) {
	for _, c := range []struct {
		name   string
		data   func(t testing.TB) []byte
		limits Limits
	}{
		{"zero-filled file over MaxBytes", func(t testing.TB) []byte {
			return mkTar(t, tfile("big", string(make([]byte, 2<<20))))
		}, Limits{MaxBytes: 1 << 20}},
		{"too many entries", func(t testing.TB) []byte {
			var ents []tent
			for i := range 20 {
				ents = append(ents, tfile("f"+string(rune('a'+i)), ""))
			}
			return mkTar(t, ents...)
		}, Limits{MaxEntries: 10}},
		{"sparse bomb", func(t testing.TB) []byte {
			return append(rawSparse("bomb", 1<<50, "x"), rawEnd()...)
		}, Limits{}},
		{"sparse file over a small limit", func(t testing.TB) []byte {
			return append(rawSparse("bomb", 10<<20, "x"), rawEnd()...)
		}, Limits{MaxBytes: 1 << 20}},
		{"whiteout flood", func(t testing.TB) []byte {
			var ents []tent
			for i := range 50 {
				ents = append(ents, tfile(".wh.f"+strings.Repeat("x", i), ""))
			}
			return mkTar(t, ents...)
		}, Limits{MaxEntries: 40}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newLayerFixture(t)
			_, err := unpackInto(t, f.layer, c.data(t), UnpackOptions{Limits: c.limits})
			if !errors.Is(err, ErrLimit) {
				t.Fatalf("Unpack = %v, want ErrLimit", err)
			}
			f.checkContained(t)
		})
	}
}

func TestUnpackSparseStaysSparse(t *testing.T) {
	f := newLayerFixture(t)
	data := append(rawSparse("holey", 64<<20, "data"), rawEnd()...)
	if _, err := unpackInto(t, f.layer, data, UnpackOptions{}); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(f.layer, "holey"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 64<<20 {
		t.Errorf("size %d", st.Size)
	}
	if st.Blocks*512 > 1<<20 {
		t.Errorf("64 MiB sparse file takes %d bytes on disk", st.Blocks*512)
	}
	b := make([]byte, 4)
	fd, err := os.Open(filepath.Join(f.layer, "holey"))
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	if _, err := fd.Read(b); err != nil || string(b) != "data" {
		t.Errorf("content %q, %v", b, err)
	}
}

func TestUnpackResultCountsStream(t *testing.T) {
	f := newLayerFixture(t)
	data := append(mkTar(t, tfile("a", "1")), make([]byte, 4096)...)
	res, err := Unpack(bytes.NewReader(data), f.layer, UnpackOptions{}) // with the final sync
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes != int64(len(data)) || res.Entries != 1 {
		t.Errorf("result = %d bytes, %d entries; want %d, 1", res.Bytes, res.Entries, len(data))
	}
	if _, err := os.Stat(filepath.Join(f.layer, StateDBPath)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a layer without records or meta got a state database: %v", err)
	}
}

func TestCleanName(t *testing.T) {
	for in, want := range map[string]string{
		"a": "a", "./a": "a", "/a/b/": "a/b", "a//b": "a/b", "./": "", "/": "", "a/./b": "a/b", "a/../b": "b",
		"..": "!", "../a": "!", "a/../..": "!", "/../a": "!", "a\x00b": "!",
	} {
		got, err := cleanName(in)
		if want == "!" {
			if err == nil {
				t.Errorf("cleanName(%q) = %q, want an error", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("cleanName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
