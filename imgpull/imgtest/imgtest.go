// Package imgtest builds container images offline and pushes them to a
// registry, for tests: layer tars from a list of entries, gzip, zstd or
// uncompressed blobs, Docker or OCI manifests, multi-platform indexes, and
// deliberately wrong ones (a config whose diff_ids lie). Everything is built
// in memory from what the test says; nothing is fetched.
package imgtest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Entry is one tar entry. The zero Mode means 0644 for files, 0755 for
// directories.
type Entry struct {
	Name     string
	Type     byte // tar.TypeReg (default), TypeDir, TypeSymlink, TypeLink, TypeChar, ...
	Body     string
	Linkname string
	Mode     int64
	UID, GID int
	Major    int64
	Minor    int64
}

// File, Dir, Symlink, Whiteout and Opaque build common entries.
func File(name, body string) Entry { return Entry{Name: name, Body: body} }

// Dir is a directory entry.
func Dir(name string) Entry { return Entry{Name: name, Type: tar.TypeDir} }

// Symlink is a symbolic link entry.
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Linkname: target}
}

// Whiteout deletes dir/name in the layers below.
func Whiteout(dir, name string) Entry { return File(join(dir, ".wh."+name), "") }

// Opaque makes dir opaque.
func Opaque(dir string) Entry { return File(join(dir, ".wh..wh..opq"), "") }

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// Time is the modification time of every entry and image.
var Time = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// Tar returns an uncompressed layer tar of entries.
func Tar(entries ...Entry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.Name, Typeflag: e.Type, Linkname: e.Linkname, Mode: e.Mode,
			Uid: e.UID, Gid: e.GID, Devmajor: e.Major, Devminor: e.Minor, ModTime: Time,
		}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(h); err != nil {
			panic(fmt.Sprintf("imgtest: entry %q: %v", e.Name, err))
		}
		if _, err := tw.Write([]byte(e.Body)); err != nil {
			panic(err)
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// Layer is a layer blob as the registry stores it.
type Layer struct {
	Blob      []byte
	MediaType types.MediaType
	DiffID    v1.Hash // of the uncompressed tar
}

// Digest is the blob's digest.
func (l Layer) Digest() v1.Hash { return hashOf(l.Blob) }

func hashOf(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", s)}
}

// Gzip is a gzip-compressed layer (Docker media type; OCI's in an OCI image).
func Gzip(tarball []byte) Layer {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(tarball); err != nil {
		panic(err)
	}
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return Layer{Blob: buf.Bytes(), MediaType: types.DockerLayer, DiffID: hashOf(tarball)}
}

// Zstd is a zstd-compressed OCI layer.
func Zstd(tarball []byte) Layer {
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		panic(err)
	}
	return Layer{Blob: zw.EncodeAll(tarball, nil), MediaType: types.OCILayerZStd, DiffID: hashOf(tarball)}
}

// Uncompressed is a plain tar layer.
func Uncompressed(tarball []byte) Layer {
	return Layer{Blob: tarball, MediaType: types.OCIUncompressedLayer, DiffID: hashOf(tarball)}
}

// Image is an image to push.
type Image struct {
	Layers   []Layer
	Platform v1.Platform // default linux/amd64
	OCI      bool        // OCI media types instead of Docker schema 2
	// DiffIDs, if set, replace the layers' true DiffIDs in the config.
	DiffIDs []v1.Hash
}

func (img Image) platform() v1.Platform {
	if img.Platform.OS == "" {
		return v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	return img.Platform
}

// Config is the image's config blob.
func (img Image) Config() []byte {
	p := img.platform()
	cfg := v1.ConfigFile{
		Created:      v1.Time{Time: Time},
		OS:           p.OS,
		Architecture: p.Architecture,
		Variant:      p.Variant,
		RootFS:       v1.RootFS{Type: "layers"},
		Config:       v1.Config{Cmd: []string{"/bin/sh"}},
	}
	for _, l := range img.Layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
	}
	if img.DiffIDs != nil {
		cfg.RootFS.DiffIDs = img.DiffIDs
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		panic(err)
	}
	return b
}

// Manifest is the image's manifest and its media type.
func (img Image) Manifest() ([]byte, types.MediaType) {
	cfg := img.Config()
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.DockerManifestSchema2,
		Config:        v1.Descriptor{MediaType: types.DockerConfigJSON, Size: int64(len(cfg)), Digest: hashOf(cfg)},
	}
	if img.OCI {
		m.MediaType, m.Config.MediaType = types.OCIManifestSchema1, types.OCIConfigJSON
	}
	for _, l := range img.Layers {
		mt := l.MediaType
		if img.OCI && mt == types.DockerLayer {
			mt = types.OCILayer
		}
		if !img.OCI && mt == types.OCIUncompressedLayer {
			mt = types.DockerUncompressedLayer
		}
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: mt, Size: int64(len(l.Blob)), Digest: l.Digest()})
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b, m.MediaType
}

// ManifestDigest is the digest of the image's manifest.
func (img Image) ManifestDigest() v1.Hash {
	b, _ := img.Manifest()
	return hashOf(b)
}

type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.b, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// Push uploads the image's blobs and its manifest under ref.
func Push(ref string, img Image, opts ...remote.Option) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	if err := pushBlobs(r.Context(), img, opts); err != nil {
		return err
	}
	b, mt := img.Manifest()
	return remote.Put(r, rawManifest{b, mt}, opts...)
}

func pushBlobs(repo name.Repository, img Image, opts []remote.Option) error {
	for _, l := range img.Layers {
		if err := remote.WriteLayer(repo, static.NewLayer(l.Blob, l.MediaType), opts...); err != nil {
			return fmt.Errorf("push layer: %w", err)
		}
	}
	if err := remote.WriteLayer(repo, static.NewLayer(img.Config(), types.DockerConfigJSON), opts...); err != nil {
		return fmt.Errorf("push config: %w", err)
	}
	return nil
}

// PushIndex pushes every image (by digest) and a multi-platform index of
// them under ref, and returns the index's digest.
func PushIndex(ref string, oci bool, imgs []Image, opts ...remote.Option) (v1.Hash, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.DockerManifestList}
	if oci {
		idx.MediaType = types.OCIImageIndex
	}
	for _, img := range imgs {
		img.OCI = oci
		if err := pushBlobs(r.Context(), img, opts); err != nil {
			return v1.Hash{}, err
		}
		b, mt := img.Manifest()
		d := hashOf(b)
		if err := remote.Put(r.Context().Digest(d.String()), rawManifest{b, mt}, opts...); err != nil {
			return v1.Hash{}, err
		}
		p := img.platform()
		idx.Manifests = append(idx.Manifests, v1.Descriptor{MediaType: mt, Size: int64(len(b)), Digest: d, Platform: &p})
	}
	b, err := json.Marshal(idx)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Put(r, rawManifest{b, idx.MediaType}, opts...); err != nil {
		return v1.Hash{}, err
	}
	return hashOf(b), nil
}
