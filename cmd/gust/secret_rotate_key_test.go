package main

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gust-run/gust/internal/store"
)

// newDataDir is a data directory whose database holds the secret api (K=value).
func newDataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenSQLite(filepath.Join(dir, "gust.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutSecret(context.Background(), "ws-default", "api", map[string]string{"K": "value"}, false); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkOpens fails unless the data directory's database opens with its key file and reads the
// secret api, and no rotation file is left.
func checkOpens(t *testing.T, dir string) {
	t.Helper()
	st, err := store.OpenSQLite(filepath.Join(dir, "gust.db"), store.WithKeyFile(store.KeyPath(dir)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	}()
	if sec, err := st.GetSecret(context.Background(), "ws-default", "api"); err != nil || sec.Env["K"] != "value" {
		t.Fatalf("after the rotation: %v, %v", sec.Env, err)
	}
	for _, suffix := range []string{".new", ".old"} {
		if _, err := os.Stat(store.KeyPath(dir) + suffix); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("secret.key%s is left: %v", suffix, err)
		}
	}
	if fi, err := os.Stat(store.KeyPath(dir)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secret.key: %v, %v", fi, err)
	}
}

func readKey(t *testing.T, path string) store.SecretKey {
	t.Helper()
	k, err := store.ReadSecretKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRotateSecretKeyCommand(t *testing.T) {
	dir := newDataDir(t)
	old := readKey(t, store.KeyPath(dir))
	n, err := rotateSecretKey(context.Background(), dir)
	if err != nil || n != 1 {
		t.Fatalf("rotateSecretKey = %d, %v", n, err)
	}
	if readKey(t, store.KeyPath(dir)) == old {
		t.Fatal("the key file did not change")
	}
	checkOpens(t, dir)
	if _, err := store.OpenSQLite(filepath.Join(dir, "gust.db"), store.WithSecretKey(old)); !errors.Is(err, store.ErrWrongSecretKey) {
		t.Fatalf("the old key still opens the database: %v", err)
	}
}

// An interrupted rotation is finished if it committed, dropped if it did not.
func TestRotateSecretKeyInterrupted(t *testing.T) {
	for _, committed := range []bool{true, false} {
		dir := newDataDir(t)
		keyPath := store.KeyPath(dir)
		cur := readKey(t, keyPath)
		next, err := store.NewSecretKey()
		if err != nil {
			t.Fatal(err)
		}
		if committed {
			st, err := store.OpenSQLite(filepath.Join(dir, "gust.db"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.RotateSecretKey(context.Background(), next); err != nil {
				t.Fatal(err)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if err := errors.Join(store.WriteSecretKey(keyPath+".old", cur, true), store.WriteSecretKey(keyPath+".new", next, true)); err != nil {
			t.Fatal(err)
		}
		st, err := openStore(dir)
		if committed != errors.Is(err, store.ErrWrongSecretKey) || committed && !strings.Contains(err.Error(), "run it again") {
			t.Fatalf("committed %v: the server's open says %v", committed, err)
		}
		if err == nil {
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			releaseDataDir(t)
		}
		if _, err := rotateSecretKey(context.Background(), dir); err != nil {
			t.Fatalf("committed %v: %v", committed, err)
		}
		checkOpens(t, dir)
	}
}

// releaseDataDir lets go of the lock openStore took.
func releaseDataDir(t *testing.T) {
	t.Helper()
	if dataDirLock != nil {
		if err := dataDirLock.Close(); err != nil {
			t.Fatal(err)
		}
		dataDirLock = nil
	}
}

// rotate-key refuses to run beside a server on the same directory, and a server waits for it.
func TestRotateSecretKeyRefusedWhileServing(t *testing.T) {
	dir := newDataDir(t)
	st, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	err = runSecretRotateKey(context.Background(), []string{"--data-dir", dir})
	if err == nil || !strings.Contains(err.Error(), "a gust server is running") {
		t.Fatalf("rotate-key beside a server: %v", err)
	}
	releaseDataDir(t)
	lock, err := lockDataDir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := lock.Close(); err != nil {
			t.Error(err)
		}
	}()
	if _, err := openStore(dir); err == nil || !strings.Contains(err.Error(), "rotate-key` is running") {
		t.Fatalf("a server during a rotation: %v", err)
	}
}
