package main

import (
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/spf13/pflag"

	ufs "github.com/unionfs/unionfs/fs"
	"github.com/unionfs/unionfs/imgpull"
)

const mountUsage = `Usage: unionfs mount [flags] MOUNTPOINT
       unionfs -o OPTIONS MOUNTPOINT
       unionfs SOURCE MOUNTPOINT -o OPTIONS

Mounts the union of the lower directories (read-only, topmost first) and an
optional writable upper directory at MOUNTPOINT. Returns once the mount is
live and leaves the server running in the background (unless --foreground).
Without --upper the mount is read-only.

Flags:
`

// mountFlags are the command line of a mount, before they become a Config.
type mountFlags struct {
	lowers     []string
	upper      string
	workdir    string
	options    []string
	foreground bool
	logFile    string
	debug      bool
	volumes    []string
	root       string
	image      string
}

// parseMountFlags parses a mount's command line. As a mount(8) helper
// (helper set) it takes the flags mount(8) passes: -v is then verbose, not
// a volume, and -t and -N are accepted.
func parseMountFlags(args []string, helper bool) (*mountFlags, []string, error) {
	f := &mountFlags{}
	set := pflag.NewFlagSet("mount", pflag.ContinueOnError)
	set.SortFlags = false
	set.StringArrayVarP(&f.lowers, "lower", "l", nil, "lower `DIR[:DIR...]`, topmost first; repeat for more (later ones are lower)")
	set.StringVarP(&f.upper, "upper", "u", "", "writable upper `DIR`")
	set.StringVarP(&f.workdir, "workdir", "w", "", "copy-up scratch `DIR` on the upper's filesystem (default: inside the upper)")
	set.StringArrayVarP(&f.options, "options", "o", nil, "mount `OPTIONS`: lowerdir=,upperdir=,workdir=,ro,allow_other,default_permissions,debug and fstab words")
	set.BoolVarP(&f.foreground, "foreground", "f", false, "stay in the foreground and log to stderr; unmount on SIGINT/SIGTERM")
	volumeShort := "v"
	if helper {
		volumeShort = ""
	}
	set.StringArrayVarP(&f.volumes, "volume", volumeShort, nil, "bind `SRC:DST[:ro]` (a host dir), NAME:DST[:ro] (a named volume) or DST (an anonymous one) into the union; repeatable")
	set.StringVar(&f.image, "image", "", "mount the layers of the stored image `REF` (see unionfs pull) below any --lower")
	set.StringVar(&f.root, "root", "", "store `DIR` for images and named volumes (default /var/lib/unionfs as root, ~/.local/share/unionfs otherwise; or $UNIONFS_ROOT)")
	set.StringVar(&f.logFile, "log-file", "", "where the background server logs (default: the runtime directory)")
	set.BoolVarP(&f.debug, "debug", "d", false, "log every FUSE request")
	// mount(8) passes these to helpers; they change nothing here.
	for _, h := range []struct{ long, short string }{{"no-mtab", "n"}, {"sloppy", "s"}} {
		set.BoolP(h.long, h.short, false, "")
		set.MarkHidden(h.long)
	}
	if helper {
		set.BoolP("verbose", "v", false, "")
		set.StringP("type", "t", "", "")
		set.StringP("namespace", "N", "", "")
		for _, n := range []string{"verbose", "type", "namespace"} {
			set.MarkHidden(n)
		}
	}
	set.Usage = func() {}
	if err := set.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Print(mountUsage + set.FlagUsages())
			return nil, nil, pflag.ErrHelp
		}
		return nil, nil, fmt.Errorf("%v (see unionfs mount --help)", err)
	}
	return f, set.Args(), nil
}

// mountConfig turns flags and positional arguments into a filesystem
// configuration, reporting unknown options as warnings. The volumes come
// back in the shape inspect shows them.
func mountConfig(f *mountFlags, pos []string) (ufs.Config, []mountVolume, []string, error) {
	cfg, warnings, err := baseConfig(f, pos)
	if err != nil {
		return cfg.Config, nil, nil, err
	}
	var vols []mountVolume
	for _, spec := range append(append([]string(nil), f.volumes...), cfg.volumeSpecs...) {
		v, mv, err := parseVolumeSpec(spec, storeRoot(f.root))
		if err != nil {
			return cfg.Config, nil, nil, err
		}
		cfg.Volumes = append(cfg.Volumes, v)
		vols = append(vols, mv)
	}
	return cfg.Config, vols, warnings, nil
}

// parsedConfig is a Config plus the raw volume specs from -o.
type parsedConfig struct {
	ufs.Config
	volumeSpecs []string
}

func baseConfig(f *mountFlags, pos []string) (parsedConfig, []string, error) {
	var cfg parsedConfig
	switch len(pos) {
	case 1:
		cfg.Mountpoint = pos[0]
	case 2:
		cfg.FsName, cfg.Mountpoint = pos[0], pos[1]
	case 0:
		return cfg, nil, errors.New("no mountpoint given (see unionfs mount --help)")
	default:
		return cfg, nil, fmt.Errorf("too many arguments: %s (see unionfs mount --help)", strings.Join(pos, " "))
	}
	for _, l := range f.lowers {
		dirs, err := splitLowerdir(l)
		if err != nil {
			return cfg, nil, fmt.Errorf("--lower %q: %w", l, err)
		}
		cfg.Lowers = append(cfg.Lowers, dirs...)
	}
	o, err := parseMountOptions(f.options)
	if err != nil {
		return cfg, nil, err
	}
	cfg.Lowers = append(cfg.Lowers, o.lowers...)
	if cfg.Upper, err = pick("upper", f.upper, o.upper); err != nil {
		return cfg, nil, err
	}
	if cfg.Workdir, err = pick("workdir", f.workdir, o.workdir); err != nil {
		return cfg, nil, err
	}
	cfg.ReadOnly = o.readOnly
	cfg.AllowOther = o.allowOther
	cfg.Debug = o.debug || f.debug
	cfg.NoPassthrough = o.noPassthrough
	cfg.NoRing = o.noRing
	cfg.KernelFlags = o.kernelFlags
	cfg.volumeSpecs = o.volumes
	return cfg, o.warnings, nil
}

// pick merges a flag and the same setting given as an -o option.
func pick(what, flag, opt string) (string, error) {
	if flag != "" && opt != "" && flag != opt {
		return "", fmt.Errorf("%s given twice: --%s %s and %sdir=%s", what, what, flag, strings.TrimSuffix(what, "dir"), opt)
	}
	if flag != "" {
		return flag, nil
	}
	return opt, nil
}

func mountCmd(args []string) error { return mount(args, false) }

// mountHelperCmd is the mount(8) form: SOURCE MOUNTPOINT [-nsv] -o OPTS.
func mountHelperCmd(args []string) error { return mount(args, true) }

func mount(args []string, helper bool) error {
	if isDaemonChild() {
		// The parent parsed and checked everything, and made the
		// volumes: take its result rather than parse again.
		job, err := daemonJob()
		if err != nil {
			return reportReady(os.NewFile(3, "ready"), err)
		}
		return serveJob(job)
	}
	f, pos, err := parseMountFlags(args, helper)
	if errors.Is(err, pflag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	cfg, vols, warnings, err := mountConfig(f, pos)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintf(os.Stderr, "unionfs: warning: %s\n", w)
	}
	job := daemonArgs{Volumes: vols, Args: args, Image: f.image}
	if f.image != "" {
		s, err := openStore(storeRoot(f.root))
		if err != nil {
			return err
		}
		dirs, err := s.LayerDirs(f.image)
		if err != nil {
			return err
		}
		job.StoreRoot = s.Root()
		job.ImageLayers = len(dirs)
		cfg.Lowers = append(cfg.Lowers, dirs...)
	}
	created, err := makeVolumes(vols, storeRoot(f.root))
	if err != nil {
		return err
	}
	// A mount that fails takes back the volumes it made.
	undo := func(err error) error {
		removeVolumes(created, storeRoot(f.root))
		return err
	}
	// Check before detaching, so that a bad flag fails in the caller's
	// terminal and not in a log file.
	if err := cfg.Validate(); err != nil {
		return undo(err)
	}
	job.Config = cfg
	if !f.foreground {
		if err := startDaemon(job, f.logFile); err != nil {
			return undo(err)
		}
		return nil
	}
	job.Config.Logger = log.New(os.Stderr, "unionfs: ", log.LstdFlags)
	if err := serveJob(&job); err != nil {
		return undo(err)
	}
	return nil
}

// serveJob serves a mount in this process. A mount of an image leases its
// layers for as long as it lasts, so that rmi keeps them until unmount.
func serveJob(job *daemonArgs) error {
	if job.Image == "" {
		return serve(job.Config, job.Volumes, job.Args, "")
	}
	s, err := imgpull.Open(job.StoreRoot)
	if err == nil {
		var dirs []string
		var release func() error
		dirs, release, err = s.Lowers(job.Image)
		if err == nil {
			defer release()
			// The image's layers go below the explicit lowers.
			lowers := job.Config.Lowers
			job.Config.Lowers = append(lowers[:len(lowers)-job.ImageLayers:len(lowers)-job.ImageLayers], dirs...)
		}
	}
	if err != nil {
		if isDaemonChild() {
			return reportReady(os.NewFile(3, "ready"), err)
		}
		return err
	}
	return serve(job.Config, job.Volumes, job.Args, job.Image)
}
