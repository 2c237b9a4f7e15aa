package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// bench runs the whole benchmark inside the private mount namespace and
// writes the report to stdout (and -out); progress goes to stderr.
func bench(ctx context.Context, opt options, stdout, stderr io.Writer) error {
	start := time.Now()
	if err := settleNamespace(); err != nil {
		return err
	}
	sz := fullSizes
	if opt.quick {
		sz = quickSizes
	}
	if opt.runs > 0 {
		sz.runs = opt.runs
	}
	if err := os.MkdirAll(opt.fixtures, 0o755); err != nil {
		return fmt.Errorf("create fixtures dir: %w", err)
	}
	root, err := filepath.EvalSymlinks(opt.fixtures)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "unionbench: %s mode, %d runs, fixtures in %s\n", sz.mode, sz.runs, root)
	fx, err := prepareFixtures(root, goRoot(), sz, stderr)
	if err != nil {
		return err
	}
	ri := runInfo{sz: sz, fixtures: fx.dir, fixtureTime: time.Since(start)}
	if ri.fixtureTime < 5*time.Second {
		ri.fixtureTime = 0 // reused, only checked
	}

	restoreRing, ringNote := enableRing()
	defer restoreRing()
	ri.ringNote = ringNote
	for _, b := range []backend{newPlainDir(), kernelOverlay{}, fuseOverlayfs{}, unionfsBin{path: opt.unionfs}, unionfsBin{path: opt.unionfs, noRing: true}} {
		if opt.backends != nil && !opt.backends[b.name()] {
			continue
		}
		if err := b.available(); err != nil {
			line := fmt.Sprintf("%s: %v", b.name(), err)
			fmt.Fprintf(stderr, "unionbench: skipping %s\n", line)
			ri.skipped = append(ri.skipped, line)
			continue
		}
		ri.backends = append(ri.backends, b)
	}

	scratchRoot := filepath.Join(root, "scratch")
	if err := removeStaleScratch(scratchRoot, stderr); err != nil {
		return err
	}
	if err := os.MkdirAll(scratchRoot, 0o755); err != nil {
		return fmt.Errorf("create scratch dir: %w", err)
	}
	h := &harness{ctx: ctx, sz: sz, fx: fx, scratchRoot: scratchRoot, progress: stderr}
	cleaned := false
	defer func() {
		if !cleaned { // a panic: still unmount everything
			if err := h.cleanup(); err != nil {
				fmt.Fprintf(stderr, "unionbench: cleanup: %v\n", err)
			}
		}
	}()

	ws := allWorkloads(h)
	if opt.only != nil {
		var sel []workload
		for _, w := range ws {
			if opt.only.MatchString(w.name()) {
				sel = append(sel, w)
			}
		}
		if len(sel) == 0 {
			return fmt.Errorf("-only %q matches no workload", opt.only)
		}
		ws = sel
	}
	var names []string
	for _, b := range ri.backends {
		names = append(names, b.name())
	}
	res := newResults(names, ws)
	h.runAll(runOrder(ws), ri.backends, sz.runs, res)
	ri.interrupted = ctx.Err() != nil

	fmt.Fprintf(stderr, "unionbench: unmounting and deleting %s\n", scratchRoot)
	cleanErr := h.cleanup()
	cleaned = true
	addGrowth(res, sz)
	ri.wall = time.Since(start)
	report := renderReport(res, ri)
	fmt.Fprint(stdout, report)
	if opt.out != "" {
		if err := os.WriteFile(opt.out, []byte(report), 0o644); err != nil {
			return errors.Join(cleanErr, fmt.Errorf("write report: %w", err))
		}
	}
	if ri.interrupted {
		return errors.Join(cleanErr, errors.New("interrupted"))
	}
	return cleanErr
}

// addGrowth derives the growth of the first lstat pass from the smallest
// to the largest N, per backend, from the medians.
func addGrowth(res *results, sz sizes) {
	lo, hi := sz.layerCounts[0], maxInt(sz.layerCounts)
	_, haveLo := res.cells[fmt.Sprintf("layers-%d/first", lo)]
	_, haveHi := res.cells[fmt.Sprintf("layers-%d/first", hi)]
	if lo == hi || !haveLo || !haveHi { // one N, or -only left them out
		return
	}
	m := growthMetric(lo, hi)
	res.insertRowAfter(fmt.Sprintf("layers-%d/ls", hi), m)
	for _, b := range res.backends {
		c := res.cell(m.key, b)
		x, ok1 := res.cell(fmt.Sprintf("layers-%d/first", lo), b).median()
		y, ok2 := res.cell(fmt.Sprintf("layers-%d/first", hi), b).median()
		if ok1 && ok2 && x > 0 {
			c.samples = []float64{y / x}
		} else {
			c.err = fmt.Sprintf("needs layers-%d and layers-%d", lo, hi)
		}
	}
}

// removeStaleScratch deletes the scratch dir a killed run left behind,
// unless something is still mounted in it.
func removeStaleScratch(dir string, stderr io.Writer) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	mnts, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	if len(mnts) > 0 {
		return fmt.Errorf("%s has mounts in it (%v): unmount them, then run again", dir, mnts)
	}
	fmt.Fprintf(stderr, "unionbench: deleting %s, left by an earlier run\n", dir)
	return os.RemoveAll(dir)
}
