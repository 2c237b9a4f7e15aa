package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// harness runs workloads on backends and keeps track of what is mounted,
// so that everything can be undone however the run ends.
type harness struct {
	ctx         context.Context
	sz          sizes
	fx          *fixtures
	scratchRoot string
	scratchN    int
	progress    io.Writer

	mu   sync.Mutex // guards live: the watchdog reads it while a run mounts
	live []*mounted
}

// newScratch makes an empty mountpoint, upper and work dir for one mount.
func (h *harness) newScratch() (scratch, error) {
	h.scratchN++
	dir := fmt.Sprintf("%s/%04d", h.scratchRoot, h.scratchN)
	sc := scratch{dir: dir, mnt: dir + "/mnt", upper: dir + "/upper", work: dir + "/work"}
	for _, d := range []string{sc.mnt, sc.upper, sc.work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return sc, fmt.Errorf("create scratch: %w", err)
		}
	}
	return sc, nil
}

// mount mounts s with b in a new scratch dir.
func (h *harness) mount(b backend, s stack) (*mounted, error) {
	sc, err := h.newScratch()
	if err != nil {
		return nil, err
	}
	return h.mountIn(b, s, sc)
}

func (h *harness) mountIn(b backend, s stack, sc scratch) (*mounted, error) {
	m, err := b.mount(h.ctx, s, sc)
	if m != nil {
		h.mu.Lock()
		h.live = append(h.live, m)
		h.mu.Unlock()
	}
	if err != nil {
		return m, fmt.Errorf("mount: %w", err)
	}
	return m, nil
}

// unmount unmounts m; if that fails m stays listed for cleanup.
func (h *harness) unmount(m *mounted) error {
	if m.aborted {
		h.forget(m)
		return nil
	}
	if err := m.backend.unmount(h.ctx, m); err != nil {
		return fmt.Errorf("unmount: %w", err)
	}
	h.forget(m)
	return nil
}

func (h *harness) forget(m *mounted) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.live = slices.DeleteFunc(h.live, func(x *mounted) bool { return x == m })
}

// abort kills every live server and detaches every mount: after a
// timeout, this is what unblocks a process stuck in a FUSE request.
func (h *harness) abort() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.live {
		if m.pid > 0 {
			unix.Kill(m.pid, unix.SIGKILL)
		}
		if strings.HasPrefix(m.dir, h.scratchRoot+"/") {
			unix.Unmount(m.dir, unix.MNT_DETACH)
		}
		if m.pid > 0 {
			waitGone(m.pid, 10*time.Second)
		}
		m.aborted = true
	}
}

// cleanup unmounts what is still mounted and deletes the scratch root.
// Nothing is deleted while anything is still mounted below it: deleting
// through a mount that shows a lower layer directly would delete fixtures.
func (h *harness) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h.mu.Lock()
	live := h.live
	h.live = nil
	h.mu.Unlock()
	var errs []error
	for i := len(live) - 1; i >= 0; i-- {
		m := live[i]
		if m.aborted {
			continue
		}
		if err := m.backend.unmount(ctx, m); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m.dir, err))
		}
	}
	mnts, err := mountsUnder(h.scratchRoot)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, mp := range mnts {
		unix.Unmount(mp, unix.MNT_DETACH)
	}
	reapOrphans()
	if mnts, err = mountsUnder(h.scratchRoot); err != nil || len(mnts) > 0 {
		return errors.Join(append(errs, fmt.Errorf("still mounted, not deleting %s: %v %v", h.scratchRoot, mnts, err))...)
	}
	if err := os.RemoveAll(h.scratchRoot); err != nil {
		errs = append(errs, fmt.Errorf("delete scratch: %w", err))
	}
	return errors.Join(errs...)
}

// runAll runs every workload runs times on every backend. Repetitions are
// interleaved: each repetition runs the workload once on every backend,
// starting with the next backend each time, so that a slow phase of the
// machine does not fall on one backend.
func (h *harness) runAll(ws []workload, backends []backend, runs int, res *results) {
	for _, w := range ws {
		for rep := range runs {
			for i := range backends {
				if h.ctx.Err() != nil {
					return
				}
				b := backends[(rep+i)%len(backends)]
				v, err := h.runOne(w, b)
				if h.ctx.Err() != nil {
					return // cut short by ^C: not a result
				}
				res.record(w.metrics(), b.name(), v, err)
				h.report(w, b, rep, runs, v, err)
			}
		}
	}
}

func (h *harness) runOne(w workload, b backend) (values, error) {
	err := w.setup(b)
	var v values
	if err == nil {
		v, err = h.watch(w.run)
	}
	if terr := w.teardown(); terr != nil && err == nil {
		err = terr
	}
	return v, err
}

// watch runs run, and if it takes longer than the mode's timeout kills the
// servers under it so that it returns, and reports the timeout.
func (h *harness) watch(run func() (values, error)) (values, error) {
	type outcome struct {
		v   values
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		v, err := run()
		done <- outcome{v, err}
	}()
	timer := time.NewTimer(h.sz.timeout)
	defer timer.Stop()
	select {
	case o := <-done:
		return o.v, o.err
	case <-timer.C:
	}
	h.abort()
	select {
	case <-done:
	case <-time.After(time.Minute):
	}
	return nil, fmt.Errorf("timed out after %v; server killed", h.sz.timeout)
}

func (h *harness) report(w workload, b backend, rep, runs int, v values, err error) {
	var parts []string
	for _, m := range w.metrics() {
		if x, ok := v[m.key]; ok {
			parts = append(parts, fmt.Sprintf("%s %s", m.short, m.format(x)))
		}
	}
	switch {
	case errors.Is(err, errNotApplicable):
		parts = append(parts, "not applicable")
	case err != nil:
		parts = append(parts, "error: "+err.Error())
	}
	fmt.Fprintf(h.progress, "%-12s run %d/%d  %-14s %s\n", w.name(), rep+1, runs, b.name(), strings.Join(parts, ", "))
}
