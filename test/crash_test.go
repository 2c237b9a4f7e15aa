package test

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startForeground runs `unionfs mount -f` as a child of the test, so the
// test holds the server's process and can kill it. It returns once the
// server logs "mounted" (the mount is in the mount table a little earlier,
// before the server has answered the kernel's INIT).
func startForeground(t *testing.T, mnt string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(requireBinary(t), append(append([]string{"mount", "-f"}, args...), mnt)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start server: %v", err)
	}
	mounted := make(chan struct{})
	var log strings.Builder
	var logMu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logMu.Lock()
			log.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if strings.Contains(sc.Text(), "mounted "+mnt) && !strings.Contains(sc.Text(), "unmounted") {
				close(mounted)
				break
			}
		}
		io.Copy(io.Discard, stderr) // keep the server from blocking on its log
	}()
	select {
	case <-mounted:
		return cmd
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("server did not log that %s is mounted; it said:\n%s", mnt, log.String())
	}
	return nil
}

// killServer kills the server with SIGKILL, as a crash would, and detaches
// the dead mount.
func killServer(t *testing.T, cmd *exec.Cmd, mnt string) {
	t.Helper()
	cmd.Process.Signal(unix.SIGKILL)
	cmd.Wait()
	if _, ok := mountedFS(t, mnt); ok {
		if err := forceUnmount(mnt); err != nil {
			t.Fatalf("detach dead mount %s: %v", mnt, err)
		}
	}
}

// pattern returns n deterministic bytes that differ per seed, so that a copy
// holding data from the wrong place is caught.
func pattern(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return fmt.Sprintf("%x", h[:8])
}

// TestCrashDuringCopyUp kills the server with SIGKILL at many points while
// large lower files are being copied up and written, remounts, and checks
// that every file is either exactly the lower file or exactly the finished
// write: never a partial copy. The lower layer must not change.
func TestCrashDuringCopyUp(t *testing.T) {
	requireFUSE(t)
	const files, size = 4, 24 << 20
	lower := t.TempDir()
	want := map[string][2]string{} // name -> {lower sum, sum after append}
	for i := 0; i < files; i++ {
		name := fmt.Sprintf("big%d", i)
		data := pattern(int64(i), size)
		if err := os.WriteFile(filepath.Join(lower, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		want[name] = [2]string{sum(data), sum(append(data, 'x'))}
	}
	before := checksumTree(t, lower)
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 8; round++ {
		upper, mnt := t.TempDir(), t.TempDir()
		cmd := startForeground(t, mnt, "-l", lower, "-u", upper)
		var wg sync.WaitGroup
		for name := range want {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f, err := os.OpenFile(filepath.Join(mnt, name), os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					return // the server may be dead already
				}
				f.Write([]byte{'x'})
				f.Close()
			}()
		}
		// Kill points spread from "before anything started" to "after
		// most copies finished".
		time.Sleep(time.Duration(rng.Intn(250)) * time.Millisecond)
		killServer(t, cmd, mnt)
		wg.Wait()

		mountUnionAt(t, mnt, "-l", lower, "-u", upper)
		for name, sums := range want {
			data, err := os.ReadFile(filepath.Join(mnt, name))
			if err != nil {
				t.Fatalf("round %d: read %s after crash: %v", round, name, err)
			}
			if got := sum(data); got != sums[0] && got != sums[1] {
				t.Errorf("round %d: %s has %d bytes matching neither the lower file nor the finished write", round, name, len(data))
			}
		}
		assertNoLeftovers(t, upper)
		umountUnion(t, mnt)
	}
	assertUnchanged(t, before, lower)
}

// TestCrashDuringDeletes kills the server in the middle of a burst of
// deletions and checks that, after a remount, every file is either deleted
// or intact and the state database opens.
func TestCrashDuringDeletes(t *testing.T) {
	requireFUSE(t)
	lower := t.TempDir()
	const n = 400
	for i := 0; i < n; i++ {
		d := filepath.Join(lower, fmt.Sprintf("d%d", i%10))
		os.MkdirAll(d, 0o755)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d", i)), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := checksumTree(t, lower)
	rng := rand.New(rand.NewSource(2))
	for round := 0; round < 6; round++ {
		upper, mnt := t.TempDir(), t.TempDir()
		cmd := startForeground(t, mnt, "-l", lower, "-u", upper)
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += 4 {
					if err := os.Remove(filepath.Join(mnt, fmt.Sprintf("d%d/f%d", i%10, i))); err != nil {
						return
					}
				}
			}()
		}
		time.Sleep(time.Duration(rng.Intn(150)) * time.Millisecond)
		killServer(t, cmd, mnt)
		wg.Wait()

		mountUnionAt(t, mnt, "-l", lower, "-u", upper)
		deleted := 0
		for i := 0; i < n; i++ {
			data, err := os.ReadFile(filepath.Join(mnt, fmt.Sprintf("d%d/f%d", i%10, i)))
			switch {
			case errors.Is(err, os.ErrNotExist):
				deleted++
			case err != nil:
				t.Fatalf("round %d: read f%d: %v", round, i, err)
			case string(data) != fmt.Sprint(i):
				t.Errorf("round %d: f%d holds %q", round, i, data)
			}
		}
		t.Logf("round %d: %d of %d deleted before the kill", round, deleted, n)
		// The union must still work: deleting the rest succeeds.
		for i := 0; i < 10; i++ {
			if err := os.RemoveAll(filepath.Join(mnt, fmt.Sprintf("d%d", i))); err != nil {
				t.Fatalf("round %d: remove d%d after crash: %v", round, i, err)
			}
		}
		if ents, err := os.ReadDir(mnt); err != nil || len(ents) != 0 {
			t.Errorf("round %d: after removing everything the union lists %v (err %v)", round, ents, err)
		}
		assertNoLeftovers(t, upper)
		umountUnion(t, mnt)
	}
	assertUnchanged(t, before, lower)
}

// assertNoLeftovers checks that the upper holds no marker files and that
// the work directory was emptied by the mount.
func assertNoLeftovers(t *testing.T, upper string) {
	t.Helper()
	filepath.Walk(upper, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(upper, p)
		if strings.HasPrefix(fi.Name(), ".wh.") || fi.Mode()&os.ModeCharDevice != 0 {
			t.Errorf("upper holds a marker file %s", rel)
		}
		return nil
	})
	ents, err := os.ReadDir(filepath.Join(upper, ".unionfs", "work"))
	if err != nil {
		t.Errorf("work dir: %v", err)
	}
	for _, e := range ents {
		t.Errorf("work dir holds %s after a mount cleaned it", e.Name())
	}
}

// TestCrashAfterRemovingDirs removes lower directories, half of them
// chmod'ed first, and kills the server right after the last removal
// returns. A directory whose upper copy differs from its lower one (the
// chmod) is gone after a remount: its whiteout was on disk before the
// upper copy went, or a crash would bring it back with its old mode and
// the files whose deletions were still in memory. One that rm -r only
// copied up to hold its times may come back, as a lower-only directory
// may, but then as the lower has it. A renamed one (its upper copy holds
// the redirect) is gone at both names.
func TestCrashAfterRemovingDirs(t *testing.T) {
	requireFUSE(t)
	lower := t.TempDir()
	const dirs, files = 10, 3
	for i := range dirs {
		for j := range files {
			p := filepath.Join(lower, fmt.Sprintf("d%d/f%d", i, j))
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := checksumTree(t, lower)
	for round := range 3 {
		upper, mnt := t.TempDir(), t.TempDir()
		cmd := startForeground(t, mnt, "-l", lower, "-u", upper)
		for i := 0; i < dirs; i += 2 {
			if err := os.Chmod(filepath.Join(mnt, fmt.Sprintf("d%d", i)), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		// A renamed directory's upper copy holds its redirect: not just
		// times, even when a removal in it copied it up first.
		if err := os.Remove(filepath.Join(mnt, "d1", "f0")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(mnt, "d1"), filepath.Join(mnt, "e1")); err != nil {
			t.Fatal(err)
		}
		for i := range dirs {
			name := fmt.Sprintf("d%d", i)
			if i == 1 {
				name = "e1"
			}
			if err := os.RemoveAll(filepath.Join(mnt, name)); err != nil {
				t.Fatal(err)
			}
		}
		killServer(t, cmd, mnt)

		mountUnionAt(t, mnt, "-l", lower, "-u", upper)
		if _, err := os.Lstat(filepath.Join(mnt, "e1")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("round %d: e1 (d1 renamed, then removed before the crash): lstat %v, want ENOENT", round, err)
		}
		back := 0
		for i := range dirs {
			d := filepath.Join(mnt, fmt.Sprintf("d%d", i))
			fi, err := os.Lstat(d)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				t.Fatalf("round %d: lstat d%d: %v", round, i, err)
			}
			if i%2 == 0 || i == 1 {
				t.Errorf("round %d: d%d (chmod'ed, then removed before the crash) is back, mode %v", round, i, fi.Mode())
				continue
			}
			back++
			if fi.Mode().Perm() != 0o755 {
				t.Errorf("round %d: d%d came back with mode %v, want the lower's 0755", round, i, fi.Mode().Perm())
			}
			for j := range files {
				p := filepath.Join(d, fmt.Sprintf("f%d", j))
				data, err := os.ReadFile(p)
				if err == nil && string(data) != filepath.Join(lower, fmt.Sprintf("d%d/f%d", i, j)) {
					t.Errorf("round %d: %s holds %q", round, p, data)
				} else if err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Errorf("round %d: read %s: %v", round, p, err)
				}
			}
		}
		t.Logf("round %d: %d of %d times-only directories back after the crash", round, back, dirs/2-1)
		assertNoLeftovers(t, upper)
		umountUnion(t, mnt)
	}
	assertUnchanged(t, before, lower)
}
