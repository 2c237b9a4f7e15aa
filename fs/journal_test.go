package fs

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unionfs/unionfs/layerdb"
)

func openTestDB(t *testing.T, path string, opts layerdb.Options) *layerdb.DB {
	t.Helper()
	db, err := layerdb.Open(path, opts)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return db
}

// newTestJournal opens a fresh database and a journal on it. The journal
// and database are closed at cleanup unless the test closed them.
func newTestJournal(t *testing.T, opts layerdb.Options) (*journal, *layerdb.DB, string, *bytes.Buffer) {
	return newPacedTestJournal(t, opts, commitInterval)
}

func newPacedTestJournal(t *testing.T, opts layerdb.Options, interval time.Duration) (*journal, *layerdb.DB, string, *bytes.Buffer) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	db := openTestDB(t, path, opts)
	var logBuf bytes.Buffer
	j := newJournal(db, log.New(&logBuf, "", 0), interval)
	t.Cleanup(func() {
		j.close()
		db.Close()
	})
	return j, db, path, &logBuf
}

// reopen closes the journal and database and returns what the file holds.
func reopen(t *testing.T, j *journal, db *layerdb.DB, path string) (map[string]layerdb.Record, map[uint64]uint64) {
	t.Helper()
	if err := j.close(); err != nil {
		t.Fatalf("journal close: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return readDB(t, path)
}

func readDB(t *testing.T, path string) (map[string]layerdb.Record, map[uint64]uint64) {
	t.Helper()
	db := openTestDB(t, path, layerdb.Options{ReadOnly: true})
	defer db.Close()
	recs, err := db.Records()
	if err != nil {
		t.Fatal(err)
	}
	origins, err := db.Origins()
	if err != nil {
		t.Fatal(err)
	}
	return recs, origins
}

// model is what the records should be: the changes applied in memory, in
// the order their adds were made.
type model struct {
	recs    map[string]layerdb.Record
	origins map[uint64]uint64
}

func inTree(p, dir string) bool { return dir == "" || p == dir || strings.HasPrefix(p, dir+"/") }

func (m *model) deleteTree(dir string) {
	for p := range m.recs {
		if inTree(p, dir) {
			delete(m.recs, p)
		}
	}
}

func (m *model) moveTree(from, to string) {
	moved := make(map[string]layerdb.Record)
	for p, r := range m.recs {
		if inTree(p, from) {
			moved[to+p[len(from):]] = r
			delete(m.recs, p)
		}
	}
	m.deleteTree(to)
	maps.Copy(m.recs, moved)
}

// randomEdit returns changes for the journal and applies them to m. The
// paths are few, so that edits from different goroutines collide and the
// final state depends on their order.
func (m *model) randomEdit(r *rand.Rand, tag string) []layerdb.Change {
	dir := func() string { return fmt.Sprintf("d%d", r.IntN(4)) }
	var ch []layerdb.Change
	for range 1 + r.IntN(3) {
		switch r.IntN(10) {
		case 0:
			d := dir()
			ch = append(ch, layerdb.DeleteTreeChange(d))
			m.deleteTree(d)
		case 1:
			from, to := dir(), dir()
			if from == to {
				continue
			}
			ch = append(ch, layerdb.MoveTreeChange(from, to))
			m.moveTree(from, to)
		case 2:
			p := fmt.Sprintf("%s/n%d", dir(), r.IntN(4))
			ch = append(ch, layerdb.DeleteChange(p))
			delete(m.recs, p)
		case 3:
			up, ino := uint64(r.IntN(16)), r.Uint64()
			ch = append(ch, layerdb.OriginChange(up, ino))
			m.origins[up] = ino
		case 4:
			up := uint64(r.IntN(16))
			ch = append(ch, layerdb.DeleteOriginChange(up))
			delete(m.origins, up)
		default:
			p := fmt.Sprintf("%s/n%d", dir(), r.IntN(4))
			if r.IntN(3) == 0 {
				p += "/deep"
			}
			rec := layerdb.Record{Opaque: r.IntN(2) == 0, Redirect: tag}
			ch = append(ch, layerdb.PutChange(p, rec))
			m.recs[p] = rec
		}
	}
	return ch
}

// TestJournalOrder: many goroutines add changes (each under the lock that
// orders the in-memory update, as the filesystem does), some waiting for
// theirs, so that they reach the disk in many batches. The database must
// end up exactly as the in-memory model.
func TestJournalOrder(t *testing.T) {
	j, db, path, _ := newTestJournal(t, layerdb.Options{NoSync: true})
	m := &model{recs: make(map[string]layerdb.Record), origins: make(map[uint64]uint64)}
	var mu sync.Mutex // orders the model and the journal, as Union.mu does
	const goroutines, edits = 8, 300
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 42))
			for i := range edits {
				mu.Lock()
				seq, err := j.add(m.randomEdit(r, fmt.Sprintf("g%d/e%d", g, i)))
				mu.Unlock()
				if err != nil {
					errs <- fmt.Errorf("add: %w", err)
					return
				}
				switch r.IntN(8) {
				case 0:
					err = j.wait(seq)
				case 1:
					err = j.flush()
				}
				if err != nil {
					errs <- fmt.Errorf("wait: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := j.flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	recs, origins := reopen(t, j, db, path)
	if !maps.Equal(recs, m.recs) {
		t.Errorf("records on disk differ from the order of the adds:\n disk  %v\n model %v", recs, m.recs)
	}
	if !maps.Equal(origins, m.origins) {
		t.Errorf("origins on disk differ from the order of the adds:\n disk  %v\n model %v", origins, m.origins)
	}
}

// TestJournalWaitMeansOnDisk: once wait(seq) returns, the change and all
// before it are in the database file: a copy of the file, taken then and
// opened on its own, holds them.
func TestJournalWaitMeansOnDisk(t *testing.T) {
	j, _, path, _ := newTestJournal(t, layerdb.Options{})
	snapshot := filepath.Join(t.TempDir(), "copy.db")
	for i := range 20 {
		var seq uint64
		// Several adds, then a wait for the last only.
		for k := range 3 {
			var err error
			seq, err = j.add([]layerdb.Change{layerdb.PutChange(fmt.Sprintf("p%d/%d", i, k), layerdb.Record{Opaque: true})})
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := j.wait(seq); err != nil {
			t.Fatalf("wait(%d): %v", seq, err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(snapshot, data, 0o600); err != nil {
			t.Fatal(err)
		}
		recs, _ := readDB(t, snapshot)
		for k := range 3 {
			if p := fmt.Sprintf("p%d/%d", i, k); recs[p] != (layerdb.Record{Opaque: true}) {
				t.Fatalf("after wait(%d) the file has no record %s (has %d records)", seq, p, len(recs))
			}
		}
	}
}

func TestJournalWaitNothing(t *testing.T) {
	j, _, _, _ := newTestJournal(t, layerdb.Options{NoSync: true})
	if err := j.wait(0); err != nil {
		t.Errorf("wait(0): %v", err)
	}
	if err := j.flush(); err != nil {
		t.Errorf("flush of an empty journal: %v", err)
	}
	// An add of nothing still gets a sequence number that completes.
	seq, err := j.add(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.wait(seq); err != nil {
		t.Errorf("wait for an empty add: %v", err)
	}
}

// TestJournalStickyFailure: a commit that fails (here a change layerdb
// rejects) fails the journal for good: the wait for it, every later add,
// flush and close report the error, and the failed batch is not on disk,
// not even in part.
func TestJournalStickyFailure(t *testing.T) {
	j, db, path, logBuf := newTestJournal(t, layerdb.Options{NoSync: true})
	good := layerdb.Record{Opaque: true}
	seq, err := j.add([]layerdb.Change{layerdb.PutChange("before", good)})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.wait(seq); err != nil {
		t.Fatal(err)
	}
	seq, err = j.add([]layerdb.Change{layerdb.PutChange("same/batch", good), layerdb.PutChange("/not/clean", good)})
	if err != nil {
		t.Fatalf("add: %v (the error belongs to the commit)", err)
	}
	if err := j.wait(seq); !errors.Is(err, layerdb.ErrInvalidPath) {
		t.Fatalf("wait for the bad batch: %v, want ErrInvalidPath", err)
	}
	if _, err := j.add([]layerdb.Change{layerdb.PutChange("after", good)}); !errors.Is(err, layerdb.ErrInvalidPath) {
		t.Errorf("add after a failed commit: %v, want the commit's ErrInvalidPath", err)
	}
	if err := j.flush(); !errors.Is(err, layerdb.ErrInvalidPath) {
		t.Errorf("flush after a failed commit: %v, want ErrInvalidPath", err)
	}
	if err := j.wait(seq); !errors.Is(err, layerdb.ErrInvalidPath) {
		t.Errorf("second wait: %v, want ErrInvalidPath", err)
	}
	if err := j.close(); !errors.Is(err, layerdb.ErrInvalidPath) {
		t.Errorf("close after a failed commit: %v, want ErrInvalidPath", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logBuf.String(), "invalid path") {
		t.Errorf("the failure was not logged; log: %q", logBuf.String())
	}
	recs, _ := readDB(t, path)
	if want := map[string]layerdb.Record{"before": good}; !maps.Equal(recs, want) {
		t.Errorf("records on disk = %v, want %v (the failed batch all or nothing, nothing after it)", recs, want)
	}
}

// TestJournalNothingAfterFailure: changes queued while a failing batch is
// being committed are later than it, so they must not reach the disk
// either ("a failed commit: every later write fails too"). The disk must
// hold a prefix of the changes in order; with a later batch written past a
// failed one, the next mount reads a state that never existed (a rename's
// record moves without the whiteouts that came before it). Regression:
// the writer applied batches queued behind a failed one (fixed in fb6f370).
func TestJournalNothingAfterFailure(t *testing.T) {
	j, db, path, _ := newTestJournal(t, layerdb.Options{NoSync: true})
	// The first batch fails, but only once a second change has been queued
	// behind it: the writer must not write that one.
	realApply := j.apply
	queued, calls := make(chan struct{}), 0
	j.apply = func(ch ...layerdb.Change) error {
		calls++
		if calls == 1 {
			<-queued
			return layerdb.ErrInvalidPath
		}
		return realApply(ch...)
	}
	good := layerdb.Record{Opaque: true}
	if _, err := j.add([]layerdb.Change{layerdb.PutChange("first", good)}); err != nil {
		t.Fatal(err)
	}
	// Wait until the writer has taken the first batch.
	for {
		j.mu.Lock()
		taken := len(j.pending) == 0
		j.mu.Unlock()
		if taken {
			break
		}
		runtime.Gosched()
	}
	seq, err := j.add([]layerdb.Change{layerdb.PutChange("later", good)})
	if err != nil {
		t.Fatalf("queue behind a commit in progress: %v", err)
	}
	close(queued)
	if err := j.wait(seq); !errors.Is(err, layerdb.ErrInvalidPath) {
		t.Errorf("wait for a change queued behind a failed batch: %v, want ErrInvalidPath", err)
	}
	j.close()
	if calls != 1 {
		t.Errorf("the writer committed %d batches, want only the failed one", calls)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if recs, _ := readDB(t, path); len(recs) != 0 {
		t.Errorf("records on disk = %v, want none: a change queued after the failed batch was written", recs)
	}
}

// TestJournalCloseFlushes: close writes everything queued, and a second
// close is harmless.
func TestJournalCloseFlushes(t *testing.T) {
	j, db, path, _ := newTestJournal(t, layerdb.Options{NoSync: true})
	want := make(map[string]layerdb.Record)
	for i := range 500 {
		p := fmt.Sprintf("dir/f%d", i)
		r := layerdb.Record{Opaque: i%2 == 0, Redirect: fmt.Sprintf("r/%d", i)}
		if _, err := j.add([]layerdb.Change{layerdb.PutChange(p, r)}); err != nil {
			t.Fatal(err)
		}
		want[p] = r
	}
	if err := j.close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := j.close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if err := j.flush(); err != nil {
		t.Errorf("flush after close: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if recs, _ := readDB(t, path); !maps.Equal(recs, want) {
		t.Errorf("after close the disk has %d records, want %d", len(recs), len(want))
	}
}

// TestJournalPacesCommits: changes nobody waits for wait for the interval
// since the last commit, so a burst is one commit; a caller that waits
// gets its commit at once. The interval is an hour: a waiter that sat it
// out would hang the test instead of passing it.
func TestJournalPacesCommits(t *testing.T) {
	j, _, _, _ := newPacedTestJournal(t, layerdb.Options{NoSync: true}, time.Hour)
	var mu sync.Mutex
	commits := 0
	apply := j.apply
	j.mu.Lock()
	j.apply = func(c ...layerdb.Change) error {
		mu.Lock()
		commits++
		mu.Unlock()
		return apply(c...)
	}
	j.mu.Unlock()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return commits
	}

	// The first change is committed at once: no commit came before it.
	seq, err := j.add([]layerdb.Change{layerdb.PutChange("first", layerdb.Record{Opaque: true})})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.wait(seq); err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if _, err := j.add([]layerdb.Change{layerdb.PutChange(fmt.Sprintf("burst/f%d", i), layerdb.Record{Opaque: true})}); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(); n != 1 {
		t.Errorf("after a burst of 1000 changes nobody waits for: %d commits, want the first one only", n)
	}
	// Waiting for the last one commits the whole burst, in one go.
	if err := j.flush(); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 2 {
		t.Errorf("after a flush of the burst: %d commits, want 2", n)
	}
	for i := range 20 {
		seq, err := j.add([]layerdb.Change{layerdb.PutChange(fmt.Sprintf("waited/f%d", i), layerdb.Record{Opaque: true})})
		if err != nil {
			t.Fatal(err)
		}
		if err := j.wait(seq); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(); n != 22 {
		t.Errorf("20 changes each waited for: %d commits in all, want 22", n)
	}
}
