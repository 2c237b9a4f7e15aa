package imgpull

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/unionfs/unionfs/layerdb"
)

// RootEnv names the environment variable that overrides the default root.
const RootEnv = "UNIONFS_ROOT"

// Store layout under the root directory.
const (
	storeDBName = "store.db"
	layersDir   = "layers"
	tmpDir      = "tmp"
)

// storeOpenTimeout bounds the wait for another unionfs process's short
// store transaction; the database is never held open across a download.
const storeOpenTimeout = 30 * time.Second

// DefaultRoot is where the store lives unless --root says otherwise:
// $UNIONFS_ROOT; else /var/lib/unionfs for root; else
// $XDG_DATA_HOME/unionfs, ~/.local/share/unionfs without XDG_DATA_HOME.
func DefaultRoot() (string, error) {
	if r := os.Getenv(RootEnv); r != "" {
		return r, nil
	}
	if os.Geteuid() == 0 {
		return "/var/lib/unionfs", nil
	}
	if x := os.Getenv("XDG_DATA_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "unionfs"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no store root: set --root or %s (%w)", RootEnv, err)
	}
	return filepath.Join(home, ".local", "share", "unionfs"), nil
}

// Store is the image store at one root directory: unpacked layers under
// ROOT/layers/<hex of DiffID>/, each usable as a unionfs lower layer, and the
// metadata database ROOT/store.db. Its methods open the database only for
// each short transaction, so several unionfs processes share one store.
type Store struct {
	root string
}

// Open opens (creating if needed) the store at root.
func Open(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{abs, filepath.Join(abs, layersDir), filepath.Join(abs, tmpDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create store %s: %w", abs, err)
		}
	}
	s := &Store{root: abs}
	// Create the database now, so that a bad root fails here.
	if err := s.update(func(*layerdb.StoreDB) error { return nil }); err != nil {
		return nil, err
	}
	return s, nil
}

// Root returns the store's root directory.
func (s *Store) Root() string { return s.root }

// LayerDir returns the directory of the layer with the given DiffID.
func (s *Store) LayerDir(diffID string) string {
	_, h, _ := strings.Cut(diffID, ":")
	return filepath.Join(s.root, layersDir, h)
}

func (s *Store) update(fn func(*layerdb.StoreDB) error) error { return s.withDB(false, fn) }
func (s *Store) view(fn func(*layerdb.StoreDB) error) error   { return s.withDB(true, fn) }

func (s *Store) withDB(readOnly bool, fn func(*layerdb.StoreDB) error) error {
	db, err := layerdb.OpenStore(filepath.Join(s.root, storeDBName), layerdb.Options{ReadOnly: readOnly, Timeout: storeOpenTimeout})
	if errors.Is(err, fs.ErrNotExist) && readOnly {
		return s.update(fn)
	}
	if err != nil {
		return err
	}
	err = fn(db)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

// Images returns every image in the store, sorted by key.
func (s *Store) Images() ([]layerdb.Image, error) {
	var out []layerdb.Image
	err := s.view(func(db *layerdb.StoreDB) error {
		var err error
		out, err = db.Images()
		return err
	})
	return out, err
}

// Resolve finds the images a reference names: a name ("alpine" is
// docker.io/library/alpine:latest), NAME@DIGEST, or an image ID (the
// config digest, "sha256:" optional, or a prefix of at least 4 hex digits
// of it, which may name several tags of one image).
func (s *Store) Resolve(ref string) ([]layerdb.Image, error) {
	imgs, err := s.Images()
	if err != nil {
		return nil, err
	}
	if key, err := storeKey(ref); err == nil {
		for _, img := range imgs {
			if img.Key() == key {
				return []layerdb.Image{img}, nil
			}
		}
	}
	id := strings.TrimPrefix(ref, "sha256:")
	if len(id) >= 4 && len(id) <= 64 && isHex(id) {
		var out []layerdb.Image
		configs := map[string]bool{}
		for _, img := range imgs {
			if strings.HasPrefix(strings.TrimPrefix(img.Config, "sha256:"), id) {
				out = append(out, img)
				configs[img.Config] = true
			}
		}
		if len(configs) > 1 {
			return nil, fmt.Errorf("%w: %s matches %d images", ErrAmbiguous, ref, len(configs))
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrNoImage, ref)
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s + s[:len(s)%2]) // any length
	return err == nil && strings.ToLower(s) == s
}

// Removed reports what Remove did.
type Removed struct {
	Untagged []string // image keys removed
	Deleted  []string // DiffIDs of the layers deleted
}

// Remove removes the images refs name (see Resolve), then deletes every
// layer no image uses any more, except those a mount still holds: they go
// when the mount releases them. Every ref must name an image, else nothing
// is removed.
func (s *Store) Remove(refs ...string) (Removed, error) {
	var res Removed
	var keys []string
	for _, ref := range refs {
		imgs, err := s.Resolve(ref)
		if err != nil {
			return res, err
		}
		for _, img := range imgs {
			keys = append(keys, img.Key())
		}
	}
	err := s.update(func(db *layerdb.StoreDB) error {
		for _, k := range keys {
			if _, err := db.DeleteImage(k); err != nil {
				if errors.Is(err, layerdb.ErrNotFound) {
					continue // named twice, or removed meanwhile
				}
				return err
			}
			res.Untagged = append(res.Untagged, k)
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	res.Deleted, err = s.Collect()
	return res, err
}

// Collect deletes every layer that no image uses and no live lease holds
// (a running pull, a mounted image), layer directories without a record
// (left by a crash between the rename into place and the commit), and the
// staging and trash directories of processes that are gone.
func (s *Store) Collect() ([]string, error) {
	var trash []string
	moveAway := func(dir string) error {
		t, err := s.tempName("trash")
		if err != nil {
			return err
		}
		if err := os.Rename(dir, t); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		trash = append(trash, t)
		return nil
	}
	var removed []string
	err := s.update(func(db *layerdb.StoreDB) error {
		var err error
		removed, err = db.Collect(layerdb.Collector{
			Live:   func(l layerdb.Lease) bool { return processLive(l.PID, l.Start) },
			Remove: func(d string) error { return moveAway(s.LayerDir(d)) },
			Sweep: func(recorded func(string) bool) error {
				ents, err := os.ReadDir(filepath.Join(s.root, layersDir))
				if err != nil {
					return err
				}
				for _, e := range ents {
					if !recorded("sha256:" + e.Name()) {
						if err := moveAway(filepath.Join(s.root, layersDir, e.Name())); err != nil {
							return err
						}
					}
				}
				return nil
			},
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	// Outside the lock: deleting a big layer takes a while.
	var errs []error
	for _, t := range trash {
		errs = append(errs, os.RemoveAll(t))
	}
	errs = append(errs, s.sweepTmp())
	return removed, errors.Join(errs...)
}

// tempName returns a fresh path in ROOT/tmp, named after this process so
// that a collector can tell when its owner is gone.
func (s *Store) tempName(kind string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	start, _ := processStart(os.Getpid())
	return filepath.Join(s.root, tmpDir, fmt.Sprintf("%s-%d-%d-%x", kind, os.Getpid(), start, b)), nil
}

// sweepTmp removes staging and trash directories whose process is gone.
func (s *Store) sweepTmp() error {
	dir := filepath.Join(s.root, tmpDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		f := strings.Split(e.Name(), "-")
		if len(f) != 4 {
			continue
		}
		pid, err1 := strconv.Atoi(f[1])
		start, err2 := strconv.ParseUint(f[2], 10, 64)
		if err1 != nil || err2 != nil || processLive(pid, start) {
			continue
		}
		errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
	}
	return errors.Join(errs...)
}

// processStart returns the start time of a process (field 22 of
// /proc/PID/stat, in clock ticks since boot): with the PID it names one
// process, even after the PID is reused.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold anything.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22 is the 20th after the name
}

// processLive reports whether the process pid, started at start (0: any),
// still runs.
func processLive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	got, err := processStart(pid)
	if err != nil {
		return false
	}
	return start == 0 || got == start
}

// lease records that this process holds layers, until the returned
// function is called.
func (s *Store) lease(kind string, layers []string) (release func() error, err error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	pid := os.Getpid()
	start, err := processStart(pid)
	if err != nil {
		return nil, err
	}
	l := layerdb.Lease{
		ID:      fmt.Sprintf("%s-%d-%x", kind, pid, b),
		PID:     pid,
		Start:   start,
		Layers:  layers,
		Created: time.Now().UTC(),
	}
	if err := s.update(func(db *layerdb.StoreDB) error { return db.AddLease(l) }); err != nil {
		return nil, err
	}
	return func() error {
		return s.update(func(db *layerdb.StoreDB) error { return db.DeleteLease(l.ID) })
	}, nil
}

// LayerDirs returns the layer directories of the image ref names, topmost
// first, without a lease: to check a mount's arguments before the process
// that will serve it takes its lease with Lowers.
func (s *Store) LayerDirs(ref string) ([]string, error) {
	imgs, err := s.Resolve(ref)
	if err != nil {
		return nil, err
	}
	var dirs []string
	for i := len(imgs[0].Layers) - 1; i >= 0; i-- {
		dirs = append(dirs, s.LayerDir(imgs[0].Layers[i]))
	}
	return dirs, nil
}

// Lowers returns the layer directories of the image ref names, topmost
// first (as unionfs mount --lower wants them), and takes a lease on them
// for this process: rmi keeps them until release is called (or this
// process is gone). release deletes the lease and collects what the image's
// removal left behind. Call it in the process that serves the mount.
func (s *Store) Lowers(ref string) (dirs []string, release func() error, err error) {
	imgs, err := s.Resolve(ref)
	if err != nil {
		return nil, nil, err
	}
	img := imgs[0]
	drop, err := s.lease("mount", img.Layers)
	if err != nil {
		return nil, nil, err
	}
	// Between Resolve and the lease an rmi may have collected the layers:
	// check that they are all still there, under the lease.
	for i := len(img.Layers) - 1; i >= 0; i-- {
		d := s.LayerDir(img.Layers[i])
		if _, err := os.Stat(d); err != nil {
			return nil, nil, errors.Join(fmt.Errorf("image %s: layer %s: %w", ref, img.Layers[i], err), drop())
		}
		dirs = append(dirs, d)
	}
	released := false
	release = func() error {
		if released {
			return nil
		}
		released = true
		err := drop()
		_, cerr := s.Collect()
		return errors.Join(err, cerr)
	}
	return dirs, release, nil
}
