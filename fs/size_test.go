package fs

import (
	"testing"
	"unsafe"
)

// TestNodeSize keeps the node of a plain file, tree fields included,
// within the 128-byte size class: a mount holds one per file the kernel
// knows, hundreds of thousands of them after an ls -lR of a big tree.
func TestNodeSize(t *testing.T) {
	if s := unsafe.Sizeof(node{}); s > 128 {
		t.Errorf("node is %d bytes, want at most 128: move what only some nodes need behind a pointer (see dirState)", s)
	}
}
