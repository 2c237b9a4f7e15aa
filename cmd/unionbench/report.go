package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// runInfo is what the report says about the run besides the numbers.
type runInfo struct {
	sz          sizes
	fixtures    string
	backends    []backend
	skipped     []string
	wall        time.Duration
	fixtureTime time.Duration // spent building fixtures, 0 if all reused
	interrupted bool
	notes       []string
	ringNote    string // how unionfs got its requests
}

// renderReport writes the Markdown report: the machine, the medians and
// the ratios.
func renderReport(res *results, ri runInfo) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# unionfs benchmark (%s mode)\n\n", ri.sz.mode)
	if ri.interrupted {
		b.WriteString("**Interrupted: the tables are partial.**\n\n")
	}
	b.WriteString("| | |\n|---|---|\n")
	for _, row := range machineRows(ri) {
		fmt.Fprintf(&b, "| %s | %s |\n", row[0], cellText(row[1]))
	}
	b.WriteString("\n")
	for _, s := range ri.skipped {
		fmt.Fprintf(&b, "Skipped %s.\n\n", s)
	}
	fmt.Fprintf(&b, "Medians of %d runs per workload and backend, repetitions interleaved across backends. "+
		"Caches: `echo 3 > /proc/sys/vm/drop_caches` before each cold step; `sync` and "+
		"`echo 1 > /proc/sys/vm/drop_caches` before each write workload, after which its input "+
		"(tarball, lower file, lower tree) is read once so that only its writes are measured. "+
		"Read workloads mount without an upper (overlayfs gets an extra empty lower when there is one layer); "+
		"write workloads and mount-time with a fresh, empty upper.\n\n", ri.sz.runs)

	b.WriteString("## Medians\n\n| workload |")
	for _, name := range res.backends {
		fmt.Fprintf(&b, " %s |", name)
	}
	b.WriteString("\n|---|")
	b.WriteString(strings.Repeat("---:|", len(res.backends)))
	b.WriteString("\n")
	for _, m := range res.rows {
		fmt.Fprintf(&b, "| %s |", cellText(m.label))
		for _, name := range res.backends {
			fmt.Fprintf(&b, " %s |", res.show(m, name))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	renderRatios(&b, res, ri)
	for _, n := range ri.notes {
		fmt.Fprintf(&b, "%s\n\n", n)
	}
	return b.String()
}

func renderRatios(b *bytes.Buffer, res *results, ri runInfo) {
	full := ri.sz.mode == "full"
	b.WriteString("## Ratios\n\n")
	b.WriteString("Lower is better, except for seqread (a ratio of throughputs: higher is better).")
	if !full {
		b.WriteString(" The issue's targets are for the full sizes; run without -quick to compare.")
	}
	b.WriteString("\n\n| workload | unionfs / overlay | unionfs / fuse-overlayfs | fuse-overlayfs / overlay | unionfs-devfuse / overlay |")
	if full {
		b.WriteString(" target: unionfs / overlay |")
	}
	b.WriteString("\n|---|---:|---:|---:|---:|")
	if full {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, m := range res.rows {
		if m.kind == factor {
			continue
		}
		fmt.Fprintf(b, "| %s |", cellText(m.label))
		for _, pair := range [][2]string{{"unionfs", "overlay"}, {"unionfs", "fuse-overlayfs"}, {"fuse-overlayfs", "overlay"}, {"unionfs-devfuse", "overlay"}} {
			if x, ok := res.ratio(m, pair[0], pair[1]); ok {
				fmt.Fprintf(b, " %.2f |", x)
			} else {
				b.WriteString(" — |")
			}
		}
		if full {
			fmt.Fprintf(b, " %s |", orDash(m.target))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	if !full {
		return
	}
	var abs []string
	for _, m := range res.rows {
		if m.absTarget == "" {
			continue
		}
		abs = append(abs, fmt.Sprintf("- %s: unionfs %s (target %s)", m.label, res.show(m, "unionfs"), m.absTarget))
	}
	if len(abs) > 0 {
		fmt.Fprintf(b, "Targets on unionfs's own numbers:\n\n%s\n\n", strings.Join(abs, "\n"))
	}
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func machineRows(ri runInfo) [][2]string {
	var u unix.Utsname
	unix.Uname(&u)
	rows := [][2]string{
		{"date", time.Now().UTC().Format("2006-01-02 15:04 MST")},
		{"CPU", fmt.Sprintf("%s, %d cores", cpuModel(), runtime.NumCPU())},
		{"RAM", memTotal()},
		{"kernel", fmt.Sprintf("%s %s %s", unix.ByteSliceToString(u.Sysname[:]), unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Machine[:]))},
		{"fixtures", fmt.Sprintf("`%s` on %s", ri.fixtures, fsOf(ri.fixtures))},
		{"mode", fmt.Sprintf("%s: %d runs", ri.sz.mode, ri.sz.runs)},
	}
	for _, bk := range ri.backends {
		rows = append(rows, [2]string{bk.name(), describeBackend(bk, ri)})
	}
	wall := fmt.Sprintf("%v", ri.wall.Round(time.Second))
	if ri.fixtureTime > time.Second {
		wall += fmt.Sprintf(" (of which %v building fixtures)", ri.fixtureTime.Round(time.Second))
	}
	return append(rows, [2]string{"wall time", wall})
}

func describeBackend(b backend, ri runInfo) string {
	switch b := b.(type) {
	case *plainDir:
		return "the workload on an ordinary directory (for writes, a fresh copy)"
	case kernelOverlay:
		return "kernel overlayfs, `mount -t overlay -o lowerdir=...,upperdir=...,workdir=...,redirect_dir=on,index=on,xino=on`"
	case fuseOverlayfs:
		return linesWith(exec.Command("fuse-overlayfs", "--version"), "fuse-overlayfs:", "FUSE library") + ", default options"
	case unionfsBin:
		if b.noRing {
			return "the same unionfs with `-o noio_uring`: requests over /dev/fuse"
		}
		return fmt.Sprintf("%s (`%s`), %s", linesWith(exec.Command(b.path, "version"), "unionfs"), b.path, ri.ringNote)
	}
	return ""
}

// linesWith runs cmd and joins the lines of its output that start with
// one of prefixes.
func linesWith(cmd *exec.Cmd, prefixes ...string) string {
	out, err := cmd.Output()
	if err != nil {
		return fmt.Sprintf("version unknown (%v)", err)
	}
	var keep []string
	for _, line := range strings.Split(string(out), "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				keep = append(keep, strings.TrimSpace(line))
				break
			}
		}
	}
	return strings.Join(keep, "; ")
}

// cellText escapes what would end a Markdown table cell: GitHub splits
// cells at "|" even inside code spans.
func cellText(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func memTotal() string {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err == nil {
				return fmt.Sprintf("%.1f GiB", kb/(1<<20))
			}
		}
	}
	return "unknown"
}

// fsOf names the file system holding dir, from the mount that contains it.
func fsOf(dir string) string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "unknown file system"
	}
	best, desc := "", "unknown file system"
	for _, line := range strings.Split(string(data), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 2 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		rel, err := filepath.Rel(mp, dir)
		if err != nil || strings.HasPrefix(rel, "..") || len(mp) < len(best) {
			continue
		}
		best, desc = mp, fmt.Sprintf("%s (%s, mounted at %s)", g[0], g[1], mp)
	}
	return desc
}
