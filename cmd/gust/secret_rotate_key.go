package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/gust-run/gust/internal/store"
)

func init() {
	register(&command{name: "secret rotate-key", summary: "seal every stored secret again under a new key (while gust is stopped)", run: runSecretRotateKey})
}

const rotateKeyAbout = `Secrets are stored encrypted (AES-256-GCM) with the key in DATA_DIR/secret.key, which gust
makes at first start (mode 0600, readable by the user gust runs as only). This command makes a
new key, seals every stored secret (and every function's inline secret) again under it in one
transaction, and then replaces secret.key. Run it on the server's machine, as the user gust
runs as, while gust is stopped: it refuses to run while a gust server uses DATA_DIR.

While it runs, the old key is kept as secret.key.old and the new one as secret.key.new; both
are gone when it is done. If it is interrupted, run it again: it first finishes (or undoes) the
interrupted rotation. Keep a copy of secret.key with your backups of gust.db: without it the
secrets cannot be read.`

func runSecretRotateKey(ctx context.Context, args []string) (retErr error) {
	fs := cliFlags("secret rotate-key", "[--data-dir DIR]", rotateKeyAbout)
	dataDir := fs.String("data-dir", envOr("GUST_DATA_DIR", "/var/lib/gust"), "the gust server's data directory")
	pos, _, err := parseArgs(fs, args, -1)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("secret rotate-key takes no arguments, got %q (the directory goes in --data-dir)", pos)
	}
	lock, err := lockDataDir(*dataDir, true)
	if err != nil {
		return err
	}
	defer func() {
		if err := lock.Close(); err != nil && retErr == nil {
			retErr = fmt.Errorf("unlock %s: %w", *dataDir, err)
		}
	}()
	n, err := rotateSecretKey(ctx, *dataDir)
	if err != nil {
		return err
	}
	fmt.Printf("new secret key in %s; %d records sealed again under it\n", store.KeyPath(*dataDir), n)
	return nil
}

// rotateSecretKey rotates the secret key of the data directory dir; see rotateKeyAbout. The
// new key is saved as secret.key.new before the database changes, so that the database always
// opens with one of the files.
func rotateSecretKey(ctx context.Context, dir string) (int, error) {
	dbPath, keyPath := filepath.Join(dir, "gust.db"), store.KeyPath(dir)
	if _, err := os.Stat(dbPath); err != nil {
		return 0, fmt.Errorf("no gust database in %s (%w): pass the server's --data-dir", dir, err)
	}
	if err := finishRotation(dbPath, keyPath); err != nil {
		return 0, err
	}
	cur, err := store.ReadSecretKey(keyPath)
	if err != nil {
		return 0, err
	}
	next, err := store.NewSecretKey()
	if err != nil {
		return 0, err
	}
	if err := store.WriteSecretKey(keyPath+".old", cur, true); err != nil {
		return 0, err
	}
	if err := store.WriteSecretKey(keyPath+".new", next, true); err != nil {
		return 0, errors.Join(err, discardRotation(keyPath))
	}
	st, err := store.OpenSQLite(dbPath, store.WithSecretKey(cur))
	if err != nil {
		return 0, errors.Join(err, discardRotation(keyPath))
	}
	n, err := st.RotateSecretKey(ctx, next)
	if err != nil {
		return 0, errors.Join(err, st.Close(), discardRotation(keyPath))
	}
	// Committed: the database opens only with next now, whatever Close says.
	cerr := st.Close()
	if err := adoptNewKey(keyPath); err != nil {
		return n, errors.Join(err, cerr)
	}
	return n, cerr
}

// finishRotation settles a rotation that was interrupted: if the database opens with
// secret.key.new, the rotation committed and that key becomes secret.key; otherwise the new
// key is dropped.
func finishRotation(dbPath, keyPath string) error {
	next, err := store.ReadSecretKey(keyPath + ".new")
	if errors.Is(err, fs.ErrNotExist) {
		return removeIfExists(keyPath + ".old") // left by a rotation that had finished
	}
	if err != nil {
		return err
	}
	st, err := store.OpenSQLite(dbPath, store.WithSecretKey(next))
	if errors.Is(err, store.ErrWrongSecretKey) {
		fmt.Fprintln(os.Stderr, "gust: an interrupted key rotation had not committed: dropping its new key")
		return discardRotation(keyPath)
	}
	if err != nil {
		return err
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("close %s: %w", dbPath, err)
	}
	fmt.Fprintln(os.Stderr, "gust: an interrupted key rotation had committed: finishing it")
	return adoptNewKey(keyPath)
}

// adoptNewKey makes secret.key.new the key, then drops secret.key.old.
func adoptNewKey(keyPath string) error {
	if err := os.Rename(keyPath+".new", keyPath); err != nil {
		return fmt.Errorf("the secrets are sealed with the key in %s.new, but it could not replace %s: %w; rename it by hand before starting gust", keyPath, keyPath, err)
	}
	d, err := os.Open(filepath.Dir(keyPath))
	if err != nil {
		return fmt.Errorf("sync %s: %w", filepath.Dir(keyPath), err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", filepath.Dir(keyPath), err)
	}
	return removeIfExists(keyPath + ".old")
}

// discardRotation removes the files of a rotation that did not commit.
func discardRotation(keyPath string) error {
	return errors.Join(removeIfExists(keyPath+".new"), removeIfExists(keyPath+".old"))
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// lockDataDir locks the data directory dir: shared for a server (several may start on one
// directory, as before), exclusive for `gust secret rotate-key`, which must not run beside a
// server. The lock lasts until the returned file is closed (or the process ends).
func lockDataDir(dir string, exclusive bool) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock the data directory: %w", err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	err = syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
	if err == nil {
		return f, nil
	}
	if cerr := f.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	switch {
	case !errors.Is(err, syscall.EWOULDBLOCK):
		return nil, fmt.Errorf("lock the data directory %s: %w", dir, err)
	case exclusive:
		return nil, fmt.Errorf("a gust server is running on %s: stop it first (`gust secret rotate-key` runs while gust is stopped)", dir)
	default:
		return nil, fmt.Errorf("`gust secret rotate-key` is running on %s: start gust when it is done", dir)
	}
}
