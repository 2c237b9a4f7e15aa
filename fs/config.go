package fs

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Config is everything a mount needs, parsed and typed at the edge (the
// command line) and checked here once, before anything is touched.
type Config struct {
	Mountpoint string
	Lowers     []string // read-only layers, topmost first
	Upper      string   // writable layer; empty for a read-only mount
	Workdir    string   // copy-up scratch space; default inside Upper's StateDir

	ReadOnly   bool // refuse every write even with an upper
	AllowOther bool
	Debug      bool // log every FUSE request
	// NoPassthrough serves all file data through the server even where the
	// kernel could read the layers directly.
	NoPassthrough bool
	// NoRing keeps requests on /dev/fuse even where the kernel offers FUSE
	// over io_uring (Linux 6.14+, fuse.enable_uring=1).
	NoRing  bool
	Volumes []Volume // host directories bind-mounted into the union
	// KernelFlags are nosuid, nodev, noexec or their opposites, for mount(2).
	KernelFlags []string
	FsName      string // the mount's source, as mount(8) shows it
	Logger      *log.Logger
}

// Validate checks the configuration and turns every path into an absolute,
// symlink-free one. Its errors are one line, meant for the user.
func (c *Config) Validate() error {
	if len(c.Lowers) == 0 {
		return errors.New("no lower directory given: use --lower DIR (or -o lowerdir=DIR)")
	}
	var err error
	if c.Mountpoint, err = existingDir("mountpoint", c.Mountpoint); err != nil {
		return err
	}
	for i, l := range c.Lowers {
		if c.Lowers[i], err = existingDir("lower dir", l); err != nil {
			return err
		}
		if c.Lowers[i] == c.Mountpoint {
			return fmt.Errorf("mountpoint %s is also a lower dir: mount somewhere else", c.Mountpoint)
		}
		// The server reads its layers through the directory tree: a mount
		// inside one would make it read its own mount.
		if hasPrefixDir(c.Mountpoint, c.Lowers[i]) {
			return fmt.Errorf("mountpoint %s is inside lower dir %s: mount somewhere else", c.Mountpoint, c.Lowers[i])
		}
	}
	if c.Upper != "" {
		if c.Upper, err = existingDir("upper dir", c.Upper); err != nil {
			return err
		}
		if err := c.checkWritable(); err != nil {
			return err
		}
		if c.Upper == c.Mountpoint {
			return fmt.Errorf("mountpoint %s is also the upper dir: mount somewhere else", c.Mountpoint)
		}
		if err := notInside("upper dir", c.Upper, c.Lowers, c.Mountpoint); err != nil {
			return err
		}
		if hasPrefixDir(c.Mountpoint, c.Upper) {
			return fmt.Errorf("mountpoint %s is inside the upper dir %s", c.Mountpoint, c.Upper)
		}
		for _, l := range c.Lowers {
			if hasPrefixDir(l, c.Upper) {
				return fmt.Errorf("lower dir %s is inside the upper dir %s", l, c.Upper)
			}
		}
	}
	if err := c.validateVolumes(); err != nil {
		return err
	}
	if c.Workdir != "" {
		if c.Upper == "" {
			return errors.New("--workdir needs --upper: a read-only mount has no work dir")
		}
		if c.Workdir, err = existingDir("work dir", c.Workdir); err != nil {
			return err
		}
		if err := notInside("work dir", c.Workdir, c.Lowers, c.Mountpoint); err != nil {
			return err
		}
		if c.Workdir == c.Upper {
			return fmt.Errorf("work dir %s is the upper dir: give a separate directory", c.Workdir)
		}
		var su, sw unix.Stat_t
		if err := unix.Stat(c.Upper, &su); err != nil {
			return fmt.Errorf("upper dir %s: %w", c.Upper, err)
		}
		if err := unix.Stat(c.Workdir, &sw); err != nil {
			return fmt.Errorf("work dir %s: %w", c.Workdir, err)
		}
		if su.Dev != sw.Dev {
			return fmt.Errorf("work dir %s is not on the same filesystem as upper dir %s", c.Workdir, c.Upper)
		}
	}
	return nil
}

func (c *Config) checkWritable() error {
	var sfs unix.Statfs_t
	if err := unix.Statfs(c.Upper, &sfs); err != nil {
		return fmt.Errorf("upper dir %s: %w", c.Upper, err)
	}
	if sfs.Flags&unix.ST_RDONLY != 0 {
		return fmt.Errorf("upper dir %s is on a read-only filesystem", c.Upper)
	}
	if err := unix.Access(c.Upper, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Errorf("upper dir %s is not writable: %w", c.Upper, err)
	}
	return nil
}

// existingDir resolves p to an absolute, symlink-free path and checks that it
// is a directory.
func existingDir(what, p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("empty %s path", what)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", what, p, err)
	}
	// Most paths have no symlink in them (the daemon gets the ones its
	// parent resolved): one openat2 tells, where walking them costs an
	// lstat per component.
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS}
	if fd, err := unix.Openat2(unix.AT_FDCWD, abs, &how); err == nil {
		unix.Close(fd)
		return abs, nil
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%s %s does not exist", what, p)
		}
		return "", fmt.Errorf("%s %s: %w", what, p, unwrapPathError(err))
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", what, p, unwrapPathError(err))
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s %s is not a directory", what, p)
	}
	return real, nil
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// notInside refuses p when it lies inside (or is) a lower dir or the
// mountpoint: writing there would change a read-only layer or recurse.
func notInside(what, p string, lowers []string, mnt string) error {
	for _, l := range lowers {
		if hasPrefixDir(p, l) {
			return fmt.Errorf("%s %s is inside lower dir %s", what, p, l)
		}
	}
	if hasPrefixDir(p, mnt) {
		return fmt.Errorf("%s %s is inside the mountpoint %s", what, p, mnt)
	}
	return nil
}

// hasPrefixDir reports whether p is dir or lies beneath it.
func hasPrefixDir(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

func (c *Config) validateVolumes() error {
	for i := range c.Volumes {
		v := &c.Volumes[i]
		var err error
		if v.Source, err = existingDir("volume source", v.Source); err != nil {
			return err
		}
		if !filepath.IsAbs(v.Dest) || filepath.Clean(v.Dest) != v.Dest || v.Dest == "/" {
			return fmt.Errorf("volume destination %q must be a clean absolute path other than /", v.Dest)
		}
		if hasPrefixDir(v.Dest, "/"+StateDir) {
			return fmt.Errorf("volume destination %s is inside the reserved %s", v.Dest, "/"+StateDir)
		}
		for _, l := range append(append([]string(nil), c.Lowers...), c.Upper) {
			if l != "" && (hasPrefixDir(v.Source, l) || hasPrefixDir(l, v.Source)) {
				return fmt.Errorf("volume source %s overlaps the layer %s: writes through it would change the layer", v.Source, l)
			}
		}
		if hasPrefixDir(v.Source, c.Mountpoint) || hasPrefixDir(c.Mountpoint, v.Source) {
			return fmt.Errorf("volume source %s overlaps the mountpoint %s", v.Source, c.Mountpoint)
		}
		for _, o := range c.Volumes[:i] {
			if hasPrefixDir(v.Dest, o.Dest) || hasPrefixDir(o.Dest, v.Dest) {
				return fmt.Errorf("volume destinations %s and %s overlap", o.Dest, v.Dest)
			}
		}
	}
	return nil
}
