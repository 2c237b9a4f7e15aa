package main

import (
	"errors"
	"fmt"
	"strings"
)

// mountOpts is the typed form of a mount's -o option string. It is parsed
// once, here at the edge; nothing past this file sees option strings.
type mountOpts struct {
	lowers             []string
	upper              string
	workdir            string
	readOnly           bool
	allowOther         bool
	defaultPermissions bool
	debug              bool
	noPassthrough      bool
	noRing             bool
	kernelFlags        []string // nosuid, nodev, noexec and their opposites, for mount(2)
	volumes            []string // SRC:DST[:ro] specs, escapes kept
	warnings           []string // unknown options: reported once and ignored
}

// ignoredOptions are accepted and have nothing to do: fstab words and
// options of peers (fuse-overlayfs, overlayfs) that a caller such as podman
// may pass and that unionfs's behaviour already covers.
var ignoredOptions = map[string]bool{
	// fstab and mount(8)
	"rw": true, "auto": true, "noauto": true, "user": true, "users": true, "nouser": true,
	"owner": true, "group": true, "nofail": true, "_netdev": true, "defaults": true,
	"atime": true, "noatime": true, "relatime": true, "norelatime": true, "strictatime": true,
	"nodiratime": true, "diratime": true, "lazytime": true, "async": true, "sync": true,
	"dirsync": true, "silent": true, "loud": true, "comment": true,
	// overlayfs, always on or not applicable here
	"redirect_dir": true, "index": true, "xino": true, "metacopy": true, "userxattr": true,
	"nfs_export": true, "volatile": true, "uuid": true,
	// fuse-overlayfs
	"fsync": true, "noacl": true, "static_nlink": true, "threaded": true, "timeout": true,
	"max_idle_threads": true, "fast_ino": true, "writeback": true, "squash_to_root": true,
	"squash_to_uid": true, "squash_to_gid": true, "xattr_permissions": true, "context": true,
	"fscontext": true, "defcontext": true, "rootcontext": true, "plugins": true,
	// FUSE
	"fsname": true, "subtype": true, "max_read": true, "blksize": true,
}

var kernelFlagOptions = map[string]bool{
	"nosuid": true, "suid": true, "nodev": true, "dev": true, "noexec": true, "exec": true,
}

// parseMountOptions parses "a=b,c" mount option strings. Values may be
// double-quoted (SELinux contexts contain commas) and a backslash escapes
// the next character; an empty entry is ignored.
func parseMountOptions(strs []string) (*mountOpts, error) {
	o := &mountOpts{}
	for _, s := range strs {
		entries, err := splitOptions(s)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if err := o.set(e); err != nil {
				return nil, err
			}
		}
	}
	return o, nil
}

func (o *mountOpts) set(entry string) error {
	key, val, hasVal := strings.Cut(entry, "=")
	switch {
	case key == "lowerdir":
		dirs, err := splitLowerdir(val)
		if err != nil {
			return err
		}
		o.lowers = append(o.lowers, dirs...)
	case key == "upperdir":
		if val == "" {
			return errors.New("upperdir= needs a directory")
		}
		o.upper = val
	case key == "workdir":
		if val == "" {
			return errors.New("workdir= needs a directory")
		}
		o.workdir = val
	case key == "volume":
		if val == "" {
			return errors.New("volume= needs SRC:DST")
		}
		o.volumes = append(o.volumes, val)
	case key == "ro" && !hasVal:
		o.readOnly = true
	case key == "allow_other" && !hasVal:
		o.allowOther = true
	case key == "default_permissions" && !hasVal:
		o.defaultPermissions = true
	case key == "debug" && !hasVal:
		o.debug = true
	case key == "nopassthrough" && !hasVal:
		o.noPassthrough = true
	case key == "noio_uring" && !hasVal:
		o.noRing = true
	case kernelFlagOptions[key] && !hasVal:
		o.kernelFlags = append(o.kernelFlags, key)
	case ignoredOptions[key] || strings.HasPrefix(key, "x-"):
	default:
		o.warnings = append(o.warnings, fmt.Sprintf("ignoring unknown mount option %q", entry))
	}
	return nil
}

// splitOptions splits at commas outside double quotes, removing the quotes
// and the escaping backslashes.
func splitOptions(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inQuote := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			if i+1 == len(s) {
				return nil, fmt.Errorf("mount options %q end in a lone backslash", s)
			}
			i++
			cur.WriteByte('\\')
			cur.WriteByte(s[i])
		case c == '"':
			inQuote = !inQuote
		case c == ',' && !inQuote:
			if cur.Len() > 0 {
				out = append(out, cur.String())
			}
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if inQuote {
		return nil, fmt.Errorf("mount options %q have an unbalanced double quote", s)
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	for i, e := range out {
		key, val, ok := strings.Cut(e, "=")
		if !ok {
			out[i] = unescape(e, "")
			continue
		}
		// lowerdir and volume keep their escapes: "\:" separates
		// differently there.
		key = unescape(key, "")
		if key != "lowerdir" && key != "volume" {
			val = unescape(val, "")
		}
		out[i] = key + "=" + val
	}
	return out, nil
}

// unescape removes backslashes, except before a character in keep.
func unescape(s, keep string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			if strings.IndexByte(keep, s[i+1]) >= 0 {
				b.WriteByte('\\')
			}
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// splitLowerdir splits an overlayfs-style lowerdir list at unescaped colons;
// "\:" is a colon inside a name.
func splitLowerdir(v string) ([]string, error) {
	if v == "" {
		return nil, errors.New("lowerdir= needs at least one directory")
	}
	var dirs []string
	var cur strings.Builder
	flush := func() error {
		if cur.Len() == 0 {
			return fmt.Errorf("lowerdir=%s has an empty component", v)
		}
		dirs = append(dirs, cur.String())
		cur.Reset()
		return nil
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && i+1 < len(v):
			i++
			cur.WriteByte(v[i])
		case c == ':':
			if err := flush(); err != nil {
				return nil, err
			}
		default:
			cur.WriteByte(c)
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return dirs, nil
}
