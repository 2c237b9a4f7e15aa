package fs

import (
	"log"
	"sync"
	"time"

	"github.com/unionfs/unionfs/layerdb"
)

// journal writes record changes to the state database in the background,
// in batches: one transaction, so one fsync, for whatever accumulated while
// the previous batch was being written, and at most one commit every
// commitInterval unless someone waits for one. A burst of deletions (rm -rf
// of a lower tree) thus costs a few commits instead of one per file.
//
// Changes are applied to the in-memory records before they reach the disk.
// A change that an upper modification depends on (the whiteout that must
// exist before the upper file shadowing a lower one is unlinked) is waited
// for; the rest may be lost in a crash, which then reads as if the
// operation had not happened.
type journal struct {
	apply func(...layerdb.Change) error // writes one batch in one transaction
	log   *log.Logger

	mu      sync.Mutex
	cond    sync.Cond
	pending []layerdb.Change
	queued  uint64 // sequence number of the last batch of changes added
	written uint64 // changes up to this sequence number are on disk
	err     error  // a failed commit: every later write fails too
	closed  bool

	interval time.Duration // commitInterval, but for tests

	waiters int           // callers blocked in wait
	urgent  chan struct{} // a waiter arrived: commit now
	kick    chan struct{}
	done    chan struct{}
}

// commitInterval is the shortest time between two commits that nobody
// waits for: the longest a deletion stays only in memory, besides the
// commit itself.
const commitInterval = 10 * time.Millisecond

func newJournal(db *layerdb.DB, logger *log.Logger, interval time.Duration) *journal {
	j := &journal{apply: db.Apply, log: logger, interval: interval, kick: make(chan struct{}, 1), urgent: make(chan struct{}, 1), done: make(chan struct{})}
	j.cond.L = &j.mu
	go j.run()
	return j
}

// add queues changes. The caller must hold the lock that orders its
// in-memory update, so that the disk sees changes in the same order.
// It returns the sequence number to wait for.
func (j *journal) add(changes []layerdb.Change) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return 0, j.err
	}
	j.pending = append(j.pending, changes...)
	j.queued++
	select {
	case j.kick <- struct{}{}:
	default:
	}
	return j.queued, nil
}

// wait blocks until the changes with sequence number seq are on disk.
func (j *journal) wait(seq uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for j.written < seq && j.err == nil {
		j.waiters++
		select {
		case j.urgent <- struct{}{}:
		default:
		}
		j.cond.Wait()
		j.waiters--
	}
	return j.err
}

// flush waits until everything queued so far is on disk.
func (j *journal) flush() error {
	j.mu.Lock()
	seq := j.queued
	j.mu.Unlock()
	return j.wait(seq)
}

func (j *journal) run() {
	defer close(j.done)
	var last time.Time
	// Timers have no stale values to drain since Go 1.23 (go.mod says 1.25).
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for range j.kick {
		j.pace(timer, last)
		last = time.Now()
		j.mu.Lock()
		batch, upto, failed := j.pending, j.queued, j.err != nil
		j.pending = nil
		j.mu.Unlock()
		var err error
		// After a failed commit nothing more is written: what was queued
		// behind it may depend on it.
		if len(batch) > 0 && !failed {
			err = j.apply(batch...)
			if err != nil {
				j.log.Printf("state database: %v; refusing further changes", err)
			}
		}
		j.mu.Lock()
		if err != nil && j.err == nil {
			j.err = err
		}
		j.written = upto
		j.cond.Broadcast()
		j.mu.Unlock()
	}
}

// pace waits until the interval since the last commit is over, unless
// someone waits for a commit. A wake-up from urgent is checked against the
// waiters: it may be left from one that a commit already served.
func (j *journal) pace(timer *time.Timer, last time.Time) {
	for {
		j.mu.Lock()
		hurry := j.waiters > 0 || j.closed
		j.mu.Unlock()
		d := j.interval - time.Since(last)
		if hurry || d <= 0 {
			return
		}
		timer.Reset(d)
		select {
		case <-timer.C:
			return
		case <-j.urgent:
			timer.Stop()
		}
	}
}

// close writes what is queued and stops the writer.
func (j *journal) close() error {
	err := j.flush()
	j.mu.Lock()
	if !j.closed {
		j.closed = true
		close(j.kick)
	}
	j.mu.Unlock()
	<-j.done
	return err
}
