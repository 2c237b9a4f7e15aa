package main

import (
	"errors"
	"slices"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
		ok   bool
	}{
		{nil, 0, false},
		{[]float64{3}, 3, true},
		{[]float64{5, 1, 3}, 3, true},
		{[]float64{4, 1, 3, 2}, 2.5, true},
	} {
		got, ok := median(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("median(%v) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestRelativeLowers(t *testing.T) {
	for _, tc := range []struct {
		in      []string
		dir     string
		rel     []string
		wantErr bool
	}{
		{[]string{"/f/layers/001", "/f/layers/000"}, "/f/layers", []string{"001", "000"}, false},
		{[]string{"/f/big"}, "/f", []string{"big"}, false},
		{[]string{"/f/full/layers/000", "/f/scratch/0001/empty-lower"}, "/f", []string{"full/layers/000", "scratch/0001/empty-lower"}, false},
		{[]string{"/a/x", "/b/y"}, "/", []string{"a/x", "b/y"}, false},
		// A prefix that is not a path component is not a common directory.
		{[]string{"/f/lay/1", "/f/layers/0"}, "/f", []string{"lay/1", "layers/0"}, false},
		{[]string{"/f/a:b", "/f/c"}, "", nil, true},
	} {
		dir, rel, err := relativeLowers(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("relativeLowers(%v) error = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && (dir != tc.dir || !slices.Equal(rel, tc.rel)) {
			t.Errorf("relativeLowers(%v) = %q, %q; want %q, %q", tc.in, dir, rel, tc.dir, tc.rel)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		m    metric
		x    float64
		want string
	}{
		{metric{kind: duration}, 0.000512, "512 µs"},
		{metric{kind: duration}, 0.0123, "12.3 ms"},
		{metric{kind: duration}, 0.456, "456 ms"},
		{metric{kind: duration}, 12.345, "12.35 s"},
		{metric{kind: throughput}, 1234.4, "1234 MiB/s"},
		{metric{kind: memBytes}, 42 << 20, "42.0 MiB"},
		{metric{kind: factor}, 1.5, "1.50x"},
	} {
		if got := tc.m.format(tc.x); got != tc.want {
			t.Errorf("format(%v, kind %d) = %q, want %q", tc.x, tc.m.kind, got, tc.want)
		}
	}
}

func TestResultsCells(t *testing.T) {
	ms := []metric{{key: "a", kind: duration}, {key: "b", kind: duration}}
	r := &results{backends: []string{"overlay", "unionfs"}, cells: map[string]map[string]*cell{}}
	r.addRows(ms...)
	r.record(ms, "overlay", values{"a": 1, "b": 2}, nil)
	r.record(ms, "overlay", values{"a": 3, "b": 4}, nil)
	r.record(ms, "unionfs", values{"a": 2}, errors.New("lstat x: no such | file"))
	r.record(ms, "unionfs", values{"a": 4, "b": 6}, nil)

	for _, tc := range []struct {
		key, backend, want string
	}{
		{"a", "overlay", "2.00 s"},
		{"b", "overlay", "3.00 s"},
		{"a", "unionfs", "3.00 s"},
		{"b", "unionfs", `error in 1 of 2 runs: lstat x: no such \| file`},
	} {
		m := ms[slices.IndexFunc(ms, func(m metric) bool { return m.key == tc.key })]
		if got := r.show(m, tc.backend); got != tc.want {
			t.Errorf("show(%s, %s) = %q, want %q", tc.key, tc.backend, got, tc.want)
		}
	}
	if x, ok := r.ratio(ms[0], "unionfs", "overlay"); !ok || x != 1.5 {
		t.Errorf("ratio a = %v, %v; want 1.5", x, ok)
	}
	if _, ok := r.ratio(ms[1], "unionfs", "overlay"); ok {
		t.Error("ratio of a cell with an error should not exist")
	}

	r.insertRowAfter("a", metric{key: "g", kind: factor})
	var keys []string
	for _, m := range r.rows {
		keys = append(keys, m.key)
	}
	if !slices.Equal(keys, []string{"a", "g", "b"}) {
		t.Errorf("rows after insert = %v, want [a g b]", keys)
	}
}

func TestNotApplicableLeavesCellEmpty(t *testing.T) {
	ms := []metric{{key: "mount", kind: duration}}
	r := &results{backends: []string{"plain"}, cells: map[string]map[string]*cell{}}
	r.addRows(ms...)
	r.record(ms, "plain", nil, errNotApplicable)
	if got := r.show(ms[0], "plain"); got != "—" {
		t.Errorf("show = %q, want —", got)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	if got := unescapeMountinfo(`/mnt/a\040b\011c`); got != "/mnt/a b\tc" {
		t.Errorf("unescapeMountinfo = %q", got)
	}
}

func TestRunOrderPutsRmTreeLast(t *testing.T) {
	ws := []workload{&statTree{}, &rmTree{}, &smallWrite{}, &memory{}}
	got := runOrder(ws)
	if _, ok := got[len(got)-1].(*rmTree); !ok || len(got) != len(ws) {
		t.Errorf("runOrder = %T, want rm-tree last", got)
	}
}
