package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/unionfs/unionfs/imgpull"
)

// imageCommand runs the image subcommands (pull, images, rmi, diff). It
// reports handled=false for any other name.
func imageCommand(name string, args []string) (handled bool, err error) {
	var run func([]string) error
	switch name {
	case "pull":
		run = pullCmd
	case "images":
		run = imagesCmd
	case "rmi":
		run = rmiCmd
	case "diff":
		run = diffCmd
	default:
		return false, nil
	}
	err = run(args)
	if errors.Is(err, pflag.ErrHelp) {
		err = nil
	}
	return true, err
}

// newImageFlags is a flag set with --root, printing usage on --help.
func newImageFlags(name, usage string, root *string) *pflag.FlagSet {
	set := pflag.NewFlagSet(name, pflag.ContinueOnError)
	set.SortFlags = false
	set.StringVar(root, "root", "", "image store `DIR` (default: $"+imgpull.RootEnv+", /var/lib/unionfs as root, else $XDG_DATA_HOME/unionfs)")
	set.Usage = func() { fmt.Print(usage + set.FlagUsages()) }
	return set
}

// parseImageFlags parses args; on --help pflag prints the usage and this
// returns pflag.ErrHelp.
func parseImageFlags(set *pflag.FlagSet, args []string) error {
	set.SetOutput(io.Discard)
	if err := set.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%v (see unionfs %s --help)", err, set.Name())
	}
	return nil
}

func openStore(root string) (*imgpull.Store, error) {
	if root == "" {
		var err error
		if root, err = imgpull.DefaultRoot(); err != nil {
			return nil, err
		}
	}
	return imgpull.Open(root)
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

const pullUsage = `Usage: unionfs pull [flags] REF

Downloads an image into the store: "alpine" is docker.io/library/alpine:latest;
REF may name a tag (NAME:TAG) or a digest (NAME@sha256:...). Credentials come
from the docker config (~/.docker/config.json, $DOCKER_CONFIG, credential helpers).

Flags:
`

func pullCmd(args []string) error {
	var root string
	var o imgpull.PullOptions
	set := newImageFlags("pull", pullUsage, &root)
	set.StringVar(&o.Platform, "platform", "", "`os/arch[/variant]` to pick from a multi-platform image (default: this machine's)")
	set.BoolVar(&o.Insecure, "insecure", false, "allow plain HTTP and unverified TLS (a local registry)")
	set.IntVar(&o.Jobs, "jobs", imgpull.DefaultJobs, "layers to download at once")
	set.Int64Var(&o.Limits.MaxBytes, "max-layer-size", imgpull.DefaultMaxBytes, "refuse a layer whose uncompressed tar, or unpacked data, exceeds `BYTES`")
	set.IntVar(&o.Limits.MaxEntries, "max-layer-entries", imgpull.DefaultMaxEntries, "refuse a layer with more than `N` tar entries")
	quiet := set.BoolP("quiet", "q", false, "print only the image name")
	if err := parseImageFlags(set, args); err != nil {
		return err
	}
	if set.NArg() != 1 {
		return fmt.Errorf("pull needs exactly one image reference (see unionfs pull --help)")
	}
	s, err := openStore(root)
	if err != nil {
		return err
	}
	if !*quiet {
		o.Progress = imgpull.NewProgress(os.Stdout, isTerminal(os.Stdout))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	img, err := s.Pull(ctx, set.Arg(0), o)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("pull %s interrupted; layers already complete are kept, run it again to resume", set.Arg(0))
		}
		return err
	}
	fmt.Println(img.Key())
	return nil
}

const imagesUsage = `Usage: unionfs images [flags]

Lists the images in the store: REPOSITORY TAG IMAGE ID CREATED SIZE.

Flags:
`

func imagesCmd(args []string) error {
	var root string
	set := newImageFlags("images", imagesUsage, &root)
	format := set.String("format", "", `"json" for one JSON object per image and line`)
	quiet := set.BoolP("quiet", "q", false, "print only image IDs")
	if err := parseImageFlags(set, args); err != nil {
		return err
	}
	if set.NArg() != 0 {
		return fmt.Errorf("images takes no arguments (see unionfs images --help)")
	}
	if *format != "" && *format != "json" {
		return fmt.Errorf("--format %q: only json is supported", *format)
	}
	s, err := openStore(root)
	if err != nil {
		return err
	}
	imgs, err := s.Images()
	if err != nil {
		return err
	}
	rows := imgpull.Summarize(imgs, time.Now())
	w := bufio.NewWriter(os.Stdout)
	switch {
	case *quiet:
		for _, r := range rows {
			fmt.Fprintln(w, r.ID)
		}
	case *format == "json":
		err = imgpull.WriteJSON(w, rows)
	default:
		err = imgpull.WriteTable(w, rows)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	return err
}

const rmiUsage = `Usage: unionfs rmi [flags] REF...

Removes images (by name, NAME@DIGEST or image ID) and deletes the layers no
other image uses. Layers of a mounted image are kept until it is unmounted.

Flags:
`

func rmiCmd(args []string) error {
	var root string
	set := newImageFlags("rmi", rmiUsage, &root)
	if err := parseImageFlags(set, args); err != nil {
		return err
	}
	if set.NArg() == 0 {
		return fmt.Errorf("rmi needs at least one image (see unionfs rmi --help)")
	}
	s, err := openStore(root)
	if err != nil {
		return err
	}
	res, err := s.Remove(set.Args()...)
	for _, k := range res.Untagged {
		fmt.Printf("Untagged: %s\n", k)
	}
	for _, d := range res.Deleted {
		fmt.Printf("Deleted: %s\n", d)
	}
	return err
}

const diffUsage = `Usage: unionfs diff [flags] UPPER > layer.tar

Writes the changes in an upper directory as an OCI layer tar: its files, its
deletions as .wh. whiteouts, its opaque directories as .wh..wh..opq. A renamed
directory is written in full, which needs the lower layers (--lower or --image).
Unmount the upper first.

Flags:
`

func diffCmd(args []string) (err error) {
	var root string
	set := newImageFlags("diff", diffUsage, &root)
	lowers := set.StringArrayP("lower", "l", nil, "lower `DIR[:DIR...]`, topmost first, for renamed directories; may repeat")
	image := set.String("image", "", "take the lower layers from image `REF` in the store (below any --lower)")
	output := set.StringP("output", "o", "", "write the tar to `FILE` instead of standard output")
	if err := parseImageFlags(set, args); err != nil {
		return err
	}
	if set.NArg() != 1 {
		return fmt.Errorf("diff needs exactly one upper directory (see unionfs diff --help)")
	}
	var o imgpull.DiffOptions
	for _, l := range *lowers {
		dirs, err := splitLowerdir(l)
		if err != nil {
			return fmt.Errorf("--lower %q: %w", l, err)
		}
		o.Lowers = append(o.Lowers, dirs...)
	}
	if *image != "" {
		s, err := openStore(root)
		if err != nil {
			return err
		}
		dirs, release, err := s.Lowers(*image)
		if err != nil {
			return err
		}
		defer func() {
			if rerr := release(); err == nil {
				err = rerr
			}
		}()
		o.Lowers = append(o.Lowers, dirs...)
	}
	if *output == "" && isTerminal(os.Stdout) {
		return fmt.Errorf("refusing to write a tar to a terminal: redirect it (> layer.tar) or use --output")
	}
	w := io.Writer(os.Stdout)
	var f *os.File
	if *output != "" {
		if f, err = os.Create(*output); err != nil {
			return err
		}
		w = f
	}
	upper := set.Arg(0)
	if rec := liveMountAt(upper); rec != nil {
		// A mountpoint: diff its upper, reading a copy of the state
		// database, which the server holds locked.
		if rec.Upper == "" {
			return fmt.Errorf("%s is a read-only mount: it has no changes", upper)
		}
		upper = rec.Upper
		o.Lowers = append(o.Lowers, rec.Lowers...)
		snap, cleanup, err := snapshotStateDB(rec.Upper)
		if err != nil {
			return err
		}
		defer cleanup()
		o.StateDB = snap
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	err = imgpull.Diff(bw, upper, o)
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(*output)
		}
	}
	return err
}
