package fs

import "sync"

// xinoShift is where the device index starts in a union inode number when the
// layers span several filesystems, as overlayfs's xino does: the top bit is
// kept for the private overflow range, the next 8 bits name the device.
const xinoShift = 55

// inoMap turns (device, inode) pairs of the layers into the inode numbers
// the union reports. When every layer lives on one filesystem the real
// numbers are already unique and are passed through unchanged; otherwise the
// device's index in the stack goes into the high bits. A real number too
// large for that, or one on a device that is not a layer root's (a mount
// inside a layer), gets a number from a private range, stable for the mount.
type inoMap struct {
	single bool
	devs   map[uint64]uint64 // st_dev of layer roots -> index, top first

	mu       sync.Mutex
	overflow map[[2]uint64]uint64
	next     uint64
}

func newInoMap(layers []*layer) *inoMap {
	m := &inoMap{devs: make(map[uint64]uint64), next: 1<<63 | 1}
	for _, l := range layers {
		if _, ok := m.devs[l.dev]; !ok {
			m.devs[l.dev] = uint64(len(m.devs))
		}
	}
	m.single = len(m.devs) == 1
	return m
}

// ino returns the union inode number of inode ino on device dev.
func (m *inoMap) ino(dev, ino uint64) uint64 {
	if x, ok := m.devs[dev]; ok {
		switch {
		case m.single && ino>>63 == 0: // the top bit is the private range's
			return ino
		case !m.single && ino>>xinoShift == 0 && x < 1<<(63-xinoShift):
			return x<<xinoShift | ino
		}
	}
	return m.private(dev, ino)
}

// private gives (dev, ino) a number from the private range, the same one
// every time.
func (m *inoMap) private(dev, ino uint64) uint64 {
	key := [2]uint64{dev, ino}
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.overflow[key]; ok {
		return v
	}
	if m.overflow == nil {
		m.overflow = make(map[[2]uint64]uint64)
	}
	v := m.next
	m.next++
	m.overflow[key] = v
	return v
}
