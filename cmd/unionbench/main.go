// Command unionbench runs the same file-system workloads on a plain
// directory, kernel overlayfs, fuse-overlayfs and unionfs, with repetitions
// interleaved across them, and prints a Markdown table of medians and of
// ratios (issue 6).
//
// It runs as root and re-executes itself in a private mount namespace, so
// that no mount it makes is visible outside or outlives it. Fixtures are
// generated once into the fixtures directory and reused; everything a run
// writes goes to a scratch directory next to them that is deleted at the
// end (not between workloads: on ext4, mass deletions slow the creates that
// follow them). It asserts no timings: a failed workload shows as
// "error: ..." in its cell and the run goes on.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
)

const usage = `Usage: unionbench [-quick] [-unionfs PATH] [-fixtures DIR] [-runs N] [-only REGEXP] [-backends LIST] [-out FILE]

Runs the workloads of issue 6 on a plain directory, kernel overlayfs,
fuse-overlayfs and unionfs, and prints a Markdown table of medians and a
table of ratios. Needs root. A backend that is not installed is skipped.

Flags:
`

// options are the command line.
type options struct {
	quick    bool
	unionfs  string
	fixtures string
	runs     int
	only     *regexp.Regexp
	backends map[string]bool
	out      string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fl := flag.NewFlagSet("unionbench", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.BoolVar(&o.quick, "quick", false, "small fixtures and few runs: finishes in about a minute")
	fl.StringVar(&o.unionfs, "unionfs", "bin/unionfs", "the unionfs `binary` to measure (make bench builds it)")
	fl.StringVar(&o.fixtures, "fixtures", "/var/tmp/unionbench-fixtures", "`dir` where fixtures are generated once and reused; scratch space goes there too")
	fl.IntVar(&o.runs, "runs", 0, "repetitions per workload and backend (default 3)")
	fl.StringVar(&o.out, "out", "", "also write the report to `file`")
	only := fl.String("only", "", "run only the workloads whose name matches `regexp` (stat-tree, layers-N, seqread, copyup, untar, rm-tree, mount-time, smallwrite, memory)")
	backends := fl.String("backends", "", "comma-separated `list` of backends to run (plain, overlay, fuse-overlayfs, unionfs, unionfs-devfuse; default all)")
	fl.Usage = func() {
		fmt.Fprint(stderr, usage)
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return o, err
	}
	if fl.NArg() > 0 {
		fl.Usage()
		return o, fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			return o, fmt.Errorf("-only: %w", err)
		}
		o.only = re
	}
	if *backends != "" {
		o.backends = map[string]bool{}
		for _, b := range strings.Split(*backends, ",") {
			switch b = strings.TrimSpace(b); b {
			case "plain", "overlay", "fuse-overlayfs", "unionfs", "unionfs-devfuse":
				o.backends[b] = true
			default:
				return o, fmt.Errorf("-backends: unknown backend %q (want plain, overlay, fuse-overlayfs, unionfs or unionfs-devfuse)", b)
			}
		}
	}
	if o.runs < 0 {
		return o, fmt.Errorf("-runs %d: want a positive number", o.runs)
	}
	var err error
	if o.fixtures, err = filepath.Abs(o.fixtures); err != nil {
		return o, err
	}
	if o.unionfs, err = filepath.Abs(o.unionfs); err != nil {
		return o, err
	}
	return o, nil
}

func main() {
	opt, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "unionbench: %v\n", err)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "unionbench: must run as root (it mounts file systems and drops the page cache): try sudo")
		os.Exit(1)
	}
	if !inPrivateNamespace() {
		os.Exit(reexecInPrivateNamespace())
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, opt, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "unionbench: %v\n", err)
		stop()
		os.Exit(1)
	}
}
