package fs

import (
	"fmt"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Volume is a host directory served at a path inside the union. Reads and
// writes under it go straight to the directory: no copy-up, no whiteouts,
// no state in the upper.
type Volume struct {
	Source   string // the host directory
	Dest     string // absolute path inside the union, e.g. /data
	ReadOnly bool
}

// volumeTimeout is how long the kernel may cache a volume's entries and
// attributes: another mount (or the host) may change the directory.
const volumeTimeout = time.Second

// A volume is served by a Union of its own: the source directory is its
// upper and it has no lower layers, so every operation of the union applies
// unchanged and none needs records. Its root node hangs in the main tree at
// the destination.

// openVolumes makes the unions of the configured volumes.
func (u *Union) openVolumes() error {
	for _, v := range u.cfg.Volumes {
		l, err := openLayer(v.Source, 0)
		if err != nil {
			return fmt.Errorf("volume %s: %w", v.Source, err)
		}
		vu := &Union{
			cfg:    Config{Upper: v.Source, ReadOnly: v.ReadOnly || u.cfg.ReadOnly},
			layers: []*layer{l},
			upper:  l,
			log:    u.log,
			euid:   u.euid,
			egid:   u.egid,
			// Volumes have no lower files: passthrough is always safe.
			passthrough: u.passthrough,
			volume:      true,
			cookieSeed:  u.cookieSeed,
		}
		vu.records = make(recordTree)
		vu.origins = make(map[uint64]uint64)
		u.volumes = append(u.volumes, volumeMount{dest: strings.Trim(v.Dest, "/"), u: vu})
	}
	return nil
}

// volumeRoots finishes the volume unions once the shared inode map exists.
func (u *Union) volumeRoots() error {
	for _, vm := range u.volumes {
		vm.u.inos = u.inos
		var st unix.Stat_t
		if err := lstatAt(vm.u.upper.fd, "", &st); err != nil {
			return fmt.Errorf("volume %s: %w", vm.u.upper.path, err)
		}
		vm.u.root = &node{u: vm.u, inUpper: true, ino: u.inos.ino(st.Dev, st.Ino), typ: unix.S_IFDIR >> 12, dir: &dirState{}}
	}
	return nil
}

// volumeMount is a volume attached at dest (a union path).
type volumeMount struct {
	dest string
	u    *Union
}

// volumeAt returns the volume attached at union path p.
func (u *Union) volumeAt(p string) *Union {
	for _, vm := range u.volumes {
		if vm.dest == p {
			return vm.u
		}
	}
	return nil
}

// holdsVolume reports whether union path p is a volume's destination or one
// of its ancestors: such a path cannot be renamed or removed, as a mountpoint
// cannot.
func (u *Union) holdsVolume(p string) bool {
	for _, vm := range u.volumes {
		if under(vm.dest, p) {
			return true
		}
	}
	return false
}

// isVolumeAncestor reports whether p is a strict ancestor of a volume.
func (u *Union) isVolumeAncestor(p string) bool {
	for _, vm := range u.volumes {
		if vm.dest != p && under(vm.dest, p) {
			return true
		}
	}
	return false
}

// prepareVolumeParents makes the parent directories of every volume
// destination exist: in the upper when there is one (as Docker creates
// mountpoints in the container layer), otherwise they are shown as empty
// virtual directories. A parent that exists as a non-directory is an error.
func (u *Union) prepareVolumeParents() error {
	for _, vm := range u.volumes {
		dir, _ := splitPath(vm.dest)
		if dir == "" {
			continue
		}
		comps := strings.Split(dir, "/")
		for i := range comps {
			p := strings.Join(comps[:i+1], "/")
			r, err := u.resolvePath(p)
			switch {
			case err == nil && !isDirMode(r.st.Mode):
				return fmt.Errorf("volume destination /%s: /%s is not a directory", vm.dest, p)
			case err == nil:
				continue
			case err != unix.ENOENT:
				return fmt.Errorf("volume destination /%s: %w", vm.dest, err)
			}
			if u.upper == nil || u.cfg.ReadOnly {
				break // virtual from here down
			}
			parent, _ := splitPath(p)
			if err := u.ensureUpperDir(parent); err != nil {
				return fmt.Errorf("volume destination /%s: %w", vm.dest, err)
			}
			if err := u.upper.mkdir(p, 0o755); err != nil && err != unix.EEXIST {
				return fmt.Errorf("volume destination /%s: create /%s: %w", vm.dest, p, err)
			}
		}
	}
	return nil
}

// virtualDir resolves a path that exists in no layer but leads to a volume.
func (u *Union) virtualDir(p string) *resolved {
	r := &resolved{virtual: true}
	r.st.Mode = unix.S_IFDIR | 0o755
	r.st.Nlink = 2
	r.st.Uid, r.st.Gid = uint32(u.euid), uint32(u.egid)
	now := time.Now()
	r.st.Mtim = unix.NsecToTimespec(now.UnixNano())
	r.st.Atim, r.st.Ctim = r.st.Mtim, r.st.Mtim
	r.st.Ino = u.inos.ino(^uint64(0), hashPath(p))
	return r
}

func hashPath(p string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(p); i++ {
		h ^= uint64(p[i])
		h *= 1099511628211
	}
	return h
}

func hasWritableVolume(vols []Volume) bool {
	for _, v := range vols {
		if !v.ReadOnly {
			return true
		}
	}
	return false
}

// crossesVolume is the EXDEV check for rename and link: a volume is another
// filesystem as far as the union's users are concerned.
func crossesVolume(a, b *node) syscall.Errno {
	if a.u != b.u {
		return syscall.EXDEV
	}
	return 0
}
