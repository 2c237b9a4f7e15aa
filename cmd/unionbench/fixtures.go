package main

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// fixtureVersion changes when a generator changes, so that old fixtures are
// rebuilt rather than silently reused.
const fixtureVersion = "v1"

// fixtures are the read-only inputs of the workloads, generated once into
// ROOT/MODE and reused by later runs. Lower layers are never written.
type fixtures struct {
	dir string

	goSrc      string // a copy of (part of) the Go source tree
	goSrcFiles int

	layers      []string // layer directories, bottom first
	bottomFiles []string // paths of the bottom layer's files, relative

	bigDir  string // holds "big", bigSize bytes
	bigSize int64

	tarball  string
	tarFiles int

	rmTreeDir   string // holds "tree", a lower-only subtree
	rmTreeFiles int

	memTree      string
	memTreeFiles int

	empty string // an empty lower layer
}

// prepareFixtures builds whatever fixture is missing or stale and describes
// them all. progress gets a line per fixture it builds.
func prepareFixtures(root, goRoot string, sz sizes, progress io.Writer) (*fixtures, error) {
	fx := &fixtures{dir: filepath.Join(root, sz.mode)}
	if err := os.MkdirAll(fx.dir, 0o755); err != nil {
		return nil, fmt.Errorf("create fixtures dir: %w", err)
	}
	goSrc := filepath.Join(goRoot, "src")
	b := fixtureBuilder{dir: fx.dir, progress: progress}

	fx.goSrc = b.ensure("gosrc", fmt.Sprintf("files=%d from %s", sz.statTreeFiles, goSrc), func(dst string) error {
		_, err := copyTree(goSrc, dst, sz.statTreeFiles)
		return err
	})
	fx.layers = b.ensureLayers(sz)
	fx.bottomFiles = bottomFiles(sz)
	fx.bigSize = sz.bigBytes
	fx.bigDir = b.ensure("big", fmt.Sprintf("bytes=%d", sz.bigBytes), func(dst string) error {
		return writeRandomFile(filepath.Join(dst, "big"), sz.bigBytes)
	})
	fx.tarFiles = sz.untarFiles
	fx.tarball = b.ensure("untar.tar", fmt.Sprintf("files=%d from %s", sz.untarFiles, goSrc), func(dst string) error {
		return writeTarball(dst, goSrc, sz.untarFiles)
	})
	fx.rmTreeFiles = sz.rmTreeFiles
	fx.rmTreeDir = b.ensure("rmtree", fmt.Sprintf("files=%d from %s/cmd", sz.rmTreeFiles, goSrc), func(dst string) error {
		n, err := copyTree(filepath.Join(goSrc, "cmd"), filepath.Join(dst, "tree"), sz.rmTreeFiles)
		if err == nil && n < sz.rmTreeFiles {
			err = fmt.Errorf("%s/cmd has only %d files, want %d", goSrc, n, sz.rmTreeFiles)
		}
		return err
	})
	fx.memTreeFiles = sz.memDirs * sz.memDirFiles
	fx.memTree = b.ensure("memtree", fmt.Sprintf("dirs=%d files=%d", sz.memDirs, sz.memDirFiles), func(dst string) error {
		return writeFlatTree(dst, sz.memDirs, sz.memDirFiles)
	})
	fx.empty = b.ensure("empty", "", func(dst string) error { return os.Mkdir(dst, 0o755) })
	if b.err != nil {
		return nil, b.err
	}
	if b.built {
		// Let the writeback of new fixtures finish before anything is timed.
		unix.Sync()
	}
	n, err := countFiles(fx.goSrc)
	if err != nil {
		return nil, err
	}
	fx.goSrcFiles = n
	return fx, nil
}

// fixtureBuilder builds fixtures into DIR/NAME, each marked complete by
// DIR/NAME.done holding its spec; it stops at the first error.
type fixtureBuilder struct {
	dir      string
	progress io.Writer
	built    bool
	err      error
}

func (b *fixtureBuilder) ensure(name, spec string, build func(dst string) error) string {
	final := filepath.Join(b.dir, name)
	if b.err != nil {
		return final
	}
	spec = fixtureVersion + " " + spec
	marker := final + ".done"
	if got, err := os.ReadFile(marker); err == nil && string(got) == spec {
		return final
	}
	fmt.Fprintf(b.progress, "fixtures: building %s (%s)\n", final, spec)
	b.built = true
	tmp := final + ".tmp"
	for _, p := range []string{marker, final, tmp} {
		if err := os.RemoveAll(p); err != nil {
			b.err = fmt.Errorf("remove stale fixture: %w", err)
			return final
		}
	}
	if err := build(tmp); err != nil {
		b.err = fmt.Errorf("build fixture %s: %w", name, err)
		return final
	}
	if err := os.Rename(tmp, final); err != nil {
		b.err = fmt.Errorf("build fixture %s: %w", name, err)
		return final
	}
	if err := os.WriteFile(marker, []byte(spec), 0o644); err != nil {
		b.err = fmt.Errorf("build fixture %s: %w", name, err)
	}
	return final
}

// ensureLayers builds the layers-N stack: layer 000 holds dirs x files, each
// layer above it some new files spread over the same directories (so that
// directories merge across every layer) and a few files that shadow bottom
// ones. Short names keep a 128-layer lowerdir= under the one-page limit of
// mount options.
func (b *fixtureBuilder) ensureLayers(sz sizes) []string {
	n := sz.layersNeeded()
	spec := fmt.Sprintf("layers=%d dirs=%d files=%d new=%d shadow=%d",
		n, sz.layerDirs, sz.layerDirFiles, sz.layerNewFiles, sz.layerShadowFiles)
	dir := b.ensure("layers", spec, func(dst string) error {
		for k := range n {
			if err := writeLayer(filepath.Join(dst, layerName(k)), k, sz); err != nil {
				return err
			}
		}
		return nil
	})
	layers := make([]string, n)
	for k := range layers {
		layers[k] = filepath.Join(dir, layerName(k))
	}
	return layers
}

func layerName(k int) string { return fmt.Sprintf("%03d", k) }

func bottomFiles(sz sizes) []string {
	var files []string
	for d := range sz.layerDirs {
		for f := range sz.layerDirFiles {
			files = append(files, fmt.Sprintf("d%03d/f%03d", d, f))
		}
	}
	return files
}

func writeLayer(dir string, k int, sz sizes) error {
	write := func(rel, content string) error {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, []byte(content), 0o644)
	}
	if k == 0 {
		for _, rel := range bottomFiles(sz) {
			if err := write(rel, "bottom "+rel+"\n"); err != nil {
				return err
			}
		}
		return nil
	}
	for j := range sz.layerNewFiles {
		rel := fmt.Sprintf("d%03d/l%03d-%03d", (k*37+j*7)%sz.layerDirs, k, j)
		if err := write(rel, "new\n"); err != nil {
			return err
		}
	}
	for j := range sz.layerShadowFiles {
		rel := fmt.Sprintf("d%03d/f%03d", (k*13+j*41)%sz.layerDirs, (k*7+j*3)%sz.layerDirFiles)
		if err := write(rel, fmt.Sprintf("shadowed by layer %d\n", k)); err != nil {
			return err
		}
	}
	return nil
}

// copyTree copies up to limit regular files (0: all) of src, with their
// directories and the symlinks met on the way, in lexical order, and
// returns how many files it copied.
func copyTree(src, dst string, limit int) (int, error) {
	n := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if limit > 0 && n >= limit {
			return fs.SkipAll
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			n++
			return copyFile(p, target)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("copy %s: %w", src, err)
	}
	return n, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func countFiles(dir string) (int, error) {
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("count files of %s: %w", dir, err)
	}
	return n, nil
}

// writeRandomFile writes size pseudo-random (incompressible, not sparse)
// bytes to path.
func writeRandomFile(path string, size int64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{'u', 'n', 'i', 'o', 'n', 'b', 'e', 'n', 'c', 'h'})
	if _, err := io.CopyN(f, rng, size); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeTarball writes a tar of up to limit files of src (under "src/"),
// their directories and the symlinks met on the way.
func writeTarball(path, src string, limit int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	n := 0
	walkErr := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n >= limit {
			return fs.SkipAll
		}
		return addToTar(tw, src, p, d, &n)
	})
	err = errors.Join(walkErr, tw.Close(), bw.Flush(), f.Sync())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n < limit {
		err = fmt.Errorf("%s has only %d files, want %d", src, n, limit)
	}
	return err
}

func addToTar(tw *tar.Writer, root, p string, d fs.DirEntry, files *int) error {
	rel, err := filepath.Rel(root, p)
	if err != nil {
		return err
	}
	fi, err := d.Info()
	if err != nil {
		return err
	}
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	} else if !fi.Mode().IsRegular() && !fi.IsDir() {
		return nil
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	hdr.Name = filepath.ToSlash(filepath.Join("src", rel))
	if fi.IsDir() {
		hdr.Name += "/"
	}
	hdr.Uname, hdr.Gname = "", ""
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	*files++
	in, err := os.Open(p)
	if err != nil {
		return err
	}
	defer in.Close()
	_, err = io.Copy(tw, in)
	return err
}

// writeFlatTree writes dirs directories of files empty files each.
func writeFlatTree(dst string, dirs, files int) error {
	for d := range dirs {
		dir := filepath.Join(dst, fmt.Sprintf("d%04d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for f := range files {
			fh, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("f%04d", f)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				return err
			}
			if err := fh.Close(); err != nil {
				return err
			}
		}
	}
	return nil
}

// goRoot finds the Go distribution whose src is the "real source tree"
// fixture: `go env GOROOT`, else /usr/local/go.
func goRoot() string {
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if r := strings.TrimSpace(string(out)); r != "" {
			return r
		}
	}
	return "/usr/local/go"
}
