package layerdb

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestOpenCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "upper", ".unionfs")
	path := filepath.Join(dir, "state.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if db.Path() != path {
		t.Errorf("Path() = %q, want %q", db.Path(), path)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("state dir mode %o, want 700", perm)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "state.db" {
		t.Errorf("state dir holds %v, want only state.db (no temporary files)", ents)
	}
	// The format is what doc.go says it is.
	bdb, err := bolt.Open(path, 0, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	err = bdb.View(func(tx *bolt.Tx) error {
		root := tx.Bucket([]byte("unionfs.v1"))
		if root == nil {
			return errors.New("no unionfs.v1 bucket")
		}
		if v := root.Get([]byte("version")); !bytes.Equal(v, []byte{0, 0, 0, 1}) {
			return fmt.Errorf("version = %x", v)
		}
		for _, b := range []string{"paths", "origins", "index"} {
			if root.Bucket([]byte(b)) == nil {
				return fmt.Errorf("no %s bucket", b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	recs := map[string]Record{"": opq, "a": redir("b/c"), "a/b": wh, "a/bc": {Opaque: true, Redirect: "x"}}
	origins := map[uint64]uint64{5: 500, 6: 600}
	index := map[uint64]string{500: ".unionfs/index/1f4"}

	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	seed(t, db, recs)
	if err := db.Apply(OriginChange(5, 500), OriginChange(6, 600), IndexChange(500, index[500])); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	for _, ro := range []bool{false, true} {
		db, err := Open(path, Options{ReadOnly: ro})
		if err != nil {
			t.Fatalf("reopen (ReadOnly=%v): %v", ro, err)
		}
		gotRecs, err1 := db.Records()
		gotOrigins, err2 := db.Origins()
		gotIndex, err3 := db.Index()
		if err := errors.Join(err1, err2, err3, db.Close()); err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(gotRecs, recs) || !maps.Equal(gotOrigins, origins) || !maps.Equal(gotIndex, index) {
			t.Errorf("ReadOnly=%v: got %v %v %v, want %v %v %v", ro, gotRecs, gotOrigins, gotIndex, recs, origins, index)
		}
	}
}

// Two writers on one file would corrupt it; the second must fail fast, not hang.
// flock locks are per open file description, so this conflicts within one process.
func TestLockedInProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := mustOpen(t, path, Options{})

	for _, ro := range []bool{false, true} {
		start := time.Now()
		_, err := Open(path, Options{ReadOnly: ro, Timeout: 100 * time.Millisecond})
		checkLocked(t, err, path)
		if d := time.Since(start); d > time.Second {
			t.Errorf("ReadOnly=%v: Open took %v with a 100ms timeout", ro, d)
		}
	}

	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Readers share the lock; once they are all gone a writer gets in.
	r1 := mustOpen(t, path, Options{ReadOnly: true, Timeout: 100 * time.Millisecond})
	r2 := mustOpen(t, path, Options{ReadOnly: true, Timeout: 100 * time.Millisecond})
	_, err := Open(path, Options{Timeout: 100 * time.Millisecond})
	checkLocked(t, err, path)
	if err := errors.Join(r1.Close(), r2.Close()); err != nil {
		t.Fatal(err)
	}
	mustOpen(t, path, Options{Timeout: 100 * time.Millisecond})
}

// The real case: a second unionfs process mounting the same upper.
func TestLockedAcrossProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	mustOpen(t, path, Options{}).Close()

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "LAYERDB_HOLD_OPEN="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close() // tells the helper to exit
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper: %v", err)
		}
	})
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		t.Fatalf("helper: %q, %v", line, err)
	}

	_, err = Open(path, Options{Timeout: 200 * time.Millisecond})
	checkLocked(t, err, path)
}

// TestMain doubles as the lock holder that TestLockedAcrossProcesses runs in
// a subprocess: it opens the database, says "ready", and holds it until stdin closes.
func TestMain(m *testing.M) {
	path := os.Getenv("LAYERDB_HOLD_OPEN")
	if path == "" {
		os.Exit(m.Run())
	}
	db, err := Open(path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	if err := db.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func checkLocked(t *testing.T, err error, path string) {
	t.Helper()
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: got %v, want ErrLocked", err)
	}
	if want := "open state database " + path + ": database is in use by another process"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func mustOpen(t *testing.T, path string, opts Options) *DB {
	t.Helper()
	db, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// bigDB writes a valid database spanning many pages and returns its bytes and
// bbolt high-water mark.
func bigDB(t *testing.T) (data []byte, highWater int64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "big.db")
	db, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	var cs []Change
	for i := range 2000 {
		cs = append(cs, PutChange(fmt.Sprintf("dir%03d/file%d", i%100, i), redir(strings.Repeat("r", 50))),
			OriginChange(uint64(i), uint64(i)+1<<32))
	}
	if err := db.Apply(cs...); err != nil {
		t.Fatal(err)
	}
	err = db.bdb.View(func(tx *bolt.Tx) error { highWater = tx.Size(); return nil })
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
	if data, err = os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	return data, highWater
}

// rawBolt creates a bbolt file at path and runs fn in one update on it.
func rawBolt(fn func(tx *bolt.Tx) error) func(t *testing.T, path string) {
	return func(t *testing.T, path string) {
		t.Helper()
		bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := errors.Join(bdb.Update(fn), bdb.Close()); err != nil {
			t.Fatal(err)
		}
	}
}

// v1Layout builds our buckets, then lets edit break them.
func v1Layout(edit func(root *bolt.Bucket) error) func(t *testing.T, path string) {
	return rawBolt(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucket(rootBucket)
		if err != nil {
			return err
		}
		for _, b := range [][]byte{pathsBucket, originsBucket, indexBucket} {
			if _, err := root.CreateBucket(b); err != nil {
				return err
			}
		}
		if err := root.Put(versionKey, []byte{0, 0, 0, 1}); err != nil {
			return err
		}
		return edit(root)
	})
}

func writeBytes(b []byte) func(t *testing.T, path string) {
	return func(t *testing.T, path string) {
		t.Helper()
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	big, hw := bigDB(t)
	if hw < 16*4096 {
		t.Fatalf("fixture too small: high water %d", hw)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, len(big))
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	// A bbolt meta page is 4096 bytes; keep the valid first page, garbage after.
	halfGood := append(bytes.Clone(big[:4096]), garbage[:len(big)-4096]...)

	tests := []struct {
		name  string
		write func(t *testing.T, path string)
		want  error
	}{
		{"zero length", writeBytes(nil), ErrCorrupt},
		{"garbage", writeBytes(garbage), ErrCorrupt},
		{"short garbage", writeBytes(garbage[:100]), ErrCorrupt},
		{"text file", writeBytes([]byte("hello\n")), ErrCorrupt},
		{"first page valid then garbage", writeBytes(halfGood), ErrCorrupt},
		{"truncated to 100 bytes", writeBytes(big[:100]), ErrCorrupt},
		{"truncated to 1 page", writeBytes(big[:4096]), ErrCorrupt},
		{"truncated to 2 pages", writeBytes(big[:2*4096]), ErrCorrupt},
		{"truncated to 3 pages", writeBytes(big[:3*4096]), ErrCorrupt},
		{"truncated to half", writeBytes(big[:hw/2]), ErrCorrupt},
		{"truncated by a page", writeBytes(big[:hw-4096]), ErrCorrupt},
		{"bbolt file without our bucket", rawBolt(func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket([]byte("something-else"))
			return err
		}), ErrCorrupt},
		{"empty bbolt file", rawBolt(func(*bolt.Tx) error { return nil }), ErrCorrupt},
		{"no version", v1Layout(func(r *bolt.Bucket) error { return r.Delete(versionKey) }), ErrCorrupt},
		{"version 0", v1Layout(func(r *bolt.Bucket) error { return r.Put(versionKey, []byte{0, 0, 0, 0}) }), ErrCorrupt},
		{"short version", v1Layout(func(r *bolt.Bucket) error { return r.Put(versionKey, []byte{1}) }), ErrCorrupt},
		{"no paths bucket", v1Layout(func(r *bolt.Bucket) error { return r.DeleteBucket(pathsBucket) }), ErrCorrupt},
		{"no index bucket", v1Layout(func(r *bolt.Bucket) error { return r.DeleteBucket(indexBucket) }), ErrCorrupt},
		{"version 2", v1Layout(func(r *bolt.Bucket) error { return r.Put(versionKey, []byte{0, 0, 0, 2}) }), ErrVersion},
		{"newer root bucket", rawBolt(func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket([]byte("unionfs.v2"))
			return err
		}), ErrVersion},
	}
	for _, tt := range tests {
		for _, ro := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/ReadOnly=%v", tt.name, ro), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "state.db")
				tt.write(t, path)
				before, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				db, err := Open(path, Options{ReadOnly: ro, Timeout: 100 * time.Millisecond})
				if err == nil {
					db.Close()
					t.Fatal("Open succeeded")
				}
				if !errors.Is(err, tt.want) {
					t.Fatalf("got %v, want %v", err, tt.want)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
				// A rejected file is left exactly as it was, for the user to inspect.
				if after, err := os.ReadFile(path); err != nil || !bytes.Equal(before, after) {
					t.Errorf("Open modified the rejected file (err %v)", err)
				}
				// And its lock was released.
				if db, err := Open(path, Options{ReadOnly: ro, Timeout: 100 * time.Millisecond}); errors.Is(err, ErrLocked) {
					t.Errorf("lock still held after a failed Open: %v", err)
				} else if err == nil {
					db.Close()
				}
			})
		}
	}
}

// Regression: when bbolt.Open itself panicked (a writable open faults reading
// the freelist of a truncated file), closing the file did not release the
// flock, because bbolt's leaked memory map keeps the open file description
// alive; every later Open of the file then failed with ErrLocked.
func TestPanicInBoltOpenReleasesLock(t *testing.T) {
	big, _ := bigDB(t)
	path := filepath.Join(t.TempDir(), "state.db")
	writeBytes(big[:3*4096])(t, path)
	for range 2 {
		_, err := openBoltFile(path, Options{Timeout: 100 * time.Millisecond}, stateFormat.validate)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("got %v, want ErrCorrupt", err)
		}
	}
}

// Records are validated when read, not only at Open.
func TestCorruptValues(t *testing.T) {
	tests := []struct {
		name string
		edit func(root *bolt.Bucket) error
		read func(db *DB) error
	}{
		{"unknown record flag", putIn(pathsBucket, []byte("/a"), []byte{0x80}), getA},
		{"unknown record flag in Records", putIn(pathsBucket, []byte("/a"), []byte{0x04}), records},
		{"key without slash", putIn(pathsBucket, []byte("a"), []byte{1}), records},
		{"key with bad path", putIn(pathsBucket, []byte("/a/../b"), []byte{1}), records},
		{"redirect escapes", putIn(pathsBucket, []byte("/a"), []byte("\x02../x")), getA},
		{"short origin", putIn(originsBucket, []byte{1, 2, 3}, make([]byte, 8)), func(db *DB) error {
			_, err := db.Origins()
			return err
		}},
		{"empty index path", putIn(indexBucket, make([]byte, 8), []byte{}), func(db *DB) error {
			_, err := db.IndexGet(0)
			return err
		}},
		{"absolute index path", putIn(indexBucket, make([]byte, 8), []byte("/etc/passwd")), func(db *DB) error {
			_, err := db.Index()
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			v1Layout(tt.edit)(t, path)
			db := mustOpen(t, path, Options{ReadOnly: true})
			err := tt.read(db)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Errorf("got %v, want ErrCorrupt naming %s", err, path)
			}
		})
	}
}

func putIn(bucket, k, v []byte) func(root *bolt.Bucket) error {
	return func(root *bolt.Bucket) error { return root.Bucket(bucket).Put(k, v) }
}

func getA(db *DB) error { _, err := db.Get("a"); return err }

func records(db *DB) error { _, err := db.Records(); return err }

func TestReadOnlyMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), ".unionfs")
	path := filepath.Join(dir, "state.db")
	_, err := Open(path, Options{ReadOnly: true})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v, want fs.ErrNotExist naming the file", err)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadOnly Open created %s (%v)", dir, err)
	}
}

// A read-only lower layer may be on read-only media: ReadOnly must not write.
func TestReadOnlyNeverWrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), ".unionfs")
	path := filepath.Join(dir, "state.db")
	db := mustOpen(t, path, Options{})
	seed(t, db, map[string]Record{"a": wh, "b": redir("c")})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fiBefore, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// Root ignores these modes; the byte and mtime comparison below still holds.
	if err := errors.Join(os.Chmod(path, 0o444), os.Chmod(dir, 0o555)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o755) })

	ro := mustOpen(t, path, Options{ReadOnly: true})
	if _, err := ro.Records(); err != nil {
		t.Fatal(err)
	}
	if err := ro.Put("x", wh); err == nil {
		t.Error("Put on a ReadOnly database succeeded")
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fiAfter, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) || !fiAfter.ModTime().Equal(fiBefore.ModTime()) {
		t.Error("ReadOnly open modified the file")
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 {
		t.Errorf("state dir after ReadOnly open: %v, %v", ents, err)
	}
}

func TestTimeoutDefault(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	mustOpen(t, path, Options{})
	start := time.Now()
	_, err := Open(path, Options{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("got %v, want ErrLocked", err)
	}
	if d := time.Since(start); d < time.Second || d > 5*time.Second {
		t.Errorf("default timeout took %v, want about 2s", d)
	}
}
