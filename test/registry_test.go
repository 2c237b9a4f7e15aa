package test

// A real registry for the image tests: Debian's docker-registry (the CNCF
// distribution registry) started as a subprocess on 127.0.0.1 with a
// config file and storage directory of the test's own, optionally behind
// htpasswd basic auth. Images are built offline with imgpull/imgtest and
// pushed with go-containerregistry.

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/unionfs/unionfs/imgpull/imgtest"
)

// registryBin is where Debian's docker-registry package installs the server.
const registryBin = "/usr/bin/docker-registry"

// testRegistry is one running registry server.
type testRegistry struct {
	host    string // 127.0.0.1:PORT
	storage string // its filesystem storage root
	user    string // basic auth credentials, if any
	pass    string
	log     string
}

// requireRegistry returns the registry binary, or skips (fails in CI).
func requireRegistry(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(registryBin); err != nil {
		skipOrFail(t, "%s not found (apt-get install docker-registry): %v", registryBin, err)
	}
	return registryBin
}

// startRegistry starts a registry for this test and stops it when the test
// ends. With auth, it requires basic auth as user "tester".
func startRegistry(t *testing.T, auth bool) *testRegistry {
	t.Helper()
	bin := requireRegistry(t)
	dir := t.TempDir()
	r := &testRegistry{storage: filepath.Join(dir, "storage"), log: filepath.Join(dir, "registry.log")}
	var authConfig string
	if auth {
		r.user, r.pass = "tester", "pa55-"+strconv.FormatInt(time.Now().UnixNano(), 36)
		hash, err := bcrypt.GenerateFromPassword([]byte(r.pass), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(r.user+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		authConfig = fmt.Sprintf("auth:\n  htpasswd:\n    realm: unionfs-test\n    path: %s\n", htpasswd)
	}
	// A free port can be taken between probing and binding: try a few.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		r.host = "127.0.0.1:" + strconv.Itoa(port)
		cfg := filepath.Join(dir, "config.yml")
		content := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: unionfs-test-secret
%s`, r.storage, r.host, authConfig)
		if err := os.WriteFile(cfg, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if lastErr = r.start(t, bin, cfg); lastErr == nil {
			return r
		}
	}
	t.Fatalf("start %s: %v", bin, lastErr)
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs the server and waits until /v2/ answers.
func (r *testRegistry) start(t *testing.T, bin, cfg string) error {
	logf, err := os.Create(r.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(r.log)
			return fmt.Errorf("registry exited: %v\n%s", err, log)
		default:
		}
		resp, err := client.Get("http://" + r.host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				t.Cleanup(stop)
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	log, _ := os.ReadFile(r.log)
	return fmt.Errorf("registry on %s did not answer within 15s\n%s", r.host, log)
}

// ref is a reference to repo (NAME[:TAG]) on this registry.
func (r *testRegistry) ref(repo string) string { return r.host + "/" + repo }

func (r *testRegistry) remoteOptions() []remote.Option {
	if r.user == "" {
		return nil
	}
	return []remote.Option{remote.WithAuth(&authn.Basic{Username: r.user, Password: r.pass})}
}

// push pushes an image built offline.
func (r *testRegistry) push(t *testing.T, ref string, img imgtest.Image) {
	t.Helper()
	if err := imgtest.Push(ref, img, r.remoteOptions()...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

// pushIndex pushes a multi-platform index of imgs.
func (r *testRegistry) pushIndex(t *testing.T, ref string, oci bool, imgs ...imgtest.Image) string {
	t.Helper()
	d, err := imgtest.PushIndex(ref, oci, imgs, r.remoteOptions()...)
	if err != nil {
		t.Fatalf("push index %s: %v", ref, err)
	}
	return d.String()
}

// tamperBlob rewrites a stored blob in place with other bytes of the same
// length, behind the registry's back: it serves them under the old digest.
func (r *testRegistry) tamperBlob(t *testing.T, digest string) {
	t.Helper()
	hex := strings.TrimPrefix(digest, "sha256:")
	p := filepath.Join(r.storage, "docker/registry/v2/blobs/sha256", hex[:2], hex, "data")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("tamper: %v", err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// dockerConfig writes a docker config.json with this registry's
// credentials into a new directory and returns it, for DOCKER_CONFIG.
func (r *testRegistry) dockerConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(r.user + ":" + r.pass))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, r.host, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRegistryHarness(t *testing.T) {
	r := startRegistry(t, false)
	img := imgtest.Image{Layers: []imgtest.Layer{imgtest.Gzip(imgtest.Tar(imgtest.File("f", "x")))}}
	r.push(t, r.ref("harness:1"), img)
	resp, err := http.Get("http://" + r.host + "/v2/harness/tags/list")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("tags/list: %s", resp.Status)
	}
	a := startRegistry(t, true)
	resp, err = http.Get("http://" + a.host + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("auth registry answers %s without credentials", resp.Status)
	}
	a.push(t, a.ref("harness:1"), img)
	if err := imgtest.Push(a.ref("harness:2"), img); err == nil {
		t.Fatal("push without credentials succeeded")
	}
}
