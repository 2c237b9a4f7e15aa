package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	ufs "github.com/unionfs/unionfs/fs"
)

// Named volumes live in ROOT/volumes/NAME: the data in _data, what docker
// volume inspect shows in volume.json.

var volumeName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// volumeInfo is `unionfs volume inspect`'s output, in docker's shape.
type volumeInfo struct {
	Name       string            `json:"Name"`
	Driver     string            `json:"Driver"`
	Mountpoint string            `json:"Mountpoint"`
	CreatedAt  time.Time         `json:"CreatedAt"`
	Labels     map[string]string `json:"Labels"`
	Scope      string            `json:"Scope"`
}

// storeRoot is where images and named volumes live.
func storeRoot(flag string) string {
	if flag != "" {
		return flag
	}
	if r := os.Getenv("UNIONFS_ROOT"); r != "" {
		return r
	}
	if os.Geteuid() == 0 {
		return "/var/lib/unionfs"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "unionfs")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "share", "unionfs")
}

func volumeDir(root, name string) string { return filepath.Join(root, "volumes", name) }

// createVolume makes a named volume if it does not exist and returns it.
func createVolume(root, name string, labels map[string]string) (*volumeInfo, bool, error) {
	if !volumeName.MatchString(name) {
		return nil, false, fmt.Errorf("invalid volume name %q: use letters, digits, '_', '.', '-'", name)
	}
	if v, err := readVolume(root, name); err == nil {
		return v, false, nil
	}
	dir := volumeDir(root, name)
	if err := os.MkdirAll(filepath.Join(dir, "_data"), 0o755); err != nil {
		return nil, false, fmt.Errorf("create volume %s: %w", name, err)
	}
	if labels == nil {
		labels = map[string]string{}
	}
	v := &volumeInfo{Name: name, Driver: "local", Mountpoint: filepath.Join(dir, "_data"),
		CreatedAt: time.Now().UTC().Truncate(time.Second), Labels: labels, Scope: "local"}
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, false, err
	}
	tmp := filepath.Join(dir, "volume.json.tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return nil, false, fmt.Errorf("create volume %s: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "volume.json")); err != nil {
		return nil, false, fmt.Errorf("create volume %s: %w", name, err)
	}
	return v, true, nil
}

func readVolume(root, name string) (*volumeInfo, error) {
	data, err := os.ReadFile(filepath.Join(volumeDir(root, name), "volume.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no such volume: %s", name)
		}
		return nil, err
	}
	var v volumeInfo
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("volume %s: %w", name, err)
	}
	return &v, nil
}

func listVolumes(root string) ([]volumeInfo, error) {
	ents, err := os.ReadDir(filepath.Join(root, "volumes"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var out []volumeInfo
	for _, e := range ents {
		if v, err := readVolume(root, e.Name()); err == nil {
			out = append(out, *v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// volumesInUse maps the data directories of the volumes that live mounts
// use to a mountpoint using each.
func volumesInUse() map[string]string {
	used := make(map[string]string)
	for _, rec := range liveMounts() {
		for _, v := range rec.volumes() {
			if v.Type == "volume" {
				used[v.Source] = rec.Mountpoint
			}
		}
	}
	return used
}

// makeVolumes creates the named volumes a mount asks for that do not
// exist yet, and returns their names.
func makeVolumes(vols []mountVolume, root string) ([]string, error) {
	var created []string
	for _, v := range vols {
		if v.Type != "volume" {
			continue
		}
		_, isNew, err := createVolume(root, v.Name, nil)
		if err != nil {
			removeVolumes(created, root)
			return nil, err
		}
		if isNew {
			created = append(created, v.Name)
		}
	}
	return created, nil
}

func removeVolumes(names []string, root string) {
	for _, n := range names {
		os.RemoveAll(volumeDir(root, n))
	}
}

// parseVolumeSpec turns SRC:DST[:ro|rw], NAME:DST[:mode] or DST[:mode]
// into a volume, creating named and anonymous volumes in root as needed.
// "\:" is a colon inside a path.
func parseVolumeSpec(spec, root string) (ufs.Volume, mountVolume, error) {
	parts, err := splitLowerdir(spec)
	if err != nil {
		return ufs.Volume{}, mountVolume{}, fmt.Errorf("volume %q: %w", spec, err)
	}
	mode := ""
	if n := len(parts); n >= 2 && (parts[n-1] == "ro" || parts[n-1] == "rw") {
		mode, parts = parts[n-1], parts[:n-1]
	}
	var src, dst string
	switch len(parts) {
	case 1:
		dst = parts[0]
	case 2:
		src, dst = parts[0], parts[1]
	default:
		return ufs.Volume{}, mountVolume{}, fmt.Errorf("volume %q: want SRC:DST[:ro], NAME:DST[:ro] or DST", spec)
	}
	mv := mountVolume{Destination: dst, RW: mode != "ro", Mode: mode}
	switch {
	case strings.HasPrefix(src, "/") || strings.HasPrefix(src, "."):
		abs, err := filepath.Abs(src)
		if err != nil {
			return ufs.Volume{}, mv, err
		}
		mv.Type, mv.Source = "bind", abs
	default:
		name := src
		if name == "" {
			var b [16]byte
			rand.Read(b[:])
			name = hex.EncodeToString(b[:])
		}
		if !volumeName.MatchString(name) {
			return ufs.Volume{}, mv, fmt.Errorf("invalid volume name %q: use letters, digits, '_', '.', '-'", name)
		}
		mv.Type, mv.Name, mv.Driver = "volume", name, "local"
		mv.Source = filepath.Join(volumeDir(root, name), "_data")
	}
	return ufs.Volume{Source: mv.Source, Dest: dst, ReadOnly: !mv.RW}, mv, nil
}

func volumeCmd(args []string) error {
	if len(args) == 0 {
		return errors.New("volume needs a command: create, ls, inspect, rm, prune")
	}
	set := pflag.NewFlagSet("volume", pflag.ContinueOnError)
	root := set.String("root", "", "store `DIR` (default /var/lib/unionfs as root, ~/.local/share/unionfs otherwise; or $UNIONFS_ROOT)")
	labels := set.StringArray("label", nil, "`KEY=VALUE` label for create")
	quiet := set.BoolP("quiet", "q", false, "ls: print names only")
	force := set.BoolP("force", "f", false, "prune: do not ask (unionfs never asks)")
	_ = force
	if err := set.Parse(args[1:]); err != nil {
		return err
	}
	r := storeRoot(*root)
	switch args[0] {
	case "create":
		name := ""
		if set.NArg() > 0 {
			name = set.Arg(0)
		} else {
			var b [16]byte
			rand.Read(b[:])
			name = hex.EncodeToString(b[:])
		}
		l := map[string]string{}
		for _, kv := range *labels {
			k, v, _ := strings.Cut(kv, "=")
			l[k] = v
		}
		v, _, err := createVolume(r, name, l)
		if err != nil {
			return err
		}
		fmt.Println(v.Name)
	case "ls", "list":
		vols, err := listVolumes(r)
		if err != nil {
			return err
		}
		if *quiet {
			for _, v := range vols {
				fmt.Println(v.Name)
			}
			return nil
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
		fmt.Fprintln(w, "DRIVER\tVOLUME NAME")
		for _, v := range vols {
			fmt.Fprintf(w, "%s\t%s\n", v.Driver, v.Name)
		}
		return w.Flush()
	case "inspect":
		var out []volumeInfo
		for _, name := range set.Args() {
			v, err := readVolume(r, name)
			if err != nil {
				return err
			}
			out = append(out, *v)
		}
		data, _ := json.MarshalIndent(out, "", "    ")
		fmt.Println(string(data))
	case "rm", "remove":
		used := volumesInUse()
		for _, name := range set.Args() {
			if _, err := readVolume(r, name); err != nil {
				return err
			}
			if mnt, ok := used[filepath.Join(volumeDir(r, name), "_data")]; ok {
				return fmt.Errorf("volume %s is in use by the mount at %s", name, mnt)
			}
			if err := os.RemoveAll(volumeDir(r, name)); err != nil {
				return fmt.Errorf("remove volume %s: %w", name, err)
			}
			fmt.Println(name)
		}
	case "prune":
		used := volumesInUse()
		vols, err := listVolumes(r)
		if err != nil {
			return err
		}
		for _, v := range vols {
			if _, ok := used[v.Mountpoint]; ok {
				continue
			}
			if err := os.RemoveAll(volumeDir(r, v.Name)); err != nil {
				return fmt.Errorf("remove volume %s: %w", v.Name, err)
			}
			fmt.Println(v.Name)
		}
	default:
		return fmt.Errorf("unknown volume command %q: use create, ls, inspect, rm, prune", args[0])
	}
	return nil
}
