package test

// End-to-end tests of the image commands (pull, images, rmi, diff) of the
// real binary against the real registry server of registry_test.go.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/unionfs/unionfs/imgpull/imgtest"
	"github.com/unionfs/unionfs/layerdb"
)

// The two layers of the app image: a base, and a layer on top that
// replaces a file, deletes one and makes a directory opaque.
var (
	imgBaseTar = imgtest.Tar(
		imgtest.Dir("etc"), imgtest.File("etc/motd", "base motd\n"), imgtest.File("etc/os-release", "ID=test\n"),
		imgtest.Dir("var"), imgtest.Dir("var/log"), imgtest.File("var/log/old.log", "old\n"),
		imgtest.Dir("opt"), imgtest.Dir("opt/app"), imgtest.File("opt/app/a", "a"), imgtest.File("opt/app/b", "b"),
		imgtest.Entry{Name: "usr/bin/passwd", Body: "#!/bin/true\n", Mode: 0o4755},
	)
	imgAppTar = imgtest.Tar(
		imgtest.File("etc/motd", "app motd\n"),
		imgtest.Whiteout("var/log", "old.log"),
		imgtest.Dir("opt/app"), imgtest.Opaque("opt/app"), imgtest.File("opt/app/c", "c"),
	)
)

func appImage() imgtest.Image {
	return imgtest.Image{Layers: []imgtest.Layer{imgtest.Gzip(imgBaseTar), imgtest.Gzip(imgAppTar)}}
}

// imgRun runs the unionfs binary with --root root and fails the test
// unless it exits with status want.
func imgRun(t *testing.T, root string, want int, args ...string) (stdout, stderr string) {
	t.Helper()
	argv := append(slices.Clone(args), "--root", root)
	stdout, stderr, exit := runUnionfs(t, argv...)
	if exit != want {
		t.Fatalf("unionfs %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(argv, " "), exit, want, stdout, stderr)
	}
	return stdout, stderr
}

type imgRow struct {
	Repository, Tag, ID, Digest, Size, Platform, ImageID string
	SizeBytes                                            int64
	Layers                                               int
}

func imgList(t *testing.T, root string) []imgRow {
	t.Helper()
	out, _ := imgRun(t, root, 0, "images", "--format", "json")
	var rows []imgRow
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var r imgRow
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("images --format json line %q: %v", sc.Text(), err)
		}
		rows = append(rows, r)
	}
	return rows
}

// imgLayerDirs returns the store's layer directories by DiffID hex.
func imgLayerDirs(t *testing.T, root string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, "layers"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func imgLayerDir(root string, l imgtest.Layer) string {
	return filepath.Join(root, "layers", l.DiffID.Hex)
}

func imgState(t *testing.T, dir string) (map[string]layerdb.Record, map[string]layerdb.Meta) {
	t.Helper()
	db, err := layerdb.Open(filepath.Join(dir, ".unionfs", "state.db"), layerdb.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	recs, err := db.Records()
	if err != nil {
		t.Fatal(err)
	}
	metas, err := db.Metas()
	if err != nil {
		t.Fatal(err)
	}
	return recs, metas
}

func imgReadFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestImagePullTwoLayersFromRegistry(t *testing.T) {
	reg := startRegistry(t, false)
	root := t.TempDir()
	img := appImage()
	ref := reg.ref("app:1.0")
	reg.push(t, ref, img)

	out, _ := imgRun(t, root, 0, "pull", ref)
	for _, want := range []string{"1.0: Pulling from app", img.Layers[0].Digest().Hex[:12] + ": Pull complete",
		img.Layers[1].Digest().Hex[:12] + ": Pull complete", "Digest: sha256:", ref} {
		if !strings.Contains(out, want) {
			t.Errorf("pull output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("escape sequences on a non-terminal:\n%q", out)
	}

	// Whiteouts and the opaque directory are records, not files.
	top, base := imgLayerDir(root, img.Layers[1]), imgLayerDir(root, img.Layers[0])
	recs, _ := imgState(t, top)
	want := map[string]layerdb.Record{"var/log/old.log": {Opaque: true}, "opt/app": {Opaque: true}}
	if len(recs) != len(want) || recs["var/log/old.log"] != want["var/log/old.log"] || recs["opt/app"] != want["opt/app"] {
		t.Errorf("top layer records = %v, want %v", recs, want)
	}
	if got := imgReadFile(t, filepath.Join(top, "etc/motd")); got != "app motd\n" {
		t.Errorf("top etc/motd = %q", got)
	}
	for _, p := range []string{"var/log/.wh.old.log", "opt/app/.wh..wh..opq"} {
		if _, err := os.Lstat(filepath.Join(top, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists in the layer directory (%v)", p, err)
		}
	}
	if got := imgReadFile(t, filepath.Join(base, "var/log/old.log")); got != "old\n" {
		t.Errorf("base var/log/old.log = %q", got)
	}

	// images, as a table and as JSON.
	table, _ := imgRun(t, root, 0, "images")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "REPOSITORY") || !strings.Contains(lines[0], "IMAGE ID") {
		t.Fatalf("images:\n%s", table)
	}
	if f := strings.Fields(lines[1]); len(f) < 5 || f[0] != reg.host+"/app" || f[1] != "1.0" || len(f[2]) != 12 {
		t.Errorf("images row: %q", lines[1])
	}
	rows := imgList(t, root)
	if len(rows) != 1 || rows[0].Tag != "1.0" || rows[0].Layers != 2 || rows[0].Platform != "linux/amd64" ||
		rows[0].SizeBytes != int64(len(imgBaseTar)+len(imgAppTar)) || rows[0].Digest != img.ManifestDigest().String() {
		t.Errorf("images --format json = %+v", rows)
	}

	// Pulling again downloads nothing.
	out, _ = imgRun(t, root, 0, "pull", ref)
	if strings.Count(out, "Already exists") != 2 || !strings.Contains(out, "Image is up to date") {
		t.Errorf("second pull:\n%s", out)
	}
}

func TestImagePullMultiPlatformIndexFromRegistry(t *testing.T) {
	reg := startRegistry(t, false)
	amd := imgtest.Image{Layers: []imgtest.Layer{imgtest.Gzip(imgtest.Tar(imgtest.File("arch", "amd64")))}}
	arm := imgtest.Image{Layers: []imgtest.Layer{imgtest.Gzip(imgtest.Tar(imgtest.File("arch", "arm64")))},
		Platform: v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}
	for _, oci := range []bool{true, false} {
		name := "multi-docker:latest"
		if oci {
			name = "multi-oci:latest"
		}
		ref := reg.ref(name)
		idx := reg.pushIndex(t, ref, oci, amd, arm)
		for _, c := range []struct{ flag, platform, arch string }{
			{"", "linux/amd64", "amd64"},
			{"linux/arm64", "linux/arm64/v8", "arm64"},
			{"linux/amd64", "linux/amd64", "amd64"},
		} {
			if c.flag == "" && runtime.GOARCH != "amd64" {
				continue
			}
			root := t.TempDir()
			args := []string{"pull", ref}
			if c.flag != "" {
				args = append(args, "--platform", c.flag)
			}
			imgRun(t, root, 0, args...)
			rows := imgList(t, root)
			if len(rows) != 1 || rows[0].Platform != c.platform || rows[0].Digest != idx {
				t.Errorf("%s --platform %q: images = %+v (index %s)", name, c.flag, rows, idx)
			}
			dirs := imgLayerDirs(t, root)
			if len(dirs) != 1 || imgReadFile(t, filepath.Join(root, "layers", dirs[0], "arch")) != c.arch {
				t.Errorf("%s --platform %q: layers %v", name, c.flag, dirs)
			}
		}
	}
	root := t.TempDir()
	_, stderr := imgRun(t, root, 1, "pull", reg.ref("multi-oci"), "--platform", "linux/riscv64")
	if !strings.Contains(stderr, "riscv64") {
		t.Errorf("no-match error does not name the platform: %s", stderr)
	}
	if len(imgLayerDirs(t, root)) != 0 {
		t.Error("a failed pull stored layers")
	}
}

func TestImagePullZstdGzipAndPlainLayersFromRegistry(t *testing.T) {
	reg := startRegistry(t, false)
	root := t.TempDir()
	img := imgtest.Image{OCI: true, Layers: []imgtest.Layer{
		imgtest.Zstd(imgtest.Tar(imgtest.File("z", "zstd"), imgtest.File("shared", "from zstd"))),
		imgtest.Gzip(imgtest.Tar(imgtest.File("g", "gzip"), imgtest.File("shared", "from gzip"))),
		imgtest.Uncompressed(imgtest.Tar(imgtest.File("p", "plain"))),
	}}
	ref := reg.ref("mixed:v1")
	reg.push(t, ref, img)
	imgRun(t, root, 0, "pull", ref)
	for i, want := range map[int][2]string{0: {"z", "zstd"}, 1: {"g", "gzip"}, 2: {"p", "plain"}} {
		if got := imgReadFile(t, filepath.Join(imgLayerDir(root, img.Layers[i]), want[0])); got != want[1] {
			t.Errorf("layer %d %s = %q", i, want[0], got)
		}
	}
}

func TestImageSharedBaseFromRegistry(t *testing.T) {
	reg := startRegistry(t, false)
	root := t.TempDir()
	base := imgtest.Gzip(imgBaseTar)
	one := imgtest.Image{Layers: []imgtest.Layer{base, imgtest.Gzip(imgtest.Tar(imgtest.File("one", "1")))}}
	two := imgtest.Image{Layers: []imgtest.Layer{base, imgtest.Gzip(imgtest.Tar(imgtest.File("two", "2")))}}
	reg.push(t, reg.ref("one:latest"), one)
	reg.push(t, reg.ref("two:latest"), two)
	imgRun(t, root, 0, "pull", reg.ref("one"))
	var before unix.Stat_t
	if err := unix.Stat(imgLayerDir(root, base), &before); err != nil {
		t.Fatal(err)
	}
	out, _ := imgRun(t, root, 0, "pull", reg.ref("two"))
	if !strings.Contains(out, base.Digest().Hex[:12]+": Already exists") {
		t.Errorf("second pull did not reuse the base:\n%s", out)
	}
	if strings.Count(out, "Pull complete") != 1 {
		t.Errorf("second pull downloaded more than its own layer:\n%s", out)
	}
	var after unix.Stat_t
	if err := unix.Stat(imgLayerDir(root, base), &after); err != nil || after.Ino != before.Ino {
		t.Errorf("base layer directory replaced (%v)", err)
	}
	if dirs := imgLayerDirs(t, root); len(dirs) != 3 {
		t.Errorf("layers: %v, want 3", dirs)
	}
}

func TestImageRegistryBasicAuth(t *testing.T) {
	reg := startRegistry(t, true)
	ref := reg.ref("private/app:1")
	reg.push(t, ref, appImage())

	home := t.TempDir()
	t.Setenv("HOME", home) // no stray ~/.docker/config.json
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	root := t.TempDir()
	_, stderr := imgRun(t, root, 1, "pull", ref)
	if !strings.Contains(strings.ToLower(stderr), "unauthorized") {
		t.Errorf("pull without credentials: %s", stderr)
	}
	if len(imgLayerDirs(t, root)) != 0 {
		t.Error("layers stored without credentials")
	}
	t.Setenv("DOCKER_CONFIG", reg.dockerConfig(t))
	imgRun(t, root, 0, "pull", ref)
	if rows := imgList(t, root); len(rows) != 1 || rows[0].Repository != reg.host+"/private/app" {
		t.Errorf("images = %+v", rows)
	}
}

func TestImageRegistryTamperedBlob(t *testing.T) {
	reg := startRegistry(t, false)
	root := t.TempDir()
	img := appImage()
	ref := reg.ref("tampered:1")
	reg.push(t, ref, img)
	reg.tamperBlob(t, img.Layers[1].Digest().String())
	_, stderr := imgRun(t, root, 1, "pull", ref)
	if !strings.Contains(stderr, "digest mismatch") {
		t.Errorf("tampered pull error: %s", stderr)
	}
	if rows := imgList(t, root); len(rows) != 0 {
		t.Errorf("image recorded: %+v", rows)
	}
	// The untouched base may have been stored; the tampered layer never is.
	if _, err := os.Stat(imgLayerDir(root, img.Layers[1])); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tampered layer directory exists: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "tmp")); len(ents) != 0 {
		t.Errorf("staging left behind: %v", ents)
	}
}

func TestImageRegistryLyingDiffID(t *testing.T) {
	reg := startRegistry(t, false)
	root := t.TempDir()
	img := imgtest.Image{Layers: []imgtest.Layer{imgtest.Gzip(imgtest.Tar(imgtest.File("f", "real")))}}
	img.DiffIDs = []v1.Hash{imgtest.Uncompressed(imgtest.Tar(imgtest.File("f", "claimed"))).DiffID}
	ref := reg.ref("liar:1")
	reg.push(t, ref, img)
	_, stderr := imgRun(t, root, 1, "pull", ref)
	if !strings.Contains(stderr, "digest mismatch") || !strings.Contains(stderr, "DiffID") {
		t.Errorf("error: %s", stderr)
	}
	if dirs := imgLayerDirs(t, root); len(dirs) != 0 {
		t.Errorf("layers stored: %v", dirs)
	}
}

func TestImageRmiFromRegistry(t *testing.T) {
	reg := startRegistry(t, false)
	root := t.TempDir()
	base := imgtest.Gzip(imgBaseTar)
	own1 := imgtest.Gzip(imgtest.Tar(imgtest.File("one", "1")))
	own2 := imgtest.Gzip(imgtest.Tar(imgtest.File("two", "2")))
	reg.push(t, reg.ref("one:latest"), imgtest.Image{Layers: []imgtest.Layer{base, own1}})
	reg.push(t, reg.ref("two:latest"), imgtest.Image{Layers: []imgtest.Layer{base, own2}})
	imgRun(t, root, 0, "pull", reg.ref("one"))
	imgRun(t, root, 0, "pull", reg.ref("two"))

	out, _ := imgRun(t, root, 0, "rmi", reg.ref("one"))
	if !strings.Contains(out, "Untagged: "+reg.ref("one:latest")) || !strings.Contains(out, "Deleted: "+own1.DiffID.String()) ||
		strings.Contains(out, base.DiffID.String()) {
		t.Errorf("rmi one:\n%s", out)
	}
	if dirs := imgLayerDirs(t, root); !slices.Equal(dirs, sortedHex(base, own2)) {
		t.Errorf("layers after rmi one: %v", dirs)
	}
	// By image ID.
	rows := imgList(t, root)
	if len(rows) != 1 {
		t.Fatalf("images: %+v", rows)
	}
	imgRun(t, root, 0, "rmi", rows[0].ID)
	if dirs := imgLayerDirs(t, root); len(dirs) != 0 {
		t.Errorf("layers after rmi two: %v", dirs)
	}
	if rows := imgList(t, root); len(rows) != 0 {
		t.Errorf("images after rmi: %+v", rows)
	}
	_, stderr := imgRun(t, root, 1, "rmi", "nosuch")
	if !strings.Contains(stderr, "no such image") {
		t.Errorf("rmi nosuch: %s", stderr)
	}
}

func sortedHex(layers ...imgtest.Layer) []string {
	var out []string
	for _, l := range layers {
		out = append(out, l.DiffID.Hex)
	}
	slices.Sort(out)
	return out
}

// TestImageDiffCommitRoundTrip builds an upper by hand (files, a deletion
// and an opaque directory in its state database), exports it with
// `unionfs diff`, pushes the tar as a new top layer and pulls that image:
// the layer comes back with the same records.
func TestImageDiffCommitRoundTrip(t *testing.T) {
	reg := startRegistry(t, false)
	root := t.TempDir()
	upper := t.TempDir()
	for p, body := range map[string]string{"etc/motd": "container motd\n", "opt/app/d": "d", "new/file": "n"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(upper, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(upper, p), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	db, err := layerdb.Open(filepath.Join(upper, ".unionfs", "state.db"), layerdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Apply(layerdb.PutChange("etc/os-release", layerdb.Record{Opaque: true}),
		layerdb.PutChange("opt/app", layerdb.Record{Opaque: true}))
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	out, _ := imgRun(t, root, 0, "diff", upper)
	var names []string
	tr := tar.NewReader(strings.NewReader(out))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("diff output is not a tar: %v", err)
		}
		names = append(names, h.Name)
	}
	want := []string{"etc/", "etc/.wh.os-release", "etc/motd", "new/", "new/file", "opt/", "opt/app/", "opt/app/.wh..wh..opq", "opt/app/d"}
	if !slices.Equal(names, want) {
		t.Errorf("diff entries:\n got %q\nwant %q", names, want)
	}

	committed := appImage()
	committed.Layers = append(committed.Layers, imgtest.Gzip([]byte(out)))
	ref := reg.ref("committed:1")
	reg.push(t, ref, committed)
	imgRun(t, root, 0, "pull", ref)
	top := imgLayerDir(root, committed.Layers[2])
	recs, _ := imgState(t, top)
	if len(recs) != 2 || !recs["etc/os-release"].Opaque || !recs["opt/app"].Opaque {
		t.Errorf("records of the committed layer = %v", recs)
	}
	if got := imgReadFile(t, filepath.Join(top, "opt/app/d")); got != "d" {
		t.Errorf("opt/app/d = %q", got)
	}

	// An upper in use by a mount is refused.
	db, err = layerdb.Open(filepath.Join(upper, ".unionfs", "state.db"), layerdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, stderr := imgRun(t, root, 1, "diff", upper)
	if !strings.Contains(stderr, "in use") {
		t.Errorf("diff of a locked upper: %s", stderr)
	}
}

// TestImagePullRootlessRecordsMeta pulls as an unprivileged user: owners,
// the setuid bit and device nodes cannot go on disk and are recorded in
// the layer's meta instead.
func TestImagePullRootlessRecordsMeta(t *testing.T) {
	requireRoot(t) // to switch to another user
	reg := startRegistry(t, false)
	const uid, gid = 65534, 65534
	img := imgtest.Image{Layers: []imgtest.Layer{imgtest.Gzip(imgtest.Tar(
		imgtest.Entry{Name: "usr/bin/passwd", Body: "pw", Mode: 0o4755},
		imgtest.Entry{Name: "dev/null", Type: tar.TypeChar, Mode: 0o666, Major: 1, Minor: 3},
		imgtest.Entry{Name: "home/u/f", Body: "f", Mode: 0o600, UID: 1000, GID: 1000},
	))}}
	ref := reg.ref("rootless:1")
	reg.push(t, ref, img)

	// The user must reach the binary and the store.
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "unionfs")
	data, err := os.ReadFile(requireBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "store")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(root, uid, gid); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "pull", "--root", root, ref)
	cmd.Env = append(os.Environ(), "HOME="+dir, "DOCKER_CONFIG="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("rootless pull: %v\n%s", err, stderr.String())
	}
	layer := imgLayerDir(root, img.Layers[0])
	_, metas := imgState(t, layer)
	for p, want := range map[string]layerdb.Meta{
		"usr/bin/passwd": {Mode: unix.S_IFREG | 0o4755},
		"dev/null":       {Mode: unix.S_IFCHR | 0o666, Rdev: unix.Mkdev(1, 3)},
		"home/u/f":       {Mode: unix.S_IFREG | 0o600, UID: 1000, GID: 1000},
	} {
		got := metas[p]
		if got.Mode != want.Mode || got.UID != want.UID || got.GID != want.GID || got.Rdev != want.Rdev {
			t.Errorf("meta %s = %+v, want %+v", p, got, want)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(layer, "usr/bin/passwd"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != uid || st.Mode&unix.S_ISUID != 0 {
		t.Errorf("passwd on disk: uid %d mode %o; want the pulling user's, without setuid", st.Uid, st.Mode)
	}
	if err := unix.Lstat(filepath.Join(layer, "dev/null"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Errorf("dev/null on disk: mode %o, %v; want a regular placeholder", st.Mode, err)
	}

	// The mount serves the image as it is, not as the disk holds it.
	requireFUSE(t)
	mnt := mountUnion(t, "--root", root, "--image", ref)
	for p, want := range map[string]unix.Stat_t{
		"usr/bin/passwd": {Mode: unix.S_IFREG | 0o4755},
		"dev/null":       {Mode: unix.S_IFCHR | 0o666, Rdev: unix.Mkdev(1, 3)},
		"home/u/f":       {Mode: unix.S_IFREG | 0o600, Uid: 1000, Gid: 1000},
	} {
		if err := unix.Lstat(filepath.Join(mnt, p), &st); err != nil {
			t.Errorf("lstat %s through the mount: %v", p, err)
			continue
		}
		if st.Mode != want.Mode || st.Uid != want.Uid || st.Gid != want.Gid || st.Rdev != want.Rdev {
			t.Errorf("%s through the mount: mode %o uid %d gid %d rdev %x; want mode %o uid %d gid %d rdev %x",
				p, st.Mode, st.Uid, st.Gid, st.Rdev, want.Mode, want.Uid, want.Gid, want.Rdev)
		}
	}
	ents, err := os.ReadDir(filepath.Join(mnt, "dev"))
	if err != nil || len(ents) != 1 || ents[0].Type()&os.ModeCharDevice == 0 {
		t.Errorf("listing dev through the mount: %v, %v; want one character device", ents, err)
	}
}

// TestImageMountFromRegistry mounts a pulled image read-only and checks
// the merged view. It needs `unionfs mount --image`, wired in
// cmd/unionfs/mount.go with imgpull.Store.Lowers.
func TestImageMountFromRegistry(t *testing.T) {
	requireFUSE(t)
	reg := startRegistry(t, false)
	root := t.TempDir()
	ref := reg.ref("app:1.0")
	reg.push(t, ref, appImage())
	imgRun(t, root, 0, "pull", ref)

	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if help, _, _ := runUnionfs(t, "mount", "--help"); !strings.Contains(help, "--image") {
		skipOrFail(t, "unionfs mount has no --image flag yet (cmd/unionfs/mount.go must call imgpull.Store.Lowers)")
	}
	mountUnionAt(t, mnt, "--image", ref, "--root", root)
	if got := imgReadFile(t, filepath.Join(mnt, "etc/motd")); got != "app motd\n" {
		t.Errorf("etc/motd = %q", got)
	}
	if got := imgReadFile(t, filepath.Join(mnt, "etc/os-release")); got != "ID=test\n" {
		t.Errorf("etc/os-release = %q", got)
	}
	if _, err := os.Lstat(filepath.Join(mnt, "var/log/old.log")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("whited-out var/log/old.log: %v", err)
	}
	ents, err := os.ReadDir(filepath.Join(mnt, "opt/app"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "c" {
		t.Errorf("opaque opt/app lists %v, want only c", ents)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(mnt, "usr/bin/passwd"), &st); err != nil || st.Mode&unix.S_ISUID == 0 || st.Uid != 0 {
		t.Errorf("usr/bin/passwd: mode %o uid %d, %v; want setuid root", st.Mode, st.Uid, err)
	}
	// The image is in use: rmi untags it but keeps its layers until unmount.
	imgRun(t, root, 0, "rmi", ref)
	if dirs := imgLayerDirs(t, root); len(dirs) != 2 {
		t.Errorf("layers of a mounted image deleted: %v", dirs)
	}
	umountUnion(t, mnt) // the server releases its lease, which collects the layers
	if dirs := imgLayerDirs(t, root); len(dirs) != 0 {
		t.Errorf("layers kept after unmount: %v", dirs)
	}
}

// TestImageDiffLiveMountpoint diffs a mounted union by its mountpoint: the
// server holds the upper's database, so diff reads a copy of it and takes
// the lower layers from the mount.
func TestImageDiffLiveMountpoint(t *testing.T) {
	requireFUSE(t)
	lower, upper := t.TempDir(), t.TempDir()
	writeTree(t, lower, tree{"a": file("a"), "d/b": file("b"), "keep": file("k")})
	mnt := mountUnion(t, "-l", lower, "-u", upper)
	if err := os.Remove(filepath.Join(mnt, "a")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "new"), []byte("n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(mnt, "d"), filepath.Join(mnt, "d2")); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "layer.tar")
	if _, stderr, exit := runUnionfs(t, "diff", "-o", out, mnt); exit != 0 {
		t.Fatalf("diff of a live mountpoint: exit %d: %s", exit, stderr)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, strings.TrimSuffix(h.Name, "/"))
	}
	want := []string{".wh.a", ".wh.d", "d2", "d2/.wh..wh..opq", "d2/b", "new"}
	if !slices.Equal(names, want) {
		t.Errorf("diff of the mount lists %q, want %q", names, want)
	}
}

// TestImageMountWithLowerAndUpper stacks explicit --lower directories on
// top of an image's layers under a writable upper: the explicit ones win,
// the image's layers stay untouched, and inspect shows the image.
func TestImageMountWithLowerAndUpper(t *testing.T) {
	requireFUSE(t)
	reg := startRegistry(t, false)
	root := t.TempDir()
	ref := reg.ref("app:2.0")
	reg.push(t, ref, appImage())
	imgRun(t, root, 0, "pull", ref)
	before := checksumTree(t, filepath.Join(root, "layers"))

	extra, upper := t.TempDir(), t.TempDir()
	writeTree(t, extra, tree{"etc/motd": file("extra motd\n"), "extra-only": file("x")})
	mnt := mountUnion(t, "--image", ref, "--root", root, "-l", extra, "-u", upper)
	if got := imgReadFile(t, filepath.Join(mnt, "etc/motd")); got != "extra motd\n" {
		t.Errorf("etc/motd = %q, want the explicit lower's (it is above the image)", got)
	}
	if got := imgReadFile(t, filepath.Join(mnt, "etc/os-release")); got != "ID=test\n" {
		t.Errorf("etc/os-release = %q, want the image's", got)
	}
	if err := os.WriteFile(filepath.Join(mnt, "etc/os-release"), []byte("ID=changed\n"), 0o644); err != nil {
		t.Fatalf("write an image file through the mount: %v", err)
	}
	if got := imgReadFile(t, filepath.Join(upper, "etc/os-release")); got != "ID=changed\n" {
		t.Errorf("upper etc/os-release = %q, want the copy-up", got)
	}
	out, _, exit := runUnionfs(t, "inspect", mnt)
	var rec struct {
		Image  string
		Lowers []string
	}
	if exit != 0 || json.Unmarshal([]byte(out), &rec) != nil || rec.Image != ref || len(rec.Lowers) != 3 {
		t.Errorf("inspect: exit %d, image %q, %d lowers; want %q and 3 (one explicit, two image layers)\n%s", exit, rec.Image, len(rec.Lowers), ref, out)
	}
	umountUnion(t, mnt)
	assertUnchanged(t, before, filepath.Join(root, "layers"))
}
