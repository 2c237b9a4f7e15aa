package fs

import "slices"

// The kernel's view of the union is a tree of nodes: every node the kernel
// holds a lookup reference on has a FUSE node ID and, unless its last name
// is gone, a parent directory and a name in it. The tree, the node IDs and
// the lookup counts are guarded by one lock of the mount (kernel.mu); they
// change only on LOOKUP, READDIRPLUS, creation, LINK, RENAME, removal and
// FORGET, and are read to find a node's path.
//
// go-fuse's node API keeps the same tree, but at about 330 bytes an inode
// on top of the filesystem's own node (identity tables, a node entry and a
// children map and slice per directory): 66 MB for the 200,000 inodes an
// `ls -lR` of a big tree leaves the kernel holding. Here a node is 128
// bytes with its tree fields, the node-ID table 8 bytes an entry and a
// directory's children map about 55 bytes a name.

// ident is a file's identity in the union: its inode number and generation.
type ident struct{ ino, gen uint64 }

// nodeName is one name of a node: a directory and an entry in it.
type nodeName struct {
	dir  *node
	name string
}

// parentName returns the node's directory and its name there (the first
// of its names, for a file with several); a nil directory when it has
// none left.
func (n *node) parentName() (*node, string) {
	k := n.u.k
	k.mu.RLock()
	defer k.mu.RUnlock()
	return n.parent, n.name
}

// knownChild returns the node the kernel has for name in directory n, or
// nil.
func (n *node) knownChild(name string) *node {
	if n.dir == nil || n.detached {
		return nil
	}
	k := n.u.k
	k.mu.RLock()
	defer k.mu.RUnlock()
	return n.dir.children[name]
}

// isDir reports whether the node is a directory.
func (n *node) isDir() bool { return n.dir != nil }

// fileType is the node's S_IFMT bits.
func (n *node) fileType() uint32 { return uint32(n.typ) << 12 }

// register gives child, a node just resolved or created as name in
// directory dir (dir nil: an O_TMPFILE file), to the kernel. It returns
// the node to use and its node ID: the node the kernel already has when
// child is the same file (the same name looked up again, or another name
// of a hard-linked file), with its lookup count raised by one. nlink is
// the file's link count as just read: two names can lead to the same node
// only for files with several, and only they are kept in the identity
// map.
func (k *kernel) register(dir *node, name string, child *node, nlink uint32) (*node, uint64) {
	k.mu.Lock()
	sel := child
	var replaced *node
	if dir != nil {
		if c := dir.dir.children[name]; c != nil {
			if c.ino == child.ino && c.gen == child.gen && c.typ == child.typ {
				sel = c
			} else {
				replaced = k.dropNameLocked(dir, name)
			}
		}
	}
	if sel == child && child.dir == nil && nlink > 1 {
		id := ident{child.ino, child.gen}
		switch c := k.shared[id]; {
		case c == nil:
			k.shared[id] = child
			child.shared = true
		case c != child && child.id == 0 && c.typ == child.typ:
			sel = c
		}
	}
	if dir != nil && dir.dir.children[name] != sel {
		k.addNameLocked(dir, name, sel)
	}
	if sel.id == 0 {
		k.assignID(sel)
	}
	sel.lookups++
	id := sel.id
	// A name that leads to another file now (changed behind the mount's
	// back): the old node may have nothing left keeping it.
	gone := k.pruneLocked(nil, replaced)
	k.mu.Unlock()
	forgotten(gone)
	return sel, id
}

// addNameLocked enters c as name in dir; k.mu is held and dir has no
// entry of that name.
func (k *kernel) addNameLocked(dir *node, name string, c *node) {
	if dir.dir.children == nil {
		dir.dir.children = make(map[string]*node)
	}
	dir.dir.children[name] = c
	if c.parent == nil {
		c.parent, c.name = dir, name
		return
	}
	k.links[c] = append(k.links[c], nodeName{dir, name})
}

// A node ID is a slot of the node table in its low idSlotBits and, above
// them, how many nodes had the slot before: slots are reused, node IDs
// are not (until a slot has been used 2^24 times), so a stale ID never
// names another file.
const (
	idSlotBits = 40
	idSlotMask = 1<<idSlotBits - 1
)

// assignID gives n a node ID; k.mu is held.
func (k *kernel) assignID(n *node) {
	if m := len(k.freeIDs); m > 0 {
		last := k.freeIDs[m-1]
		k.freeIDs = k.freeIDs[:m-1]
		n.id = last + 1<<idSlotBits
		k.nodes[last&idSlotMask] = n
		return
	}
	n.id = uint64(len(k.nodes))
	k.nodes = append(k.nodes, n)
}

// node returns the node with the given node ID, or nil.
func (k *kernel) node(id uint64) *node {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if slot := id & idSlotMask; slot < uint64(len(k.nodes)) {
		if n := k.nodes[slot]; n != nil && n.id == id {
			return n
		}
	}
	return nil
}

// forget drops count lookup references the kernel held on node ID id. A
// node with none left gives up its node ID, and leaves the tree unless it
// is a directory whose children the kernel still holds (through other
// names of theirs): their paths go through it.
func (k *kernel) forget(id, count uint64) {
	k.mu.Lock()
	var n *node
	if slot := id & idSlotMask; slot < uint64(len(k.nodes)) {
		n = k.nodes[slot]
	}
	if n == nil || n.id != id || n == k.root {
		k.mu.Unlock()
		return
	}
	if n.lookups > count {
		n.lookups -= count
		k.mu.Unlock()
		return
	}
	n.lookups = 0
	k.nodes[id&idSlotMask] = nil
	if id>>idSlotBits < 1<<(64-idSlotBits)-1 {
		k.freeIDs = append(k.freeIDs, id) // else the slot is retired
	}
	n.id = 0
	gone := k.pruneLocked(nil, n)
	k.mu.Unlock()
	forgotten(gone)
}

// pruneLocked takes n out of the tree if nothing keeps it there (no
// kernel reference, no children), then its directories if n was their
// last child, and so on up; it returns gone with the nodes that left.
// k.mu is held.
func (k *kernel) pruneLocked(gone []*node, n *node) []*node {
	if n == nil || n == k.root || n.id != 0 || n.dir != nil && len(n.dir.children) > 0 || slices.Contains(gone, n) {
		return gone
	}
	p, links := n.parent, k.links[n]
	if p != nil && p.dir.children[n.name] == n {
		p.dir.unchild(n.name)
	}
	for _, l := range links {
		if l.dir.dir.children[l.name] == n {
			l.dir.dir.unchild(l.name)
		}
	}
	n.parent, n.name = nil, ""
	delete(k.links, n)
	if n.shared {
		if k.shared[ident{n.ino, n.gen}] == n {
			delete(k.shared, ident{n.ino, n.gen})
		}
		n.shared = false
	}
	gone = append(gone, n)
	gone = k.pruneLocked(gone, p)
	for _, l := range links {
		gone = k.pruneLocked(gone, l.dir)
	}
	return gone
}

// forgotten lets nodes that left the tree close what they hold open.
func forgotten(gone []*node) {
	for _, n := range gone {
		n.forgotten()
	}
}

// dropName removes name from directory dir after the entry was removed.
func (k *kernel) dropName(dir *node, name string) {
	k.mu.Lock()
	c := k.dropNameLocked(dir, name)
	gone := k.pruneLocked(k.pruneLocked(nil, c), dir)
	k.mu.Unlock()
	forgotten(gone)
}

// dropNameLocked removes name from dir and from the node it led to, whose
// next name, if it has another, becomes its first; it returns that node.
// k.mu is held.
func (k *kernel) dropNameLocked(dir *node, name string) *node {
	c := dir.dir.children[name]
	if c == nil {
		return nil
	}
	dir.dir.unchild(name)
	if c.parent == dir && c.name == name {
		c.parent, c.name = nil, ""
		if ls := k.links[c]; len(ls) > 0 {
			c.parent, c.name = ls[0].dir, ls[0].name
			k.dropLink(c, 0)
		}
		return c
	}
	for i, l := range k.links[c] {
		if l.dir == dir && l.name == name {
			k.dropLink(c, i)
			break
		}
	}
	return c
}

// unchild removes name from the directory's children; an empty map goes
// (maps do not shrink, and a directory that once held thousands of names
// may hold none for the rest of the mount). kernel.mu is held.
func (d *dirState) unchild(name string) {
	delete(d.children, name)
	if len(d.children) == 0 {
		d.children = nil
	}
}

func (k *kernel) dropLink(n *node, i int) {
	ls := k.links[n]
	ls = append(ls[:i:i], ls[i+1:]...)
	if len(ls) == 0 {
		delete(k.links, n)
		return
	}
	k.links[n] = ls
}

// move renames entry name of dir to newName in newDir, replacing what was
// there, after the rename succeeded.
func (k *kernel) move(dir *node, name string, newDir *node, newName string) {
	if dir == newDir && name == newName {
		return
	}
	k.mu.Lock()
	replaced := k.dropNameLocked(newDir, newName)
	c := k.dropNameLocked(dir, name)
	if c != nil {
		k.addNameLocked(newDir, newName, c)
	}
	gone := k.pruneLocked(k.pruneLocked(nil, replaced), dir)
	k.mu.Unlock()
	forgotten(gone)
}

// exchange swaps two entries after RENAME_EXCHANGE succeeded.
func (k *kernel) exchange(dir *node, name string, newDir *node, newName string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	a := k.dropNameLocked(dir, name)
	b := k.dropNameLocked(newDir, newName)
	if a != nil {
		k.addNameLocked(newDir, newName, a)
	}
	if b != nil {
		k.addNameLocked(dir, name, b)
	}
}
