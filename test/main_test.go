// Package test holds the end-to-end tests: they build the real unionfs
// binary, mount it through /dev/fuse and check the result with plain
// syscalls, using kernel overlayfs as the reference (see oracle_test.go).
package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// unionfsBin is the path of the unionfs binary built by TestMain. It is
// empty only when the build failed under UNIONFS_SKIP_BUILD=1; mountUnion
// and runUnionfs then fail the test that needs it.
var unionfsBin string

// skipBuildEnv lets the harness self-tests run while cmd/unionfs does not
// compile yet. Never set it in CI: a broken build must stay red.
const skipBuildEnv = "UNIONFS_SKIP_BUILD"

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// runMain is TestMain's body, split out so its defers run before os.Exit.
func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "unionfs-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "test: make build dir: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)

	bin := filepath.Join(dir, "unionfs")
	if out, err := buildUnionfs(bin); err != nil {
		if os.Getenv(skipBuildEnv) != "1" {
			fmt.Fprintf(os.Stderr, "test: go build ../cmd/unionfs: %v\n%s", err, out)
			fmt.Fprintf(os.Stderr, "test: set %s=1 to run only the tests that need no binary\n", skipBuildEnv)
			return 1
		}
		fmt.Fprintf(os.Stderr, "test: %s=1: go build ../cmd/unionfs failed, tests that mount unionfs will fail:\n%s", skipBuildEnv, out)
	} else {
		unionfsBin = bin
	}
	return m.Run()
}

// buildUnionfs builds the binary once for the whole run. It uses the "go"
// on PATH: go test puts its own GOROOT/bin first, so it is the same
// toolchain that builds the tests. A bare "unionfs" from PATH would be
// Debian's unrelated unionfs-fuse.
func buildUnionfs(out string) ([]byte, error) {
	args := []string{"build", "-o", out}
	// UNIONFS_RACE=1 builds the server with the race detector; set
	// GORACE=log_path=... to collect its reports (the server's stderr is
	// /dev/null when it runs in the background).
	if os.Getenv("UNIONFS_RACE") != "" {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "../cmd/unionfs")...)
	return cmd.CombinedOutput()
}
