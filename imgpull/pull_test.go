package imgpull

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/unionfs/unionfs/imgpull/imgtest"
	"github.com/unionfs/unionfs/layerdb"
)

// testRegistry is go-containerregistry's in-process registry, with hooks
// to count blob downloads and to tamper with or fail them.
type testRegistry struct {
	host string
	mu   sync.Mutex
	gets map[string]int // blob digest -> GET count
	// hook, if set, may answer a blob GET itself (returning true).
	hook func(w http.ResponseWriter, digest string) bool
	auth [2]string // user, password; empty: no auth
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	tr := &testRegistry{gets: make(map[string]int)}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.mu.Lock()
		auth, hook := tr.auth, tr.hook
		tr.mu.Unlock()
		if auth[0] != "" {
			u, p, ok := r.BasicAuth()
			if !ok || u != auth[0] || p != auth[1] {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		if i := strings.Index(r.URL.Path, "/blobs/sha256:"); i >= 0 && r.Method == http.MethodGet {
			d := r.URL.Path[i+len("/blobs/"):]
			tr.mu.Lock()
			tr.gets[d]++
			tr.mu.Unlock()
			if hook != nil && hook(w, d) {
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	tr.host = strings.TrimPrefix(srv.URL, "http://")
	return tr
}

func (tr *testRegistry) ref(repo string) string { return tr.host + "/" + repo }

func (tr *testRegistry) blobGets(d v1.Hash) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.gets[d.String()]
}

func (tr *testRegistry) push(t *testing.T, ref string, img imgtest.Image) {
	t.Helper()
	if err := imgtest.Push(ref, img); err != nil {
		t.Fatal(err)
	}
}

func newTestStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "root"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pullOpts(progress io.Writer) PullOptions {
	rootless := true
	o := PullOptions{NoSync: true, Rootless: &rootless, Keychain: authn.NewMultiKeychain()}
	if progress != nil {
		o.Progress = NewProgress(progress, false)
	}
	return o
}

// baseTar and appTar are a base layer and a layer on top that deletes,
// replaces and makes opaque.
var (
	baseTar = imgtest.Tar(imgtest.Dir("etc"), imgtest.File("etc/motd", "base motd"), imgtest.File("etc/os-release", "debian"),
		imgtest.Dir("var"), imgtest.Dir("var/log"), imgtest.File("var/log/old.log", "old"),
		imgtest.Dir("opt"), imgtest.File("opt/a", "a"), imgtest.File("opt/b", "b"))
	appTar = imgtest.Tar(imgtest.File("etc/motd", "app motd"), imgtest.Whiteout("var/log", "old.log"),
		imgtest.Dir("opt"), imgtest.Opaque("opt"), imgtest.File("opt/c", "c"))
)

// assertNothingStored checks that a failed pull left no image, layer,
// layer directory or staging directory.
func assertNothingStored(t *testing.T, s *Store) {
	t.Helper()
	imgs, err := s.Images()
	if err != nil || len(imgs) != 0 {
		t.Errorf("images after a failed pull: %v, %v", imgs, err)
	}
	var layers []layerdb.Layer
	s.view(func(db *layerdb.StoreDB) error { layers, err = db.Layers(); return err })
	if len(layers) != 0 {
		t.Errorf("layers recorded after a failed pull: %v", layers)
	}
	for _, d := range []string{layersDir, tmpDir} {
		ents, _ := os.ReadDir(filepath.Join(s.Root(), d))
		if len(ents) != 0 {
			t.Errorf("%s/ after a failed pull holds %v", d, ents)
		}
	}
}

func TestPullTwoLayers(t *testing.T) {
	reg := newTestRegistry(t)
	s := newTestStore(t)
	img := imgtest.Image{Layers: []imgtest.Layer{imgtest.Gzip(baseTar), imgtest.Gzip(appTar)}}
	ref := reg.ref("app:1")
	reg.push(t, ref, img)
	var out bytes.Buffer
	got, err := s.Pull(context.Background(), ref, pullOpts(&out))
	if err != nil {
		t.Fatal(err)
	}
	if got.Key() != ref || got.Manifest != img.ManifestDigest().String() || got.Platform != "linux/amd64" ||
		len(got.Layers) != 2 || got.Layers[0] != img.Layers[0].DiffID.String() || !got.Created.Equal(imgtest.Time) {
		t.Errorf("image = %+v", got)
	}
	if got.Size != int64(len(baseTar)+len(appTar)) {
		t.Errorf("size %d, want %d", got.Size, len(baseTar)+len(appTar))
	}
	for _, want := range []string{"Pulling from app", ": Pull complete", "Digest: sha256:", "Status: Downloaded newer image for"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, out.String())
		}
	}
	dirs, release, err := s.Lowers(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if len(dirs) != 2 || dirs[0] != s.LayerDir(got.Layers[1]) || dirs[1] != s.LayerDir(got.Layers[0]) {
		t.Fatalf("Lowers = %v", dirs)
	}
	if plain, err := s.LayerDirs(ref); err != nil || !slices.Equal(plain, dirs) {
		t.Errorf("LayerDirs = %v, %v; want %v", plain, err, dirs)
	}
	if b, err := os.ReadFile(filepath.Join(dirs[0], "etc/motd")); err != nil || string(b) != "app motd" {
		t.Errorf("top etc/motd = %q, %v", b, err)
	}
	recs, metas := stateOf(t, dirs[0])
	if want := map[string]layerdb.Record{"var/log/old.log": wh, "opt": wh}; !mapsEqual(recs, want) {
		t.Errorf("top layer records = %v, want %v", recs, want)
	}
	if m := metas["etc/motd"]; m.Mode != 0o100644 || m.UID != 0 {
		t.Errorf("rootless meta of etc/motd = %+v", m)
	}
	if _, err := os.Stat(filepath.Join(dirs[0], "var/log/.wh.old.log")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("whiteout written as a file: %v", err)
	}

	// Pulling again downloads nothing.
	before := reg.blobGets(img.Layers[0].Digest()) + reg.blobGets(img.Layers[1].Digest())
	out.Reset()
	if _, err := s.Pull(context.Background(), ref, pullOpts(&out)); err != nil {
		t.Fatal(err)
	}
	if after := reg.blobGets(img.Layers[0].Digest()) + reg.blobGets(img.Layers[1].Digest()); after != before {
		t.Errorf("second pull fetched %d layer blobs", after-before)
	}
	if !strings.Contains(out.String(), "Already exists") || !strings.Contains(out.String(), "Image is up to date") {
		t.Errorf("second pull output:\n%s", out.String())
	}
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestPullSharedBaseDownloadsOnce(t *testing.T) {
	reg := newTestRegistry(t)
	s := newTestStore(t)
	base := imgtest.Gzip(baseTar)
	one := imgtest.Image{Layers: []imgtest.Layer{base, imgtest.Gzip(imgtest.Tar(imgtest.File("one", "1")))}}
	two := imgtest.Image{Layers: []imgtest.Layer{base, imgtest.Gzip(imgtest.Tar(imgtest.File("two", "2")))}}
	reg.push(t, reg.ref("one:latest"), one)
	reg.push(t, reg.ref("two:latest"), two)
	if _, err := s.Pull(context.Background(), reg.ref("one"), pullOpts(nil)); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := s.Pull(context.Background(), reg.ref("two"), pullOpts(&out)); err != nil {
		t.Fatal(err)
	}
	if n := reg.blobGets(base.Digest()); n != 1 {
		t.Errorf("base blob fetched %d times, want 1", n)
	}
	if !strings.Contains(out.String(), base.Digest().Hex[:12]+": Already exists") {
		t.Errorf("output:\n%s", out.String())
	}
	var l layerdb.Layer
	s.view(func(db *layerdb.StoreDB) (err error) { l, err = db.Layer(base.DiffID.String()); return err })
	if want := []string{reg.ref("one:latest"), reg.ref("two:latest")}; !slices.Equal(l.Users, want) {
		t.Errorf("base users = %v, want %v", l.Users, want)
	}
}

func TestPullIndexSelectsPlatform(t *testing.T) {
	reg := newTestRegistry(t)
	amd := imgtest.Image{Layers: []imgtest.Layer{imgtest.Gzip(imgtest.Tar(imgtest.File("arch", "amd64")))}}
	arm := imgtest.Image{Layers: []imgtest.Layer{imgtest.Gzip(imgtest.Tar(imgtest.File("arch", "arm64")))},
		Platform: v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}
	ref := reg.ref("multi:latest")
	idx, err := imgtest.PushIndex(ref, true, []imgtest.Image{amd, arm})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ platform, want, arch string }{
		{"", "linux/" + runtime.GOARCH, runtime.GOARCH},
		{"linux/arm64", "linux/arm64/v8", "arm64"},
		{"linux/arm64/v8", "linux/arm64/v8", "arm64"},
	} {
		if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" && c.platform == "" {
			continue
		}
		s := newTestStore(t)
		o := pullOpts(nil)
		o.Platform = c.platform
		got, err := s.Pull(context.Background(), ref, o)
		if err != nil {
			t.Fatalf("platform %q: %v", c.platform, err)
		}
		if got.Platform != c.want || got.Digest != idx.String() {
			t.Errorf("platform %q: got %s digest %s", c.platform, got.Platform, got.Digest)
		}
		dirs, release, err := s.Lowers(ref)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(filepath.Join(dirs[0], "arch"))
		release()
		if string(b) != c.arch {
			t.Errorf("platform %q: arch file %q", c.platform, b)
		}
	}
	s := newTestStore(t)
	o := pullOpts(nil)
	o.Platform = "linux/s390x"
	if _, err := s.Pull(context.Background(), ref, o); err == nil {
		t.Error("pull for a platform the index lacks succeeded")
	}
	o.Platform = "windows/arm64"
	single := reg.ref("single:latest")
	reg.push(t, single, amd)
	if _, err := s.Pull(context.Background(), single, o); !errors.Is(err, ErrPlatform) {
		t.Errorf("pull of a linux/amd64 image for windows/arm64 = %v, want ErrPlatform", err)
	}
	assertNothingStored(t, s)
}

func TestPullCompressions(t *testing.T) {
	reg := newTestRegistry(t)
	s := newTestStore(t)
	for _, c := range []struct {
		name  string
		layer imgtest.Layer
		oci   bool
	}{
		{"gzip-docker", imgtest.Gzip(imgtest.Tar(imgtest.File("f", "gzip-docker"))), false},
		{"gzip-oci", imgtest.Gzip(imgtest.Tar(imgtest.File("f", "gzip-oci"))), true},
		{"zstd", imgtest.Zstd(imgtest.Tar(imgtest.File("f", "zstd"))), true},
		{"uncompressed", imgtest.Uncompressed(imgtest.Tar(imgtest.File("f", "uncompressed"))), true},
		{"uncompressed-docker", imgtest.Uncompressed(imgtest.Tar(imgtest.File("f", "uncompressed-docker"))), false},
	} {
		ref := reg.ref(c.name + ":v")
		reg.push(t, ref, imgtest.Image{Layers: []imgtest.Layer{c.layer}, OCI: c.oci})
		if _, err := s.Pull(context.Background(), ref, pullOpts(nil)); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		dirs, release, err := s.Lowers(ref)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dirs[0], "f"))
		release()
		if err != nil || string(b) != c.name {
			t.Errorf("%s: f = %q, %v", c.name, b, err)
		}
	}
}

func TestPullBlobDigestMismatch(t *testing.T) {
	reg := newTestRegistry(t)
	s := newTestStore(t)
	// Same length, other bytes: only a digest check can tell.
	good := imgtest.Uncompressed(imgtest.Tar(imgtest.File("f", "good")))
	evil := imgtest.Uncompressed(imgtest.Tar(imgtest.File("f", "evil")))
	ref := reg.ref("tampered:1")
	reg.push(t, ref, imgtest.Image{Layers: []imgtest.Layer{good}})
	reg.hook = func(w http.ResponseWriter, d string) bool {
		if d != good.Digest().String() {
			return false
		}
		w.Write(evil.Blob)
		return true
	}
	_, err := s.Pull(context.Background(), ref, pullOpts(nil))
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("pull of a tampered blob = %v, want ErrDigestMismatch", err)
	}
	assertNothingStored(t, s)
}

func TestPullDiffIDMismatch(t *testing.T) {
	reg := newTestRegistry(t)
	s := newTestStore(t)
	l := imgtest.Gzip(imgtest.Tar(imgtest.File("f", "x")))
	lie := imgtest.Uncompressed(imgtest.Tar(imgtest.File("f", "y"))).DiffID
	ref := reg.ref("liar:1")
	reg.push(t, ref, imgtest.Image{Layers: []imgtest.Layer{l}, DiffIDs: []v1.Hash{lie}})
	_, err := s.Pull(context.Background(), ref, pullOpts(nil))
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("pull with a lying diff_id = %v, want ErrDigestMismatch", err)
	}
	assertNothingStored(t, s)
}

func TestPullGzipBomb(t *testing.T) {
	reg := newTestRegistry(t)
	s := newTestStore(t)
	bomb := imgtest.Gzip(imgtest.Tar(imgtest.File("zeros", string(make([]byte, 32<<20)))))
	if len(bomb.Blob) > 1<<20 {
		t.Fatalf("bomb is %d bytes compressed", len(bomb.Blob))
	}
	ref := reg.ref("bomb:1")
	reg.push(t, ref, imgtest.Image{Layers: []imgtest.Layer{bomb}})
	o := pullOpts(nil)
	o.Limits = Limits{MaxBytes: 8 << 20}
	if _, err := s.Pull(context.Background(), ref, o); !errors.Is(err, ErrLimit) {
		t.Fatalf("pull of a gzip bomb = %v, want ErrLimit", err)
	}
	assertNothingStored(t, s)
}

func TestPullHostileLayerRecordsNothing(t *testing.T) {
	reg := newTestRegistry(t)
	s := newTestStore(t)
	ref := reg.ref("hostile:1")
	reg.push(t, ref, imgtest.Image{Layers: []imgtest.Layer{imgtest.Gzip(imgtest.Tar(imgtest.File("../../escape", "x")))}})
	if _, err := s.Pull(context.Background(), ref, pullOpts(nil)); !errors.Is(err, ErrInvalidLayer) {
		t.Fatalf("pull = %v, want ErrInvalidLayer", err)
	}
	assertNothingStored(t, s)
	if _, err := os.Stat(filepath.Join(s.Root(), "..", "escape")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("escaped: %v", err)
	}
}

func TestPullInterruptedResumes(t *testing.T) {
	reg := newTestRegistry(t)
	s := newTestStore(t)
	l1 := imgtest.Gzip(imgtest.Tar(imgtest.File("one", "1")))
	l2 := imgtest.Gzip(imgtest.Tar(imgtest.File("two", strings.Repeat("2", 100000))))
	ref := reg.ref("flaky:1")
	reg.push(t, ref, imgtest.Image{Layers: []imgtest.Layer{l1, l2}})
	// The second layer's download breaks off half way.
	reg.hook = func(w http.ResponseWriter, d string) bool {
		if d != l2.Digest().String() {
			return false
		}
		w.Header().Set("Content-Length", "100000")
		w.Write(l2.Blob[:len(l2.Blob)/2])
		return true
	}
	o := pullOpts(nil)
	o.Jobs = 1
	if _, err := s.Pull(context.Background(), ref, o); err == nil {
		t.Fatal("pull with a broken download succeeded")
	}
	if imgs, _ := s.Images(); len(imgs) != 0 {
		t.Fatalf("image recorded after a failed pull: %v", imgs)
	}
	if ok, _ := s.stored(l2.DiffID.String()); ok {
		t.Fatal("half-downloaded layer recorded")
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Root(), tmpDir)); len(ents) != 0 {
		t.Errorf("staging left: %v", ents)
	}
	reg.hook = nil
	before := reg.blobGets(l1.Digest())
	if _, err := s.Pull(context.Background(), ref, o); err != nil {
		t.Fatal(err)
	}
	if n := reg.blobGets(l1.Digest()); n != before {
		t.Errorf("the complete layer was fetched again (%d -> %d)", before, n)
	}
}

func TestPullCancelled(t *testing.T) {
	reg := newTestRegistry(t)
	s := newTestStore(t)
	l := imgtest.Gzip(imgtest.Tar(imgtest.File("f", "x")))
	ref := reg.ref("slow:1")
	reg.push(t, ref, imgtest.Image{Layers: []imgtest.Layer{l}})
	ctx, cancel := context.WithCancel(context.Background())
	reg.hook = func(w http.ResponseWriter, d string) bool {
		cancel()
		return false
	}
	if _, err := s.Pull(ctx, ref, pullOpts(nil)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled pull = %v", err)
	}
	assertNothingStored(t, s)
}

func TestPullBasicAuth(t *testing.T) {
	reg := newTestRegistry(t)
	ref := reg.ref("private:1")
	reg.push(t, ref, imgtest.Image{Layers: []imgtest.Layer{imgtest.Gzip(imgtest.Tar(imgtest.File("f", "x")))}})
	reg.auth = [2]string{"alice", "s3cret"}
	s := newTestStore(t)
	if _, err := s.Pull(context.Background(), ref, pullOpts(nil)); err == nil {
		t.Fatal("pull without credentials succeeded")
	}
	// Credentials from a docker config, as the default keychain finds them.
	cfgDir := t.TempDir()
	t.Setenv("HOME", t.TempDir())
	t.Setenv("DOCKER_CONFIG", cfgDir)
	writeDockerConfig(t, cfgDir, reg.host, "alice", "s3cret")
	o := pullOpts(nil)
	o.Keychain = nil
	if _, err := s.Pull(context.Background(), ref, o); err != nil {
		t.Fatalf("pull with credentials in $DOCKER_CONFIG: %v", err)
	}
}

func writeDockerConfig(t *testing.T, dir, host, user, pass string) {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	cfg := `{"auths":{"` + host + `":{"auth":"` + auth + `"}}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestPullUnsupported(t *testing.T) {
	reg := newTestRegistry(t)
	s := newTestStore(t)
	l := imgtest.Gzip(imgtest.Tar(imgtest.File("f", "x")))
	l.MediaType = "application/vnd.example.not-a-layer"
	ref := reg.ref("odd:1")
	reg.push(t, ref, imgtest.Image{Layers: []imgtest.Layer{l}, OCI: true})
	if _, err := s.Pull(context.Background(), ref, pullOpts(nil)); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("pull = %v, want ErrUnsupported", err)
	}
	if _, err := s.Pull(context.Background(), "UPPER/case", pullOpts(nil)); err == nil {
		t.Error("bad reference accepted")
	}
}
