package whiteout

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name   string
		kind   Kind
		target string
	}{
		{"a", None, "a"},
		{"", None, ""},
		{".wh", None, ".wh"},
		{".whx", None, ".whx"},
		{"wh.a", None, "wh.a"},
		{".WH.a", None, ".WH.a"}, // case matters: tar names are bytes
		{"a.wh.b", None, "a.wh.b"},
		{".wh.a", Whiteout, "a"},
		{".wh.a.txt", Whiteout, "a.txt"},
		{".wh. ", Whiteout, " "},
		{".wh..a", Whiteout, ".a"},
		{".wh..wh", Whiteout, ".wh"},
		{".wh.wh.x", Whiteout, "wh.x"},
		{".wh.ü", Whiteout, "ü"},
		{".wh..wh..opq", Opaque, ""},
		{".wh..wh.plnk", Meta, "plnk"},
		{".wh..wh.aufs", Meta, "aufs"},
		{".wh..wh.orph", Meta, "orph"},
		{".wh..wh..opq2", Meta, ".opq2"},
		{".wh..wh.", Meta, ""},
		{".wh.", Invalid, ""},
		{".wh..", Invalid, "."},
		{".wh...", Invalid, ".."},
		{".wh....", Whiteout, "..."}, // "..." is a legal name
		{".wh.a/b", Invalid, "a/b"},
		{".wh./", Invalid, "/"},
		{".wh.a\x00", Invalid, "a\x00"},
	}
	for _, tt := range tests {
		kind, target := Parse(tt.name)
		if kind != tt.kind || target != tt.target {
			t.Errorf("Parse(%q) = %v, %q; want %v, %q", tt.name, kind, target, tt.kind, tt.target)
		}
	}
}

func TestParsePath(t *testing.T) {
	tests := []struct {
		path   string
		kind   Kind
		dir    string
		target string
	}{
		{"a", None, "", "a"},
		{"a/b", None, "a", "b"},
		{"a/b/", None, "a", "b"},
		{".wh.x", Whiteout, "", "x"},
		{"a/b/.wh.c", Whiteout, "a/b", "c"},
		{"./a/.wh.c", Whiteout, "./a", "c"},
		{"/abs/.wh.c", Whiteout, "/abs", "c"},
		{"a/.wh..wh..opq", Opaque, "a", ""},
		{".wh..wh..opq", Opaque, "", ""},
		{"a/.wh..wh.plnk/", Meta, "a", "plnk"},
		{"a/.wh..wh.plnk/x", None, "a/.wh..wh.plnk", "x"},
		{"a/.wh.", Invalid, "a", ""},
		{"a/.wh../", Invalid, "a", "."},
		{"", None, "", ""},
		{"/", None, "", ""},
	}
	for _, tt := range tests {
		kind, dir, target := ParsePath(tt.path)
		if kind != tt.kind || dir != tt.dir || target != tt.target {
			t.Errorf("ParsePath(%q) = %v, %q, %q; want %v, %q, %q",
				tt.path, kind, dir, target, tt.kind, tt.dir, tt.target)
		}
	}
}

func TestNameRoundTrip(t *testing.T) {
	for _, target := range []string{"a", "a.txt", ".a", "...", " ", "wh.x", "ü", strings.Repeat("x", 251)} {
		if !ValidTarget(target) {
			t.Errorf("ValidTarget(%q) = false", target)
			continue
		}
		name := Name(target)
		if kind, got := Parse(name); kind != Whiteout || got != target {
			t.Errorf("Parse(Name(%q)) = %v, %q", target, kind, got)
		}
	}
}

func TestValidTarget(t *testing.T) {
	for _, target := range []string{"", ".", "..", "a/b", "/", "a\x00", ".wh.x", ".wh..wh..opq", ".wh."} {
		if ValidTarget(target) {
			t.Errorf("ValidTarget(%q) = true", target)
		}
	}
}

func TestIsReserved(t *testing.T) {
	tests := map[string]bool{
		".wh.a":        true,
		".wh.":         true,
		".wh..wh..opq": true,
		".wh":          false,
		"a.wh.":        false,
		"":             false,
		".unionfs":     false,
	}
	for name, want := range tests {
		if got := IsReserved(name); got != want {
			t.Errorf("IsReserved(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestOpaqueNameConstant(t *testing.T) {
	if OpaqueName != ".wh..wh..opq" {
		t.Fatalf("OpaqueName = %q", OpaqueName)
	}
}

func TestKindString(t *testing.T) {
	want := map[Kind]string{None: "none", Whiteout: "whiteout", Opaque: "opaque", Meta: "meta", Invalid: "invalid", Kind(42): "Kind(42)"}
	for k, s := range want {
		if k.String() != s {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), k.String(), s)
		}
	}
}

// FuzzParse checks Parse's invariants on arbitrary names: it never panics,
// every kind agrees with the namespace rules, and valid targets round-trip.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "a", ".wh.", ".wh.a", ".wh..wh..opq", ".wh..wh.plnk", ".wh..", ".wh.a/b", "a/.wh.b", ".wh.\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kind, target := Parse(s)
		switch kind {
		case None:
			if IsReserved(s) || target != s {
				t.Fatalf("Parse(%q) = none, %q", s, target)
			}
		case Whiteout:
			if !validComponent(target) || Name(target) != s {
				t.Fatalf("Parse(%q) = whiteout, %q", s, target)
			}
		case Opaque:
			if s != OpaqueName || target != "" {
				t.Fatalf("Parse(%q) = opaque, %q", s, target)
			}
		case Meta:
			if !strings.HasPrefix(s, metaPrefix) || s == OpaqueName || metaPrefix+target != s {
				t.Fatalf("Parse(%q) = meta, %q", s, target)
			}
		case Invalid:
			if !IsReserved(s) || validComponent(target) || Name(target) != s {
				t.Fatalf("Parse(%q) = invalid, %q", s, target)
			}
		default:
			t.Fatalf("Parse(%q) = unknown kind %v", s, kind)
		}

		if ValidTarget(s) {
			if k, got := Parse(Name(s)); k != Whiteout || got != s {
				t.Fatalf("Parse(Name(%q)) = %v, %q", s, k, got)
			}
		}

		pk, dir, ptarget := ParsePath(s)
		trimmed := strings.TrimRight(s, "/")
		base := trimmed[strings.LastIndexByte(trimmed, '/')+1:]
		if wk, wt := Parse(base); pk != wk || ptarget != wt {
			t.Fatalf("ParsePath(%q) = %v, %q; Parse(%q) = %v, %q", s, pk, ptarget, base, wk, wt)
		}
		if dir != "" && dir+"/"+base != trimmed {
			t.Fatalf("ParsePath(%q) dir = %q, base %q", s, dir, base)
		}
	})
}
