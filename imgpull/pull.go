package imgpull

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/unionfs/unionfs/layerdb"
)

// DefaultJobs is how many layers download at once, as docker's
// max-concurrent-downloads.
const DefaultJobs = 3

// PullOptions configure Pull.
type PullOptions struct {
	// Platform selects from a multi-platform index: "os/arch[/variant]".
	// Empty means the host's. An image (not an index) for another platform
	// is refused only when Platform is given.
	Platform string
	// Insecure allows plain HTTP and unverified TLS for the registry.
	Insecure bool
	// Keychain finds credentials; nil means authn.DefaultKeychain (the
	// docker config in ~/.docker/config.json or $DOCKER_CONFIG, with its
	// credential helpers).
	Keychain authn.Keychain
	// Transport, if set, replaces the HTTP transport (tests).
	Transport http.RoundTripper
	// Jobs is the number of parallel layer downloads; 0 means DefaultJobs.
	Jobs int
	// Progress shows the layers' downloads; nil shows nothing.
	Progress *Progress
	// Limits cap each layer's unpacking; zero fields take the defaults.
	Limits Limits
	// Rootless keeps owners and special modes in meta; nil means "not root".
	Rootless *bool
	// NoSync skips syncing unpacked layers to disk; for tests.
	NoSync bool
}

// Pull downloads the image ref names into the store, unless it is there
// already, and tags it. Layers that are stored (by DiffID) are not
// downloaded again. Each layer is verified against both its compressed
// digest and its DiffID before it is recorded; an interrupted or failed
// pull records no partial layer, and pulling again reuses the layers that
// were complete.
func (s *Store) Pull(ctx context.Context, ref string, o PullOptions) (layerdb.Image, error) {
	r, err := parseRef(ref, o.Insecure)
	if err != nil {
		return layerdb.Image{}, err
	}
	want, err := platformOf(o.Platform)
	if err != nil {
		return layerdb.Image{}, err
	}
	desc, err := remote.Get(r, s.remoteOptions(ctx, o, want)...)
	if err != nil {
		return layerdb.Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	img, err := desc.Image()
	if err != nil {
		return layerdb.Image{}, fmt.Errorf("pull %s: %w", ref, unsupported(err))
	}
	rec, layers, err := describe(r, desc, img)
	if err != nil {
		return layerdb.Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	if have, _ := v1.ParsePlatform(rec.Platform); o.Platform != "" && (have == nil || !have.Satisfies(want)) {
		return layerdb.Image{}, fmt.Errorf("pull %s: %w: the image is for %s, not %s", ref, ErrPlatform, rec.Platform, o.Platform)
	}
	o.Progress.Printf("%s: Pulling from %s", tagOrDigest(r), r.Context().RepositoryStr())

	release, err := s.lease("pull", rec.Layers)
	if err != nil {
		return layerdb.Image{}, err
	}
	defer func() {
		if release != nil {
			// Failing anyway; a lease left behind is stale once we exit.
			release()
		}
	}()
	err = s.fetchLayers(ctx, img, layers, o)
	o.Progress.Finish()
	if err != nil {
		return layerdb.Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	var size int64
	err = s.view(func(db *layerdb.StoreDB) error {
		for _, d := range rec.Layers {
			l, err := db.Layer(d)
			if err != nil {
				return err
			}
			size += l.Size
		}
		return nil
	})
	if err != nil {
		return layerdb.Image{}, err
	}
	rec.Size = size
	rec.Pulled = time.Now().UTC()
	var old layerdb.Image
	var replaced bool
	err = s.update(func(db *layerdb.StoreDB) error {
		var err error
		old, replaced, err = db.PutImage(rec)
		return err
	})
	if err != nil {
		return layerdb.Image{}, err
	}
	err, release = release(), nil
	if err != nil {
		return rec, err
	}
	o.Progress.Printf("Digest: %s", rec.Digest)
	if replaced && old.Manifest == rec.Manifest {
		o.Progress.Printf("Status: Image is up to date for %s", ref)
	} else {
		o.Progress.Printf("Status: Downloaded newer image for %s", ref)
	}
	// A replaced tag may have left layers unused.
	_, err = s.Collect()
	return rec, err
}

func (s *Store) remoteOptions(ctx context.Context, o PullOptions, p v1.Platform) []remote.Option {
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	tr := o.Transport
	if tr == nil {
		t := remote.DefaultTransport.(*http.Transport).Clone()
		if o.Insecure {
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // --insecure asks for exactly this
		}
		tr = t
	}
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithTransport(tr),
		remote.WithPlatform(p),
		remote.WithUserAgent("unionfs"),
	}
}

// platformOf parses "os/arch[/variant]"; empty is the host.
func platformOf(s string) (v1.Platform, error) {
	if s == "" {
		return v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}, nil
	}
	p, err := v1.ParsePlatform(s)
	if err != nil || p.OS == "" || p.Architecture == "" {
		return v1.Platform{}, fmt.Errorf("bad platform %q: want os/arch[/variant], e.g. linux/arm64", s)
	}
	return *p, nil
}

// layerDesc is one layer to store: its blob and the DiffID its config claims.
type layerDesc struct {
	blob   v1.Descriptor
	diffID v1.Hash
}

var layerTypes = map[types.MediaType]bool{
	types.DockerLayer: true, types.DockerUncompressedLayer: true, types.DockerForeignLayer: true,
	types.OCILayer: true, types.OCILayerZStd: true, types.OCIUncompressedLayer: true,
	types.OCIRestrictedLayer: true, types.OCIUncompressedRestrictedLayer: true,
	"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": true,
}

// describe reads the manifest and config of img and checks that they
// describe a container image this store can hold.
func describe(r name.Reference, desc *remote.Descriptor, img v1.Image) (layerdb.Image, []layerDesc, error) {
	m, err := img.Manifest()
	if err != nil {
		return layerdb.Image{}, nil, err
	}
	mdigest, err := img.Digest()
	if err != nil {
		return layerdb.Image{}, nil, err
	}
	switch m.Config.MediaType {
	case types.DockerConfigJSON, types.OCIConfigJSON:
	default:
		return layerdb.Image{}, nil, fmt.Errorf("%w: config media type %q is not a container image", ErrUnsupported, m.Config.MediaType)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return layerdb.Image{}, nil, fmt.Errorf("config: %w", err)
	}
	if err := checkHash("config", m.Config.Digest, sha256.Sum256(raw)); err != nil {
		return layerdb.Image{}, nil, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return layerdb.Image{}, nil, fmt.Errorf("config: %w", err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return layerdb.Image{}, nil, fmt.Errorf("%w: manifest has %d layers, config %d diff_ids", ErrUnsupported, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	rec := layerdb.Image{
		Name:     repoName(r),
		Digest:   desc.Digest.String(),
		Manifest: mdigest.String(),
		Config:   m.Config.Digest.String(),
		Created:  cfg.Created.UTC(),
		Platform: (&v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}).String(),
	}
	if t, ok := r.(name.Tag); ok {
		rec.Tag = t.TagStr()
	}
	layers := make([]layerDesc, len(m.Layers))
	for i, l := range m.Layers {
		if !layerTypes[l.MediaType] {
			return layerdb.Image{}, nil, fmt.Errorf("%w: layer %d has media type %q", ErrUnsupported, i, l.MediaType)
		}
		d := cfg.RootFS.DiffIDs[i]
		if l.Digest.Algorithm != "sha256" || d.Algorithm != "sha256" {
			return layerdb.Image{}, nil, fmt.Errorf("%w: layer %d digest algorithm %s/%s", ErrUnsupported, i, l.Digest.Algorithm, d.Algorithm)
		}
		layers[i] = layerDesc{blob: l, diffID: d}
		rec.Layers = append(rec.Layers, d.String())
	}
	return rec, layers, nil
}

func unsupported(err error) error {
	if strings.Contains(err.Error(), "schema 1") {
		return fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	return err
}

func tagOrDigest(r name.Reference) string {
	if t, ok := r.(name.Tag); ok {
		return t.TagStr()
	}
	return r.Identifier()
}

func shortID(h v1.Hash) string {
	if len(h.Hex) > 12 {
		return h.Hex[:12]
	}
	return h.Hex
}

// fetchLayers stores every layer that is not stored yet, in parallel.
func (s *Store) fetchLayers(ctx context.Context, img v1.Image, layers []layerDesc, o PullOptions) error {
	jobs := o.Jobs
	if jobs <= 0 {
		jobs = DefaultJobs
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	bars := make([]*LayerProgress, len(layers))
	for i, l := range layers {
		bars[i] = o.Progress.Layer(shortID(l.blob.Digest))
		bars[i].Status("Waiting")
	}
	seen := map[v1.Hash]bool{}
	for i, l := range layers {
		if seen[l.diffID] {
			bars[i].Status("Already exists")
			continue // the same layer twice in one image
		}
		seen[l.diffID] = true
		g.Go(func() error {
			err := s.fetchLayer(gctx, img, l, o, bars[i])
			if err != nil {
				bars[i].Status("Failed")
				return fmt.Errorf("layer %s: %w", l.blob.Digest, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// stored reports whether the layer is complete in the store: recorded, and
// its directory present.
func (s *Store) stored(diffID string) (bool, error) {
	var ok bool
	err := s.view(func(db *layerdb.StoreDB) error {
		_, err := db.Layer(diffID)
		if errors.Is(err, layerdb.ErrNotFound) {
			return nil
		}
		ok = err == nil
		return err
	})
	if err != nil || !ok {
		return false, err
	}
	if _, err := os.Stat(s.LayerDir(diffID)); err != nil {
		return false, nil // a crash during collection: pull it again
	}
	return true, nil
}

func (s *Store) fetchLayer(ctx context.Context, img v1.Image, l layerDesc, o PullOptions, bar *LayerProgress) error {
	diffID := l.diffID.String()
	ok, err := s.stored(diffID)
	if err != nil {
		return err
	}
	if ok {
		bar.Status("Already exists")
		// Remember this blob digest too; the layer is not copied.
		err := s.update(func(db *layerdb.StoreDB) error {
			return db.AddLayer(layerdb.Layer{DiffID: diffID, Compressed: []string{l.blob.Digest.String()}}, nil)
		})
		if errors.Is(err, layerdb.ErrExists) {
			err = nil
		}
		return err
	}
	layer, err := img.LayerByDigest(l.blob.Digest)
	if err != nil {
		return err
	}
	rc, err := layer.Compressed()
	if err != nil {
		return err
	}
	bar.Start(l.blob.Size)
	err = s.unpackVerified(ctx, &progressReader{rc, bar}, l, o, bar)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	bar.Status("Pull complete")
	return nil
}

// unpackVerified streams one blob into a staging directory, verifies the
// blob's digest and the DiffID of its uncompressed tar (both over every
// byte, read to the end), and moves the directory into place while
// recording it. Any failure leaves nothing recorded and the staging
// directory removed.
func (s *Store) unpackVerified(ctx context.Context, blob io.Reader, l layerDesc, o PullOptions, bar *LayerProgress) error {
	stage, err := s.tempName("stage")
	if err != nil {
		return err
	}
	if err := os.Mkdir(stage, 0o755); err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			os.RemoveAll(stage)
		}
	}()
	blobHash := sha256.New()
	var blobLen int64
	counted := &blobReader{r: &ctxReader{ctx, blob}, n: &blobLen, size: l.blob.Size}
	br := bufio.NewReaderSize(io.TeeReader(counted, blobHash), 64<<10)
	dec, closeDec, err := decompress(br)
	if err != nil {
		return err
	}
	diffHash := sha256.New()
	rootless := os.Geteuid() != 0
	if o.Rootless != nil {
		rootless = *o.Rootless
	}
	res, err := Unpack(io.TeeReader(dec, diffHash), stage, UnpackOptions{Limits: o.Limits, Rootless: rootless, NoSync: o.NoSync})
	closeDec()
	if err != nil {
		// Corrupt bytes usually break decompression or the tar first: if
		// the blob is not what the manifest names, say so.
		if ctx.Err() == nil && !errors.Is(err, ErrLimit) {
			if _, derr := io.Copy(io.Discard, br); derr == nil && blobLen == l.blob.Size {
				if herr := checkHash("blob", l.blob.Digest, sum(blobHash)); herr != nil {
					return fmt.Errorf("%w (unpacking failed first: %v)", herr, err)
				}
			}
		}
		return err
	}
	// The decompressor may stop at its end marker: hash what follows too.
	if _, err := io.Copy(io.Discard, br); err != nil {
		return err
	}
	bar.Status("Verifying Checksum")
	if blobLen != l.blob.Size {
		return fmt.Errorf("%w: blob has %d bytes, manifest says %d", ErrDigestMismatch, blobLen, l.blob.Size)
	}
	if err := checkHash("blob", l.blob.Digest, sum(blobHash)); err != nil {
		return err
	}
	if err := checkHash("DiffID", l.diffID, sum(diffHash)); err != nil {
		return err
	}
	diffID := l.diffID.String()
	dst := s.LayerDir(diffID)
	err = s.update(func(db *layerdb.StoreDB) error {
		return db.AddLayer(layerdb.Layer{
			DiffID:     diffID,
			Compressed: []string{l.blob.Digest.String()},
			Size:       res.Bytes,
			Added:      time.Now().UTC(),
		}, func() error {
			// Under the store's lock, with no record for diffID: whatever
			// is at dst is an orphan of a crash. Replace it.
			if _, err := os.Lstat(dst); err == nil {
				t, err := s.tempName("trash")
				if err != nil {
					return err
				}
				if err := os.Rename(dst, t); err != nil {
					return err
				}
			}
			if err := os.Rename(stage, dst); err != nil {
				return err
			}
			committed = true
			return nil
		})
	})
	if errors.Is(err, layerdb.ErrExists) {
		return nil // another pull stored it meanwhile; ours is removed
	}
	// If the rename happened but the commit failed, the directory is an
	// orphan without a record, which Collect sweeps.
	return err
}

func sum(h hash.Hash) [32]byte {
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

func checkHash(what string, want v1.Hash, got [32]byte) error {
	if want.Algorithm != "sha256" {
		return fmt.Errorf("%w: %s digest algorithm %q", ErrUnsupported, what, want.Algorithm)
	}
	if g := hex.EncodeToString(got[:]); g != want.Hex {
		return fmt.Errorf("%w: %s is sha256:%s, expected %s", ErrDigestMismatch, what, g, want)
	}
	return nil
}

// decompress picks the decompressor by the stream's magic number rather
// than by the media type, which registries do not always get right.
func decompress(br *bufio.Reader) (io.Reader, func(), error) {
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: gzip: %w", ErrInvalidLayer, err)
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxMemory(512<<20), zstd.WithDecoderMaxWindow(128<<20))
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}

// blobReader reads exactly the size the manifest gives and counts it. It
// does the verification itself, over every byte: at the expected size it
// reports EOF whatever the source says, so that the digest comparison (not
// go-containerregistry's own check, whose error carries no type) decides.
type blobReader struct {
	r    io.Reader
	n    *int64
	size int64
}

func (b *blobReader) Read(p []byte) (int, error) {
	if *b.n >= b.size {
		return 0, io.EOF
	}
	if rest := b.size - *b.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := b.r.Read(p)
	*b.n += int64(n)
	if *b.n >= b.size && err != nil {
		err = io.EOF
	}
	if errors.Is(err, io.EOF) && *b.n < b.size {
		err = fmt.Errorf("%w: blob ends after %d of %d bytes", io.ErrUnexpectedEOF, *b.n, b.size)
	}
	return n, err
}

// ctxReader stops a download when the pull is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
