package main

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	ufs "github.com/unionfs/unionfs/fs"
)

func TestParseMountOptions(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want mountOpts // warnings are checked through warn
		// warn lists the unknown entries: each must be named by exactly
		// one warning, and there must be no other warning.
		warn []string
	}{
		{
			name: "fstab and peer words are accepted silently",
			in: []string{"rw,auto,noauto,user,users,nouser,owner,group,nofail,_netdev,defaults," +
				"atime,noatime,relatime,norelatime,strictatime,nodiratime,diratime,lazytime,async,sync,dirsync,silent,loud," +
				"comment=systemd.automount,x-systemd.automount,x-mount.mkdir=0755," +
				"redirect_dir=on,index=off,xino=auto,metacopy=on,userxattr,nfs_export=off,volatile,uuid=null," +
				"fsync=0,noacl,static_nlink,threaded=1,timeout=5,fast_ino=1,writeback=1,squash_to_root,squash_to_uid=1,squash_to_gid=1," +
				"xattr_permissions=2,fscontext=x,defcontext=x,rootcontext=x,plugins=a," +
				"fsname=myunion,subtype=unionfs,max_read=131072,blksize=4096"},
		},
		{name: "empty string", in: []string{""}},
		{name: "no strings", in: nil},
		{name: "only commas", in: []string{",,,"}},
		{name: "empty entry inside", in: []string{"ro,,allow_other"}, want: mountOpts{readOnly: true, allowOther: true}},
		{name: "leading and trailing commas", in: []string{",ro,"}, want: mountOpts{readOnly: true}},
		{name: "empty quoted entry", in: []string{`ro,"",debug`}, want: mountOpts{readOnly: true, debug: true}},
		{name: "unknown option", in: []string{"ro,frobnicate"}, want: mountOpts{readOnly: true}, warn: []string{"frobnicate"}},
		{name: "unknown option with a value", in: []string{"bogus=1,debug"}, want: mountOpts{debug: true}, warn: []string{"bogus=1"}},
		{name: "known flag given a value is unknown", in: []string{"ro=1"}, warn: []string{"ro=1"}},
		{name: "kernel flag given a value is unknown", in: []string{"nosuid=yes"}, warn: []string{"nosuid=yes"}},
		{name: "two unknowns, two warnings", in: []string{"foo", "bar=2"}, warn: []string{"foo", "bar=2"}},
		{name: "lowerdir keeps its order", in: []string{"lowerdir=/top:/mid:/bottom"},
			want: mountOpts{lowers: []string{"/top", "/mid", "/bottom"}}},
		{name: "lowerdir entries append", in: []string{"lowerdir=/a:/b", "lowerdir=/c"},
			want: mountOpts{lowers: []string{"/a", "/b", "/c"}}},
		{name: "escaped colon in lowerdir", in: []string{`lowerdir=/a\:b:/c`},
			want: mountOpts{lowers: []string{"/a:b", "/c"}}},
		{name: "escaped comma in lowerdir", in: []string{`lowerdir=/with\,comma:/d,ro`},
			want: mountOpts{lowers: []string{"/with,comma", "/d"}, readOnly: true}},
		{name: "escaped backslash in lowerdir", in: []string{`lowerdir=/back\\slash:/e`},
			want: mountOpts{lowers: []string{`/back\slash`, "/e"}}},
		{name: "quoted lowerdir with a comma", in: []string{`lowerdir="/a,b":/c`},
			want: mountOpts{lowers: []string{"/a,b", "/c"}}},
		{name: "quoted context with commas", in: []string{`context="system_u:object_r:container_file_t:s0:c1,c2",ro`},
			want: mountOpts{readOnly: true}},
		{name: "quoted upperdir", in: []string{`upperdir="/up,per",workdir=/w`},
			want: mountOpts{upper: "/up,per", workdir: "/w"}},
		{name: "escapes in upperdir are removed", in: []string{`upperdir=/u\:p\,q`},
			want: mountOpts{upper: "/u:p,q"}},
		{name: "escaped quote", in: []string{`upperdir=/a\"b`}, want: mountOpts{upper: `/a"b`}},
		{name: "all the dirs", in: []string{"lowerdir=/l,upperdir=/u,workdir=/w"},
			want: mountOpts{lowers: []string{"/l"}, upper: "/u", workdir: "/w"}},
		{name: "volume keeps its escapes", in: []string{`volume=/src\:x:/dst:ro,volume=/h:/c`},
			want: mountOpts{volumes: []string{`/src\:x:/dst:ro`, "/h:/c"}}},
		{name: "boolean options", in: []string{"ro,allow_other,default_permissions,debug,nopassthrough,noio_uring"},
			want: mountOpts{readOnly: true, allowOther: true, defaultPermissions: true, debug: true, noPassthrough: true, noRing: true}},
		{name: "kernel flags in order", in: []string{"nosuid,nodev,noexec", "suid,dev,exec"},
			want: mountOpts{kernelFlags: []string{"nosuid", "nodev", "noexec", "suid", "dev", "exec"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMountOptions(tt.in)
			if err != nil {
				t.Fatalf("parseMountOptions(%q): %v", tt.in, err)
			}
			warnings := got.warnings
			got.warnings = nil
			if !reflect.DeepEqual(normalize(*got), normalize(tt.want)) {
				t.Errorf("parseMountOptions(%q) =\n %+v\nwant\n %+v", tt.in, *got, tt.want)
			}
			if len(warnings) != len(tt.warn) {
				t.Errorf("warnings %q, want %d (for %q)", warnings, len(tt.warn), tt.warn)
			}
			for _, w := range tt.warn {
				n := 0
				for _, got := range warnings {
					if strings.Contains(got, `"`+w+`"`) {
						n++
					}
				}
				if n != 1 {
					t.Errorf("%d warnings name %q, want 1: %q", n, w, warnings)
				}
			}
		})
	}
}

// normalize makes empty and nil slices compare equal.
func normalize(o mountOpts) mountOpts {
	for _, s := range []*[]string{&o.lowers, &o.kernelFlags, &o.volumes, &o.warnings} {
		if len(*s) == 0 {
			*s = nil
		}
	}
	return o
}

func TestParseMountOptionsErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // in the error
	}{
		{"unbalanced quote", `context="a,b`, "unbalanced"},
		{"unbalanced quote after a good entry", `ro,upperdir="/u`, "unbalanced"},
		{"lone trailing backslash", `ro,\`, "backslash"},
		{"lone trailing backslash in lowerdir", `lowerdir=/a\`, "backslash"},
		{"empty lowerdir component", "lowerdir=a::b", "empty component"},
		{"leading empty lowerdir component", "lowerdir=:a", "empty component"},
		{"trailing empty lowerdir component", "lowerdir=a:", "empty component"},
		{"lowerdir of an empty quoted string", `lowerdir=""`, "lowerdir"},
		{"empty lowerdir", "lowerdir=", "lowerdir"},
		{"empty lowerdir among others", "ro,lowerdir=,debug", "lowerdir"},
		{"empty upperdir", "upperdir=", "upperdir"},
		{"empty workdir", "workdir=", "workdir"},
		{"empty volume", "volume=", "volume"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMountOptions([]string{tt.in})
			if err == nil {
				t.Fatalf("parseMountOptions(%q) = %+v, want an error", tt.in, *got)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("parseMountOptions(%q): %v, want an error mentioning %q", tt.in, err, tt.want)
			}
		})
	}
}

func TestSplitLowerdir(t *testing.T) {
	tests := []struct {
		in   string
		want []string // nil: an error
	}{
		{"/a", []string{"/a"}},
		{"/a:/b:/c", []string{"/a", "/b", "/c"}},
		{`/a\:b`, []string{"/a:b"}},
		{`\:`, []string{":"}},
		{`/a\\:/b`, []string{`/a\`, "/b"}},
		{"relative:dirs", []string{"relative", "dirs"}},
		{"", nil},
		{":", nil},
		{"a::b", nil},
		{"a:", nil},
		{":a", nil},
	}
	for _, tt := range tests {
		got, err := splitLowerdir(tt.in)
		if tt.want == nil {
			if err == nil {
				t.Errorf("splitLowerdir(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("splitLowerdir(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestMountConfig(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		helper bool
		want   ufs.Config // only the fields set here are compared: see check
		vols   []ufs.Volume
		warn   int
	}{
		{
			name: "-l repeated, then -o lowerdir",
			args: []string{"-l", "/a", "-o", "lowerdir=/d:/e", "--lower", "/b:/c", "/mnt"},
			want: ufs.Config{Mountpoint: "/mnt", Lowers: []string{"/a", "/b", "/c", "/d", "/e"}},
		},
		{
			name: "escaped colon in -l",
			args: []string{"-l", `/a\:b:/c`, "/mnt"},
			want: ufs.Config{Mountpoint: "/mnt", Lowers: []string{"/a:b", "/c"}},
		},
		{
			name: "--upper and the same upperdir=",
			args: []string{"-l", "/l", "--upper", "/u", "-o", "upperdir=/u", "/mnt"},
			want: ufs.Config{Mountpoint: "/mnt", Lowers: []string{"/l"}, Upper: "/u"},
		},
		{
			name: "upperdir= and workdir= alone",
			args: []string{"-o", "lowerdir=/l,upperdir=/u,workdir=/w", "/mnt"},
			want: ufs.Config{Mountpoint: "/mnt", Lowers: []string{"/l"}, Upper: "/u", Workdir: "/w"},
		},
		{
			name: "-u and -w",
			args: []string{"-l", "/l", "-u", "/u", "-w", "/w", "/mnt"},
			want: ufs.Config{Mountpoint: "/mnt", Lowers: []string{"/l"}, Upper: "/u", Workdir: "/w"},
		},
		{
			name: "source and mountpoint",
			args: []string{"unionfs", "/mnt", "-o", "lowerdir=/l"},
			want: ufs.Config{FsName: "unionfs", Mountpoint: "/mnt", Lowers: []string{"/l"}},
		},
		{
			name: "boolean and kernel options",
			args: []string{"-o", "lowerdir=/l,ro,allow_other,nopassthrough,noio_uring,nosuid,nodev", "-o", "exec", "/mnt"},
			want: ufs.Config{Mountpoint: "/mnt", Lowers: []string{"/l"}, ReadOnly: true, AllowOther: true,
				NoPassthrough: true, NoRing: true, KernelFlags: []string{"nosuid", "nodev", "exec"}},
		},
		{
			name: "-o debug",
			args: []string{"-o", "lowerdir=/l,debug", "/mnt"},
			want: ufs.Config{Mountpoint: "/mnt", Lowers: []string{"/l"}, Debug: true},
		},
		{
			name: "-d",
			args: []string{"-d", "-l", "/l", "/mnt"},
			want: ufs.Config{Mountpoint: "/mnt", Lowers: []string{"/l"}, Debug: true},
		},
		{
			name: "unknown option is a warning",
			args: []string{"-o", "lowerdir=/l,frobnicate", "/mnt"},
			want: ufs.Config{Mountpoint: "/mnt", Lowers: []string{"/l"}},
			warn: 1,
		},
		{
			name: "-v is a volume",
			args: []string{"-l", "/l", "-v", "/host:/ctr", "/mnt"},
			want: ufs.Config{Mountpoint: "/mnt", Lowers: []string{"/l"}},
			vols: []ufs.Volume{{Source: "/host", Dest: "/ctr"}},
		},
		{
			name: "volume= keeps its escapes for the volume parser",
			args: []string{"-o", `lowerdir=/l,volume=/ho\:st:/ctr:ro`, "/mnt"},
			want: ufs.Config{Mountpoint: "/mnt", Lowers: []string{"/l"}},
			vols: []ufs.Volume{{Source: "/ho:st", Dest: "/ctr", ReadOnly: true}},
		},
		{
			name:   "helper: -v is verbose, -t and -N are accepted",
			helper: true,
			args:   []string{"unionfs", "/mnt", "-v", "-t", "fuse.unionfs", "-N", "/proc/1/ns/mnt", "-n", "-s", "-o", "lowerdir=/l"},
			want:   ufs.Config{FsName: "unionfs", Mountpoint: "/mnt", Lowers: []string{"/l"}},
		},
		{
			name:   "helper: --volume still works",
			helper: true,
			args:   []string{"src", "/mnt", "--volume", "/host:/ctr", "-o", "lowerdir=/l"},
			want:   ufs.Config{FsName: "src", Mountpoint: "/mnt", Lowers: []string{"/l"}},
			vols:   []ufs.Volume{{Source: "/host", Dest: "/ctr"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, pos, err := parseMountFlags(tt.args, tt.helper)
			if err != nil {
				t.Fatalf("parseMountFlags(%q, %v): %v", tt.args, tt.helper, err)
			}
			cfg, _, warnings, err := mountConfig(f, pos)
			if err != nil {
				t.Fatalf("mountConfig: %v", err)
			}
			if len(warnings) != tt.warn {
				t.Errorf("warnings %q, want %d", warnings, tt.warn)
			}
			if !slices.Equal(cfg.Lowers, tt.want.Lowers) {
				t.Errorf("Lowers = %q, want %q", cfg.Lowers, tt.want.Lowers)
			}
			if !slices.Equal(cfg.KernelFlags, tt.want.KernelFlags) {
				t.Errorf("KernelFlags = %q, want %q", cfg.KernelFlags, tt.want.KernelFlags)
			}
			if !reflect.DeepEqual(cfg.Volumes, tt.vols) {
				t.Errorf("Volumes = %+v, want %+v", cfg.Volumes, tt.vols)
			}
			type scalars struct {
				Mountpoint, Upper, Workdir, FsName                 string
				ReadOnly, AllowOther, Debug, NoPassthrough, NoRing bool
			}
			s := func(c ufs.Config) scalars {
				return scalars{c.Mountpoint, c.Upper, c.Workdir, c.FsName, c.ReadOnly, c.AllowOther, c.Debug, c.NoPassthrough, c.NoRing}
			}
			if got, want := s(cfg), s(tt.want); got != want {
				t.Errorf("config = %+v, want %+v", got, want)
			}
		})
	}
}

func TestMountConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		helper bool
		// flagErr: parseMountFlags fails; else mountConfig does.
		flagErr bool
		want    string
	}{
		{name: "--upper and a different upperdir=", args: []string{"-l", "/l", "--upper", "/u", "-o", "upperdir=/v", "/mnt"}, want: "upper given twice"},
		{name: "--workdir and a different workdir=", args: []string{"-l", "/l", "-w", "/w", "-o", "workdir=/x", "/mnt"}, want: "workdir given twice"},
		{name: "bad -l", args: []string{"-l", "/a::/b", "/mnt"}, want: "empty component"},
		{name: "empty -l", args: []string{"-l", "", "/mnt"}, want: "lowerdir"},
		{name: "bad -o", args: []string{"-o", "lowerdir=", "/mnt"}, want: "lowerdir"},
		{name: "no mountpoint", args: []string{"-l", "/l"}, want: "no mountpoint"},
		{name: "too many arguments", args: []string{"-l", "/l", "a", "b", "c"}, want: "too many arguments"},
		{name: "-t is not a mount flag", args: []string{"-t", "fuse.unionfs", "-l", "/l", "/mnt"}, flagErr: true, want: "-t"},
		{name: "-N is not a mount flag", args: []string{"-N", "ns", "-l", "/l", "/mnt"}, flagErr: true, want: "-N"},
		{name: "helper: -v takes no value", helper: true, args: []string{"src", "/mnt", "-v", "/host:/ctr", "-o", "lowerdir=/l"}, want: "too many arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, pos, err := parseMountFlags(tt.args, tt.helper)
			if tt.flagErr {
				if err == nil {
					t.Fatalf("parseMountFlags(%q, %v) succeeded, want an error", tt.args, tt.helper)
				}
			} else {
				if err != nil {
					t.Fatalf("parseMountFlags(%q, %v): %v", tt.args, tt.helper, err)
				}
				_, _, _, err = mountConfig(f, pos)
				if err == nil {
					t.Fatalf("mountConfig(%q) succeeded, want an error", tt.args)
				}
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

func FuzzParseMountOptions(f *testing.F) {
	for _, s := range []string{
		"", ",", "ro", "lowerdir=/a:/b,upperdir=/u,workdir=/w", `lowerdir=/a\:b:/c`,
		`context="a,b",ro`, `lowerdir="/a,b":/c`, `lowerdir=a::b`, `volume=/s\:x:/d:ro`,
		`ro,\`, `"`, `lowerdir=\\`, `lower\dir=a\:b`, "nosuid,nodev,noexec,frob=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := parseMountOptions([]string{s})
		if err != nil {
			return
		}
		for i, l := range o.lowers {
			if l == "" {
				t.Fatalf("parseMountOptions(%q) accepted an empty lowerdir component (#%d of %q)", s, i, o.lowers)
			}
		}
		for _, v := range o.volumes {
			if v == "" {
				t.Fatalf("parseMountOptions(%q) accepted an empty volume", s)
			}
		}
		if o.upper == "" && strings.Contains(s, "upperdir=") && !strings.Contains(s, `\`) && !strings.Contains(s, `"`) {
			// A plain upperdir= entry either sets the upper or fails.
			for _, e := range strings.Split(s, ",") {
				if strings.HasPrefix(e, "upperdir=") {
					t.Fatalf("parseMountOptions(%q) accepted an upperdir= entry and set no upper", s)
				}
			}
		}
		// The warnings name entries that the input held.
		if len(o.warnings) > len(strings.Split(s, ",")) {
			t.Fatalf("parseMountOptions(%q): %d warnings for at most %d entries", s, len(o.warnings), len(strings.Split(s, ",")))
		}
	})
}
