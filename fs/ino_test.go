package fs

import (
	"sync"
	"testing"
)

const privateBit = 1 << 63

func layersOn(devs ...uint64) []*layer {
	var ls []*layer
	for i, d := range devs {
		ls = append(ls, &layer{idx: i, dev: d})
	}
	return ls
}

type devIno struct{ dev, ino uint64 }

func TestInoMap(t *testing.T) {
	tests := []struct {
		name   string
		layers []uint64 // st_dev of each layer root, top first
		in     devIno
		want   uint64 // 0: a number from the private range
	}{
		{"single device passes through", []uint64{7}, devIno{7, 12345}, 12345},
		{"single device over several layers", []uint64{7, 7, 7}, devIno{7, 2}, 2},
		{"single device, large number", []uint64{7, 7}, devIno{7, 1<<55 + 9}, 1<<55 + 9},
		{"single device, unknown device", []uint64{7, 7}, devIno{8, 2}, 0},
		// Regression (fixed in fb6f370): passed through, such a number
		// could equal one from the private range.
		{"single device, number with the top bit", []uint64{7}, devIno{7, 1<<63 | 1}, 0},
		{"multi: top device is index 0", []uint64{7, 9}, devIno{7, 5}, 5},
		{"multi: second device is index 1", []uint64{7, 9}, devIno{9, 5}, 1<<55 | 5},
		{"multi: index counts devices, not layers", []uint64{7, 7, 9, 7, 11}, devIno{11, 5}, 2<<55 | 5},
		{"multi: largest number that fits", []uint64{7, 9}, devIno{9, 1<<55 - 1}, 1<<55 | (1<<55 - 1)},
		{"multi: number too large", []uint64{7, 9}, devIno{9, 1 << 55}, 0},
		{"multi: number with the top bit", []uint64{7, 9}, devIno{7, 1<<63 | 3}, 0},
		{"multi: unknown device", []uint64{7, 9}, devIno{8, 5}, 0},
		{"multi: the volume pseudo-device", []uint64{7, 9}, devIno{^uint64(0), 5}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newInoMap(layersOn(tt.layers...))
			got := m.ino(tt.in.dev, tt.in.ino)
			switch {
			case tt.want == 0 && got&privateBit == 0:
				t.Errorf("ino(%d, %#x) = %#x, want a number from the private range", tt.in.dev, tt.in.ino, got)
			case tt.want != 0 && got != tt.want:
				t.Errorf("ino(%d, %#x) = %#x, want %#x", tt.in.dev, tt.in.ino, got, tt.want)
			}
			for range 3 {
				if again := m.ino(tt.in.dev, tt.in.ino); again != got {
					t.Fatalf("ino(%d, %#x) = %#x, then %#x: not stable", tt.in.dev, tt.in.ino, got, again)
				}
			}
		})
	}
}

// TestInoMapDistinct: different (device, inode) pairs never share a union
// inode number, whatever mix of passed-through, encoded and private
// numbers they get.
func TestInoMapDistinct(t *testing.T) {
	edge := []uint64{0, 1, 2, 1<<32 + 1, 1<<55 - 1, 1 << 55, 1<<55 + 1, 1<<63 - 1, privateBit, privateBit | 1, privateBit | 2, ^uint64(0)}
	many := make([]uint64, 300) // more devices than the encoding has room for
	for i := range many {
		many[i] = uint64(1000 + i)
	}
	tests := []struct {
		name   string
		layers []uint64
		// inputs: every pair of these devices and inodes
		devs, inos []uint64
	}{
		{"multi device", []uint64{7, 9, 11}, []uint64{7, 9, 11, 8, ^uint64(0)}, edge},
		{"more devices than the encoding holds", many, append(append([]uint64(nil), many...), 1), []uint64{1, 2, 1<<55 - 1, 1 << 55}},
		{"single device", []uint64{7, 7}, []uint64{7, 8}, []uint64{1, 2, 3, 1 << 40}},
		// A layer's own numbers in the top half (another union's private
		// range, say, when that union is a lower layer) must not
		// collide with the numbers handed to other devices. Regression:
		// passed through unchanged they did (fixed in fb6f370).
		{"single device, numbers in the private range", []uint64{7}, []uint64{7, 8, ^uint64(0)}, edge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newInoMap(layersOn(tt.layers...))
			seen := make(map[uint64]devIno)
			for _, d := range tt.devs {
				for _, i := range tt.inos {
					got := m.ino(d, i)
					if prev, ok := seen[got]; ok && prev != (devIno{d, i}) {
						t.Errorf("(dev %d, ino %#x) and (dev %d, ino %#x) both map to %#x", prev.dev, prev.ino, d, i, got)
					}
					seen[got] = devIno{d, i}
				}
			}
			// And again, in reverse: the same numbers.
			for k := len(tt.devs) - 1; k >= 0; k-- {
				for _, i := range tt.inos {
					d := tt.devs[k]
					if got := m.ino(d, i); seen[got] != (devIno{d, i}) {
						t.Errorf("ino(%d, %#x) = %#x on a second call, which belongs to %+v", d, i, got, seen[got])
					}
				}
			}
		})
	}
}

// TestInoMapConcurrent: goroutines asking for the same pairs at once all
// get the same number per pair, and different numbers for different pairs
// (run with -race).
func TestInoMapConcurrent(t *testing.T) {
	m := newInoMap(layersOn(7, 9))
	var pairs []devIno
	for i := range uint64(200) {
		pairs = append(pairs, devIno{7, i + 1}, devIno{9, i + 1}, devIno{8, i + 1}, devIno{9, 1<<55 + i})
	}
	const goroutines = 8
	results := make([][]uint64, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			out := make([]uint64, len(pairs))
			// Each goroutine walks the pairs from a different start so
			// that first requests for a private number race.
			for k := range pairs {
				i := (k + g*len(pairs)/goroutines) % len(pairs)
				out[i] = m.ino(pairs[i].dev, pairs[i].ino)
			}
			results[g] = out
		})
	}
	wg.Wait()
	owner := make(map[uint64]devIno)
	for i, p := range pairs {
		v := results[0][i]
		for g := 1; g < goroutines; g++ {
			if results[g][i] != v {
				t.Errorf("%+v: goroutine 0 got %#x, goroutine %d got %#x", p, v, g, results[g][i])
			}
		}
		if q, ok := owner[v]; ok {
			t.Errorf("%+v and %+v both map to %#x", q, p, v)
		}
		owner[v] = p
	}
	if t.Failed() {
		return
	}
	private := 0
	for v := range owner {
		if v&privateBit != 0 {
			private++
		}
	}
	if want := 400; private != want {
		t.Errorf("%d private numbers, want %d (unknown device and too-large numbers)", private, want)
	}
}
