package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	ufs "github.com/unionfs/unionfs/fs"
	"github.com/unionfs/unionfs/imgpull"
	"github.com/unionfs/unionfs/layerdb"
)

func inspectCmd(args []string) error {
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(os.Stderr, "Usage: unionfs inspect MOUNTPOINT\n\nPrints what a live mount stacks, as JSON.")
		if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return errors.New("inspect takes one mountpoint")
	}
	mnt, err := filepath.Abs(args[0])
	if err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks(mnt); err == nil {
		mnt = real
	}
	for _, rec := range liveMounts() {
		if rec.Mountpoint == mnt {
			data, err := json.MarshalIndent(rec, "", "    ")
			if err != nil {
				return err
			}
			fmt.Println(string(data))
			return nil
		}
	}
	return fmt.Errorf("%s is not a live unionfs mount of this user", mnt)
}

// liveMountAt returns the record of the live mount at p, if p is one.
func liveMountAt(p string) *mountRecord {
	abs, err := filepath.Abs(p)
	if err != nil {
		return nil
	}
	for _, rec := range liveMounts() {
		if rec.Mountpoint == abs {
			return &rec
		}
	}
	return nil
}

// snapshotStateDB copies a live upper's state database for reading. The
// server may write to it meanwhile; a copy that does not read back as a
// database is taken again.
func snapshotStateDB(upper string) (string, func(), error) {
	dir, err := os.MkdirTemp("", "unionfs-diff-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	src := filepath.Join(upper, ufs.StateDir, ufs.StateDBName)
	dst := filepath.Join(dir, "state.db")
	var lastErr error
	for try := 0; try < 5; try++ {
		data, err := os.ReadFile(src)
		if err != nil {
			cleanup()
			return "", nil, err
		}
		if err := os.WriteFile(dst, data, 0o600); err != nil {
			cleanup()
			return "", nil, err
		}
		db, err := layerdb.Open(dst, layerdb.Options{ReadOnly: true})
		if err == nil {
			_, err = db.Records()
			db.Close()
		}
		if err == nil {
			return dst, cleanup, nil
		}
		lastErr = err
		time.Sleep(10 * time.Millisecond)
	}
	cleanup()
	return "", nil, fmt.Errorf("copy the state database of %s: %w", upper, lastErr)
}

func psCmd(args []string) error {
	quiet := len(args) == 1 && (args[0] == "-q" || args[0] == "--quiet")
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	if !quiet {
		fmt.Fprintln(w, "MOUNTPOINT\tPID\tLAYERS\tUPPER\tVOLUMES\tSTARTED")
	}
	for _, rec := range liveMounts() {
		if quiet {
			fmt.Fprintln(w, rec.Mountpoint)
			continue
		}
		upper := rec.Upper
		if upper == "" {
			upper = "(read-only)"
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%d\t%s\n", rec.Mountpoint, rec.PID, len(rec.Lowers), upper,
			len(rec.Mounts), rec.Started.Local().Format(time.DateTime))
	}
	return w.Flush()
}

// infoReport is `unionfs info`, in the spirit of docker info.
type infoReport struct {
	Version             string            `json:"Version"`
	GoVersion           string            `json:"GoVersion"`
	Kernel              string            `json:"Kernel"`
	FUSEProtocol        string            `json:"FUSEProtocol"`
	StorageRoot         string            `json:"StorageRoot"`
	StorageFilesystem   string            `json:"StorageFilesystem"`
	Images              int               `json:"Images"`
	Layers              int               `json:"Layers"`
	Volumes             int               `json:"Volumes"`
	Mounts              int               `json:"Mounts"`
	UpperFilesystems    map[string]string `json:"UpperFilesystems"`
	PassthroughCapable  bool              `json:"PassthroughCapable"`
	IOURingAvailable    bool              `json:"IOURingAvailable"`
	ReflinksAvailable   bool              `json:"ReflinksAvailable"`
	RuntimeDir          string            `json:"RuntimeDir"`
	FusermountAvailable bool              `json:"FusermountAvailable"`
}

func infoCmd(args []string) error {
	var root string
	asJSON := false
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--format" && i+1 < len(args) && args[i+1] == "json":
			asJSON = true
			i++
		case args[i] == "--format=json":
			asJSON = true
		case args[i] == "--root" && i+1 < len(args):
			root = args[i+1]
			i++
		case strings.HasPrefix(args[i], "--root="):
			root = strings.TrimPrefix(args[i], "--root=")
		default:
			return fmt.Errorf("info: unknown argument %q (use --root DIR, --format json)", args[i])
		}
	}
	root = storeRoot(root)
	var uts unix.Utsname
	unix.Uname(&uts)
	r := infoReport{
		Version:          version,
		GoVersion:        runtime.Version(),
		Kernel:           unix.ByteSliceToString(uts.Release[:]),
		FUSEProtocol:     "negotiated at mount (no live mount)",
		StorageRoot:      root,
		UpperFilesystems: map[string]string{},
		RuntimeDir:       runtimeDir(),
	}
	r.StorageFilesystem = fsTypeOf(root)
	r.Layers = countEntries(filepath.Join(root, "layers"))
	r.Images = countImages(root)
	if vols, err := listVolumes(root); err == nil {
		r.Volumes = len(vols)
	}
	mounts := liveMounts()
	r.Mounts = len(mounts)
	for _, m := range mounts {
		if m.FUSEProtocol != "" {
			r.FUSEProtocol = m.FUSEProtocol
		}
		if m.Upper != "" {
			r.UpperFilesystems[m.Upper] = fsTypeOf(m.Upper)
		}
	}
	r.PassthroughCapable = passthroughCapable(r.Kernel)
	r.IOURingAvailable = ufs.RingAvailable()
	r.ReflinksAvailable = reflinksWork(root)
	_, err := findFusermount()
	r.FusermountAvailable = err == nil
	if asJSON {
		data, err := json.MarshalIndent(r, "", "    ")
		if err != nil {
			return err
		}
		fmt.Println(string(data))
		return nil
	}
	fmt.Printf("Version:              %s (%s)\n", r.Version, r.GoVersion)
	fmt.Printf("Kernel:               %s\n", r.Kernel)
	fmt.Printf("FUSE protocol:        %s\n", r.FUSEProtocol)
	fmt.Printf("Storage root:         %s (%s)\n", r.StorageRoot, r.StorageFilesystem)
	fmt.Printf("Images:               %d\n", r.Images)
	fmt.Printf("Layers:               %d\n", r.Layers)
	fmt.Printf("Volumes:              %d\n", r.Volumes)
	fmt.Printf("Mounts:               %d\n", r.Mounts)
	for u, t := range r.UpperFilesystems {
		fmt.Printf("  upper %s: %s\n", u, t)
	}
	fmt.Printf("Passthrough capable:  %v\n", r.PassthroughCapable)
	if r.IOURingAvailable {
		fmt.Printf("FUSE over io_uring:   available\n")
	} else {
		fmt.Printf("FUSE over io_uring:   not available (Linux 6.14+; as root: echo Y > /sys/module/fuse/parameters/enable_uring)\n")
	}
	fmt.Printf("Reflinks available:   %v\n", r.ReflinksAvailable)
	fmt.Printf("fusermount3:          %v\n", r.FusermountAvailable)
	fmt.Printf("Runtime dir:          %s\n", r.RuntimeDir)
	return nil
}

func countEntries(dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	return len(ents)
}

// countImages counts the stored images, without creating a store.
func countImages(root string) int {
	if _, err := os.Stat(filepath.Join(root, "store.db")); err != nil {
		return 0
	}
	s, err := imgpull.Open(root)
	if err != nil {
		return 0
	}
	imgs, err := s.Images()
	if err != nil {
		return 0
	}
	return len(imgs)
}

var fsNames = map[int64]string{
	0xEF53: "ext4", 0x58465342: "xfs", 0x9123683E: "btrfs", 0x01021994: "tmpfs",
	0x794c7630: "overlay", 0x65735546: "fuse", 0x2FC12FC1: "zfs", 0x6969: "nfs",
	0xF2F52010: "f2fs",
}

func fsTypeOf(p string) string {
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err == nil {
			if n, ok := fsNames[int64(st.Type)]; ok {
				return n
			}
			return fmt.Sprintf("0x%x", st.Type)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return "unknown"
		}
		p = parent // the root may not exist yet
	}
}

// passthroughCapable: FUSE passthrough needs Linux 6.9 and CAP_SYS_ADMIN.
func passthroughCapable(kernel string) bool {
	var major, minor int
	fmt.Sscanf(kernel, "%d.%d", &major, &minor)
	return os.Geteuid() == 0 && (major > 6 || major == 6 && minor >= 9)
}

// reflinksWork tries a reflink between two scratch files near dir.
func reflinksWork(dir string) bool {
	for {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return false
		}
		dir = parent
	}
	a, err := os.CreateTemp(dir, ".unionfs-reflink-")
	if err != nil {
		return false
	}
	defer os.Remove(a.Name())
	defer a.Close()
	a.Write([]byte("x"))
	b, err := os.CreateTemp(dir, ".unionfs-reflink-")
	if err != nil {
		return false
	}
	defer os.Remove(b.Name())
	defer b.Close()
	return unix.IoctlFileClone(int(b.Fd()), int(a.Fd())) == nil
}
