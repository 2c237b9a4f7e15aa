package fs

import (
	"testing"

	"golang.org/x/sys/unix"
)

// The kernel's tree without a mount: the bookkeeping of node IDs, lookup
// counts and names that LOOKUP, FORGET, removal and rename drive.

func testTree() (*kernel, *node) {
	u := &Union{}
	root := &node{u: u, typ: unix.S_IFDIR >> 12, dir: &dirState{}}
	u.root = root
	u.k = newKernel(root)
	return u.k, root
}

func testFile(root *node, ino uint64) *node {
	return &node{u: root.u, ino: ino, typ: unix.S_IFREG >> 12}
}

func testDir(root *node, ino uint64) *node {
	return &node{u: root.u, ino: ino, typ: unix.S_IFDIR >> 12, dir: &dirState{}}
}

func TestTreeLookupForget(t *testing.T) {
	k, root := testTree()
	a, id := k.register(root, "a", testFile(root, 10), 1)
	if id < 2 || a.lookups != 1 || root.knownChild("a") != a {
		t.Fatalf("register: id %d lookups %d child %p, want id >= 2, 1 lookup, the node", id, a.lookups, root.knownChild("a"))
	}
	// The same file looked up again: the same node, one more reference.
	again, id2 := k.register(root, "a", testFile(root, 10), 1)
	if again != a || id2 != id || a.lookups != 2 {
		t.Fatalf("second lookup: node %p id %d lookups %d, want %p %d 2", again, id2, a.lookups, a, id)
	}
	if got := a.relPath(); got != "a" {
		t.Errorf("relPath %q, want a", got)
	}
	k.forget(id, 1)
	if k.node(id) != a || root.knownChild("a") != a {
		t.Fatal("one forget of two references dropped the node")
	}
	k.forget(id, 1)
	if k.node(id) != nil || root.knownChild("a") != nil || a.id != 0 {
		t.Fatalf("forgotten node still known: node(%d) %p child %p id %d", id, k.node(id), root.knownChild("a"), a.id)
	}
	if got := a.relPath(); got != orphanPath {
		t.Errorf("relPath of a forgotten node %q, want the orphan path", got)
	}
	// Its slot of the table goes to the next node, under a new node ID: the
	// old one names nothing any more.
	b, id3 := k.register(root, "b", testFile(root, 11), 1)
	if id3&idSlotMask != id&idSlotMask || id3 == id {
		t.Errorf("next node got ID %#x, want the freed slot of %#x under a new ID", id3, id)
	}
	if k.node(id) != nil || k.node(id3) != b {
		t.Errorf("node(old ID) %p, node(new ID) %p; want nil and the new node", k.node(id), k.node(id3))
	}
	k.forget(id, 1) // a stale FORGET
	if k.node(id3) != b {
		t.Error("a FORGET of the slot's old node ID dropped its new node")
	}
	// FORGET of an unknown or the root's ID is ignored.
	k.forget(999, 1)
	k.forget(1, 1)
	if k.node(1) != root {
		t.Error("FORGET of the root dropped it")
	}
}

func TestTreeReplacedName(t *testing.T) {
	k, root := testTree()
	old, oldID := k.register(root, "f", testFile(root, 10), 1)
	// The name now leads to another file: the new node takes the name,
	// the old one keeps its ID (the kernel may still hold it) but no name.
	nw, newID := k.register(root, "f", testFile(root, 11), 1)
	if nw == old || newID == oldID || root.knownChild("f") != nw {
		t.Fatal("a different file under the same name did not get its own node")
	}
	if p, _ := old.parentName(); p != nil || k.node(oldID) != old {
		t.Errorf("replaced node: parent %p, node(%d) %p; want no parent, still known", p, oldID, k.node(oldID))
	}
}

func TestTreeHardLinks(t *testing.T) {
	k, root := testTree()
	d1, _ := k.register(root, "d1", testDir(root, 2), 2)
	d2, _ := k.register(root, "d2", testDir(root, 3), 2)
	f, fid := k.register(d1, "x", testFile(root, 10), 2)
	// The other name of the file, seen as a new node: the kernel gets
	// the node it has.
	g, gid := k.register(d2, "y", testFile(root, 10), 2)
	if g != f || gid != fid || f.lookups != 2 {
		t.Fatalf("second name of a hard-linked file: node %p id %d, want %p %d", g, gid, f, fid)
	}
	if d2.knownChild("y") != f || f.relPath() != "d1/x" {
		t.Fatalf("names: d2/y -> %p, path %q", d2.knownChild("y"), f.relPath())
	}
	// A file with one link is never merged with another node.
	if h, _ := k.register(root, "z", testFile(root, 10), 1); h == f {
		t.Error("a file with st_nlink 1 was taken for a known hard-linked node")
	}
	// Removing the first name makes the second one first.
	k.dropName(d1, "x")
	if p, name := f.parentName(); p != d2 || name != "y" {
		t.Fatalf("after removing d1/x: parent %p name %q, want d2 y", p, name)
	}
	if d1.knownChild("x") != nil {
		t.Error("d1/x still known after its removal")
	}
	k.dropName(d2, "y")
	if p, _ := f.parentName(); p != nil || k.node(fid) != f {
		t.Error("a file without names must stay known while the kernel holds it")
	}
	k.forget(fid, 2)
	if k.node(fid) != nil {
		t.Error("not forgotten")
	}
}

func TestTreeForgottenDirStaysForItsChildren(t *testing.T) {
	k, root := testTree()
	b, bid := k.register(root, "b", testDir(root, 2), 2)
	a, _ := k.register(root, "a", testDir(root, 3), 2)
	f, fid := k.register(b, "first", testFile(root, 10), 2)
	k.register(a, "second", testFile(root, 10), 2)
	// The kernel forgets b while it still holds the file through a.
	k.forget(bid, 1)
	if b.id != 0 || root.knownChild("b") != b {
		t.Fatalf("forgotten directory: id %d, root/b -> %p; want no ID, still in the tree", b.id, root.knownChild("b"))
	}
	if got := f.relPath(); got != "b/first" {
		t.Errorf("path through the forgotten directory %q, want b/first", got)
	}
	// Looked up again, the directory gets the same node back.
	b2, bid2 := k.register(root, "b", testDir(root, 2), 2)
	if b2 != b || bid2 == 0 {
		t.Fatalf("lookup of the kept directory: %p id %d, want %p with an ID", b2, bid2, b)
	}
	k.forget(bid2, 1)
	// Once its last child goes, so does the directory.
	k.forget(fid, 2)
	if root.knownChild("b") != nil || b.parent != nil {
		t.Error("forgotten directory without children stayed in the tree")
	}
	if b.dir.children != nil {
		t.Error("an emptied children map stays allocated")
	}
	if root.knownChild("a") != a {
		t.Error("a directory the kernel holds left the tree")
	}
}

func TestTreeRename(t *testing.T) {
	k, root := testTree()
	d, _ := k.register(root, "d", testDir(root, 2), 2)
	x, _ := k.register(root, "x", testFile(root, 10), 1)
	y, yid := k.register(d, "y", testFile(root, 11), 1)
	k.move(root, "x", d, "y") // over y
	if d.knownChild("y") != x || root.knownChild("x") != nil || x.relPath() != "d/y" {
		t.Fatalf("after rename x -> d/y: d/y %p x %p path %q", d.knownChild("y"), root.knownChild("x"), x.relPath())
	}
	if p, _ := y.parentName(); p != nil || k.node(yid) != y {
		t.Error("the replaced file must lose its name and stay known")
	}
	z, _ := k.register(root, "z", testFile(root, 12), 1)
	k.exchange(root, "z", d, "y")
	if d.knownChild("y") != z || root.knownChild("z") != x || x.relPath() != "z" || z.relPath() != "d/y" {
		t.Fatalf("after exchange: d/y %p z %p, paths %q %q", d.knownChild("y"), root.knownChild("z"), x.relPath(), z.relPath())
	}
	// A directory moves with what the kernel holds beneath it.
	k.move(root, "d", root, "e")
	if z.relPath() != "e/y" {
		t.Errorf("after renaming the directory: %q, want e/y", z.relPath())
	}
}
