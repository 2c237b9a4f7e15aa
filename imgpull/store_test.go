package imgpull

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/unionfs/unionfs/imgpull/imgtest"
	"github.com/unionfs/unionfs/layerdb"
)

// pullTwo pulls two images that share a base layer and returns the
// layers: base, one's own, two's own.
func pullTwo(t *testing.T, s *Store, reg *testRegistry) (base, one, two imgtest.Layer) {
	t.Helper()
	base = imgtest.Gzip(baseTar)
	one = imgtest.Gzip(imgtest.Tar(imgtest.File("one", "1")))
	two = imgtest.Gzip(imgtest.Tar(imgtest.File("two", "2")))
	reg.push(t, reg.ref("one:latest"), imgtest.Image{Layers: []imgtest.Layer{base, one}})
	reg.push(t, reg.ref("two:latest"), imgtest.Image{Layers: []imgtest.Layer{base, two}})
	for _, r := range []string{"one", "two"} {
		if _, err := s.Pull(context.Background(), reg.ref(r), pullOpts(nil)); err != nil {
			t.Fatal(err)
		}
	}
	return base, one, two
}

func layerStored(t *testing.T, s *Store, l imgtest.Layer) bool {
	t.Helper()
	ok, err := s.stored(l.DiffID.String())
	if err != nil {
		t.Fatal(err)
	}
	_, statErr := os.Stat(s.LayerDir(l.DiffID.String()))
	if ok != (statErr == nil) {
		t.Fatalf("layer %s: recorded %v but directory %v", l.DiffID, ok, statErr)
	}
	return ok
}

func TestRemoveKeepsSharedAndLeasedLayers(t *testing.T) {
	reg := newTestRegistry(t)
	s := newTestStore(t)
	base, one, two := pullTwo(t, s, reg)

	// A mount of "one" holds its layers.
	dirs, release, err := s.Lowers(reg.ref("one"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != 2 {
		t.Fatalf("Lowers = %v", dirs)
	}
	res, err := s.Remove(reg.ref("one"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Untagged, []string{reg.ref("one:latest")}) || len(res.Deleted) != 0 {
		t.Errorf("Remove = %+v, want one untagged, nothing deleted (leased)", res)
	}
	if !layerStored(t, s, one) || !layerStored(t, s, base) {
		t.Fatal("a leased layer was deleted")
	}
	if _, err := s.Resolve(reg.ref("one")); !errors.Is(err, ErrNoImage) {
		t.Errorf("Resolve after rmi = %v", err)
	}
	// Unmount: the layer only "one" used goes.
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if layerStored(t, s, one) {
		t.Error("unused layer kept after release")
	}
	if !layerStored(t, s, base) || !layerStored(t, s, two) {
		t.Error("layers of image two deleted")
	}
	res, err = s.Remove(reg.ref("two:latest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Deleted) != 2 {
		t.Errorf("Remove two deleted %v, want base and two", res.Deleted)
	}
	ents, _ := os.ReadDir(filepath.Join(s.Root(), layersDir))
	tmp, _ := os.ReadDir(filepath.Join(s.Root(), tmpDir))
	if len(ents) != 0 || len(tmp) != 0 {
		t.Errorf("left: layers %v, tmp %v", ents, tmp)
	}
	if _, err := s.Remove("nosuch"); !errors.Is(err, ErrNoImage) {
		t.Errorf("Remove(nosuch) = %v", err)
	}
}

func TestLeaseOfDeadProcessIsIgnored(t *testing.T) {
	reg := newTestRegistry(t)
	s := newTestStore(t)
	_, one, _ := pullTwo(t, s, reg)
	// A mount process that died without releasing its lease.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	err := s.update(func(db *layerdb.StoreDB) error {
		return db.AddLease(layerdb.Lease{ID: "dead", PID: cmd.Process.Pid, Start: 1, Layers: []string{one.DiffID.String()}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Remove(reg.ref("one")); err != nil {
		t.Fatal(err)
	}
	if layerStored(t, s, one) {
		t.Error("a stale lease kept a layer")
	}
	var leases []layerdb.Lease
	s.view(func(db *layerdb.StoreDB) (err error) { leases, err = db.Leases(); return err })
	if len(leases) != 0 {
		t.Errorf("stale lease not dropped: %v", leases)
	}
}

func TestCollectOrphans(t *testing.T) {
	s := newTestStore(t)
	// A layer directory renamed into place by a pull that crashed before
	// its commit, and a dead process's staging directory.
	orphan := filepath.Join(s.Root(), layersDir, "abcd")
	stage := filepath.Join(s.Root(), tmpDir, "stage-999999999-1-00")
	for _, d := range []string{filepath.Join(orphan, "etc"), filepath.Join(stage, "x")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A live process's staging directory stays.
	live, err := s.tempName("stage")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(live, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Collect(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{orphan, stage} {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s not collected: %v", d, err)
		}
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("live staging directory collected: %v", err)
	}
}

func TestResolve(t *testing.T) {
	reg := newTestRegistry(t)
	s := newTestStore(t)
	pullTwo(t, s, reg)
	one, err := s.Resolve(reg.ref("one:latest"))
	if err != nil || len(one) != 1 {
		t.Fatalf("Resolve = %v, %v", one, err)
	}
	id := one[0].Config
	for _, ref := range []string{reg.ref("one"), id, id[len("sha256:"):][:12], id[len("sha256:"):][:4]} {
		got, err := s.Resolve(ref)
		if err != nil || got[0].Key() != one[0].Key() {
			t.Errorf("Resolve(%q) = %v, %v", ref, got, err)
		}
	}
	if _, err := s.Resolve("0000"); !errors.Is(err, ErrNoImage) {
		t.Errorf("Resolve(unknown ID) = %v", err)
	}
	if _, err := s.Resolve(reg.ref("one:other")); !errors.Is(err, ErrNoImage) {
		t.Errorf("Resolve(other tag) = %v", err)
	}
}

func TestStoreKeyAndFamiliarName(t *testing.T) {
	for in, want := range map[string]string{
		"alpine":                           "docker.io/library/alpine:latest",
		"alpine:3.20":                      "docker.io/library/alpine:3.20",
		"docker.io/library/alpine":         "docker.io/library/alpine:latest",
		"index.docker.io/user/app:v1":      "docker.io/user/app:v1",
		"127.0.0.1:5000/x/y:t":             "127.0.0.1:5000/x/y:t",
		"ghcr.io/o/r@sha256:" + hex64('a'): "ghcr.io/o/r@sha256:" + hex64('a'),
	} {
		got, err := storeKey(in)
		if err != nil || got != want {
			t.Errorf("storeKey(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"docker.io/library/alpine": "alpine", "docker.io/user/app": "user/app", "127.0.0.1:5000/x": "127.0.0.1:5000/x",
	} {
		if got := FamiliarName(in); got != want {
			t.Errorf("FamiliarName(%q) = %q, want %q", in, got, want)
		}
	}
}

func hex64(c byte) string { return string(slices.Repeat([]byte{c}, 64)) }

func TestDefaultRoot(t *testing.T) {
	t.Setenv(RootEnv, "/custom")
	if r, _ := DefaultRoot(); r != "/custom" {
		t.Errorf("with %s: %q", RootEnv, r)
	}
	t.Setenv(RootEnv, "")
	r, err := DefaultRoot()
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 && r != "/var/lib/unionfs" {
		t.Errorf("as root: %q", r)
	}
}
