package layerdb

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzRecordDecode: decoding arbitrary bytes never panics, fails only with
// ErrCorrupt, and whatever decodes re-encodes to the same bytes (the encoding
// is canonical) with a redirect that is a valid path.
func FuzzRecordDecode(f *testing.F) {
	for _, r := range []Record{{}, {Opaque: true}, {Redirect: "a/b"}, {Opaque: true, Redirect: "x"}} {
		f.Add(encodeRecord(r))
	}
	for _, b := range []string{"", "\x04", "\xff", "\x00junk", "\x02", "\x02/abs", "\x03a//b", "\x02..", "\x02a\x00b"} {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode %q: error %v does not wrap ErrCorrupt", b, err)
			}
			return
		}
		if !validPath(r.Redirect) {
			t.Fatalf("decode %q: accepted invalid redirect %q", b, r.Redirect)
		}
		if enc := encodeRecord(r); !bytes.Equal(enc, b) {
			t.Fatalf("decode %q = %+v, re-encodes as %q", b, r, enc)
		}
	})
}

func TestRecordEncoding(t *testing.T) {
	tests := []struct {
		r    Record
		want string
	}{
		{Record{}, "\x00"},
		{Record{Opaque: true}, "\x01"},
		{Record{Redirect: "a/b"}, "\x02a/b"},
		{Record{Opaque: true, Redirect: "c"}, "\x03c"},
	}
	for _, tt := range tests {
		if got := encodeRecord(tt.r); string(got) != tt.want {
			t.Errorf("encode %+v = %q, want %q", tt.r, got, tt.want)
		}
		if got, err := decodeRecord([]byte(tt.want)); err != nil || got != tt.r {
			t.Errorf("decode %q = %+v, %v; want %+v", tt.want, got, err, tt.r)
		}
	}
}
