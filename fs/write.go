package fs

import (
	"context"
	"syscall"
)

// writable answers EROFS for every change to a mount without an upper.
func (u *Union) writable() syscall.Errno {
	if u.upper == nil || u.cfg.ReadOnly {
		return syscall.EROFS
	}
	return 0
}

// copyUp makes sure the node has its own entry in the upper.
func (n *node) copyUp(ctx context.Context) syscall.Errno {
	if n.where().upper {
		return 0
	}
	return syscall.EROFS
}
