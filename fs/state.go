package fs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unionfs/unionfs/layerdb"
)

// stateLockTimeout bounds the wait for another mount's lock on the upper.
const stateLockTimeout = 2 * time.Second

// openState opens the upper's state database, refusing the mount if another
// mount holds it or it cannot be read, and prepares the work directory.
func (u *Union) openState() error {
	stateDir := filepath.Join(u.cfg.Upper, StateDir)
	if err := os.Mkdir(stateDir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create state dir: %w", err)
	}
	dbPath := filepath.Join(stateDir, StateDBName)
	db, err := layerdb.Open(dbPath, layerdb.Options{Timeout: stateLockTimeout})
	if err != nil {
		if errors.Is(err, layerdb.ErrLocked) {
			return fmt.Errorf("upper dir %s is in use by another mount (%s is locked)", u.cfg.Upper, dbPath)
		}
		return err
	}
	recs, err := db.Records()
	if err != nil {
		db.Close()
		return fmt.Errorf("read %s: %w", dbPath, err)
	}
	origins, err := db.Origins()
	if err != nil {
		db.Close()
		return fmt.Errorf("read %s: %w", dbPath, err)
	}
	u.db, u.records, u.origins = db, newRecordTree(recs), origins
	u.journal = newJournal(db, u.log, commitInterval)

	// A private subdirectory, so that cleaning it can never touch
	// anything else the user keeps in a --workdir.
	work := filepath.Join(stateDir, "work")
	if u.cfg.Workdir != "" {
		work = filepath.Join(u.cfg.Workdir, "unionfs-work")
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return fmt.Errorf("create work dir: %w", err)
	}
	// Anything left in the work dir is a copy-up that a crash interrupted
	// before it was renamed into place: never visible, safe to drop.
	if err := clearDir(work); err != nil {
		return fmt.Errorf("clean work dir %s: %w", work, err)
	}
	u.workDir = work
	fd, err := unix.Open(work, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open work dir %s: %w", work, err)
	}
	u.workFd = fd
	return nil
}

func clearDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
